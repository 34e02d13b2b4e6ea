"""The ``family: effect`` profiles: an :class:`EffectConfig` model section and an
:class:`EffectTrainConfig` train section, loaded and validated like the autoencoder's."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tildekit.models.config import (
    PROFILE_DIR,
    ProfileError,
    _build,
    _parse_override,
    available_profiles,
    profile_family,
)

FAMILY = "effect"
CORES = ("tcn", "gru")
CONDITIONINGS = ("film", "concat")


@dataclass(frozen=True)
class EffectConfig:
    """Architecture of a knob-conditioned effect model (see docs/effects.md)."""

    sample_rate: int = 48000
    core: str = "tcn"  # tcn | gru
    conditioning: str = "film"  # film: knobs -> MLP -> per-channel gain and shift; concat: knobs as inputs
    channels: int = 16  # TCN channels, or GRU hidden size
    kernel_size: int = 5  # TCN only
    dilations: list[int] = field(default_factory=lambda: [1, 4, 16, 64, 256, 1024])  # TCN only
    film_hidden: int = 32  # width of the knob MLP (FiLM)
    smoothing_ms: float = 20.0  # time constant of the knob smoother; 0 jumps (clicks)

    @property
    def receptive_field(self) -> int:
        """Samples of input one output sample depends on (the GRU's is unbounded: 0)."""
        if self.core != "tcn":
            return 0
        return 1 + (self.kernel_size - 1) * sum(self.dilations)

    def validate(self, origin: str) -> None:
        def bad(name: str, why: str) -> ProfileError:
            return ProfileError(f"{origin}: model.{name} {why}")

        for name in ("sample_rate", "channels", "film_hidden"):
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.core not in CORES:
            raise bad("core", f"must be one of {', '.join(CORES)}, got {self.core!r}")
        if self.conditioning not in CONDITIONINGS:
            raise bad("conditioning", f"must be one of {', '.join(CONDITIONINGS)}, got {self.conditioning!r}")
        if self.kernel_size < 2:
            raise bad("kernel_size", f"must be >= 2, got {self.kernel_size}")
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise bad("dilations", f"must be a non-empty list of integers >= 1, got {self.dilations}")
        if not (math.isfinite(self.smoothing_ms) and self.smoothing_ms >= 0):
            raise bad("smoothing_ms", f"must be a number >= 0, got {self.smoothing_ms}")


@dataclass(frozen=True)
class EffectTrainConfig:
    batch_size: int = 8
    window: int = 8192  # samples per example on which the loss is computed
    warmup: int = 2048  # samples of context before them, not in the loss (the model's state fills)
    learning_rate: float = 3e-3
    stft_weight: float = 0.1  # multi-resolution STFT distance (auraloss), added to the L1...
    stft_start: int = 1000  # ...from this step: before the waveform is close it slows L1 (docs/effects.md)
    esr_weight: float = 0.0  # error-to-signal ratio as a loss term (always reported)
    stft_scales: list[int] = field(default_factory=lambda: [256, 1024, 4096])
    checkpoint_every: int = 500
    validate_every: int = 250
    validation_fraction: float = 0.1
    max_steps: int = 20000
    seed: int = 0

    def validate(self, origin: str) -> None:
        def bad(name: str, why: str) -> ProfileError:
            return ProfileError(f"{origin}: train.{name} {why}")

        for name in ("batch_size", "window", "checkpoint_every", "validate_every", "max_steps"):
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.stft_start < 0:
            raise bad("stft_start", f"must be >= 0, got {self.stft_start}")
        if self.warmup < 0:
            raise bad("warmup", f"must be >= 0, got {self.warmup}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise bad("learning_rate", f"must be > 0, got {self.learning_rate}")
        for name in ("stft_weight", "esr_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise bad(name, f"must be >= 0, got {getattr(self, name)}")
        if not self.stft_scales or any(s < 16 or s > self.window for s in self.stft_scales):
            raise bad("stft_scales", f"must be FFT sizes in [16, train.window], got {self.stft_scales}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise bad("validation_fraction", f"must be in (0, 1), got {self.validation_fraction}")
        if not 0 <= self.seed < 2 ** 32:
            raise bad("seed", f"must be in [0, 2**32), got {self.seed}")


# What ``--resume --set`` may change: the rest is fixed for a run's life.
RESUMABLE_SETTINGS = ("train.learning_rate", "train.checkpoint_every", "train.validate_every",
                      "train.max_steps")


@dataclass(frozen=True)
class EffectProfile:
    name: str
    model: EffectConfig
    train: EffectTrainConfig
    family: str = FAMILY

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": FAMILY, "model": dataclasses.asdict(self.model),
                "train": dataclasses.asdict(self.train)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def effect_profile_from_dict(data: Mapping[str, Any], origin: str = "profile",
                             overrides: list[str] | tuple[str, ...] = (),
                             default_name: str = "custom") -> EffectProfile:
    if not isinstance(data, Mapping):
        raise ProfileError(f"{origin}: must be a mapping with 'model' and 'train' sections")
    unknown = set(data) - {"name", "family", "model", "train"}
    if unknown:
        raise ProfileError(f"{origin}: unknown top-level field(s) {sorted(unknown)}; "
                           "expected name, family, model, train")
    if data.get("family") != FAMILY:
        raise ProfileError(f"{origin}: family must be {FAMILY!r}, got {data.get('family')!r}")
    sections: dict[str, dict[str, Any]] = {"model": dict(data.get("model") or {}),
                                           "train": dict(data.get("train") or {})}
    for text in overrides:
        section, name, value = _parse_override(text)
        if section not in sections:
            raise ProfileError(f"override {text!r}: section must be 'model' or 'train'")
        sections[section][name] = value
    model = _build(EffectConfig, sections["model"], "model", origin)
    train = _build(EffectTrainConfig, sections["train"], "train", origin)
    model.validate(origin)
    train.validate(origin)
    return EffectProfile(name=str(data.get("name", default_name)), model=model, train=train)


def load_effect_profile(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> EffectProfile:
    """A shipped effect profile by name (``effect-tcn``) or a YAML file, with overrides."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ProfileError(f"unknown profile {str(name_or_path)!r}: choose one of "
                               f"{', '.join(available_profiles(FAMILY))} or give a path to a YAML file")
    origin = str(path) if path.parent != PROFILE_DIR else f"profile '{path.stem}'"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"{origin}: cannot be read ({exc})") from None
    if profile_family(data) != FAMILY:
        raise ProfileError(f"{origin}: is not an effect profile (family {profile_family(data)!r})")
    return effect_profile_from_dict(data, origin, overrides, default_name=path.stem)

"""Typed model and training profiles, loaded from YAML with field-level validation.

A profile is one YAML file with two sections::

    name: small
    model: {sample_rate: 16000, n_band: 4, ...}     # -> ModelConfig
    train: {batch_size: 8, window: 16384, ...}      # -> TrainConfig

An optional top-level ``family`` picks the model family: ``autoencoder`` (the default, the
sections above), ``ddsp`` (``model`` -> DDSPConfig, ``train`` -> DDSPTrainConfig) or ``effect`` (``model`` ->
EffectConfig, ``train`` -> EffectTrainConfig).

Shipped profiles live in ``models/profiles/NAME.yaml`` and are selected by name; a user may
pass a path to their own file instead, and override single fields with ``section.field=value``.
Unknown fields and values of the wrong type are errors that name the field.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROFILE_DIR = Path(__file__).parent / "profiles"
# The spectral distance hops by a quarter of each FFT size: below 4 there is no hop.
MIN_STFT_SCALE = 4
MAX_WORKERS = 256  # data loader processes: beyond this it is a typo


class ProfileError(ValueError):
    """A profile could not be loaded: the message names the file and the field."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a RAVE-style streaming autoencoder."""

    sample_rate: int = 48000
    channels: int = 1
    n_band: int = 16  # PQMF bands; 1 turns the filter bank off
    pqmf_taps_per_band: int = 16  # prototype filter length = n_band * this (+1 if needed)
    capacity: int = 64  # channels of the first (highest rate) stage
    ratios: list[int] = field(default_factory=lambda: [4, 4, 4, 2])
    latent_size: int = 16
    dilations: list[int] = field(default_factory=lambda: [1, 3, 9])
    kernel_size: int = 3
    max_channels: int = 512
    activation: str = "leaky_relu"  # leaky_relu | snake
    # Layers whose hop (samples of audio per step) is above this use causal padding: a
    # centered kernel at a coarse rate would cost kernel * hop samples of delay.
    max_centered_hop: int = 64
    causal: bool = False  # every layer causal (the PQMF keeps its linear phase)
    noise: bool = True  # filtered-noise branch in the decoder
    weight_norm: bool = True

    @property
    def compression(self) -> int:
        return self.n_band * math.prod(self.ratios)

    def validate(self, origin: str) -> None:
        def bad(name: str, why: str) -> ProfileError:
            return ProfileError(f"{origin}: model.{name} {why}")

        positive = ["sample_rate", "channels", "n_band", "pqmf_taps_per_band", "capacity",
                    "latent_size", "kernel_size", "max_channels"]
        for name in positive:
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.n_band & (self.n_band - 1):
            raise bad("n_band", f"must be a power of two, got {self.n_band}")
        if not self.ratios or any(r < 1 for r in self.ratios):
            raise bad("ratios", f"must be a non-empty list of integers >= 1, got {self.ratios}")
        if not self.dilations or any(d < 1 for d in self.dilations):
            raise bad("dilations", f"must be a non-empty list of integers >= 1, got {self.dilations}")
        if self.kernel_size % 2 == 0:
            raise bad("kernel_size", f"must be odd, got {self.kernel_size}")
        if self.activation not in ("leaky_relu", "snake"):
            raise bad("activation", f"must be 'leaky_relu' or 'snake', got {self.activation!r}")
        if self.max_centered_hop < 0:
            raise bad("max_centered_hop", "must be >= 0")


MIN_DISCRIMINATOR_WINDOW = 2048  # the period nets stride 3^4 over columns of up to 11 samples


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings for the two training phases."""

    batch_size: int = 8
    window: int = 65536  # samples per training example (rounded to the compression)
    learning_rate: float = 1e-4
    adversarial_start: int = 1_000_000  # step at which phase 2 (adversarial) begins
    kl_beta: float = 0.1
    kl_warmup: int = 200_000  # steps over which the KL weight ramps from 0 to kl_beta
    feature_matching_weight: float = 20.0
    discriminator_scales: int = 3
    discriminator_periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    discriminator_capacity: int = 16
    # the critic judges one random crop of each window (the same for real and generated audio):
    # its losses are local, and its cost, which dominates phase 2, falls with the crop (0.34 s at
    # 48 kHz, about the 8192 samples at 22 kHz that GAN vocoders' critics are trained on)
    discriminator_window: int = 16384
    stft_scales: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128])
    multiband_weight: float = 1.0  # the spectral distance on the PQMF sub-bands (models/losses.py)
    mel_weight: float = 1.0  # the multi-scale log-mel distance (models/losses.py)
    checkpoint_every: int = 5000
    validate_every: int = 2000
    validation_fraction: float = 0.05
    max_steps: int = 6_000_000
    seed: int = 0
    num_workers: int = 0

    def validate(self, origin: str) -> None:
        def bad(name: str, why: str) -> ProfileError:
            return ProfileError(f"{origin}: train.{name} {why}")

        for name in ["learning_rate", "kl_beta", "feature_matching_weight", "validation_fraction"]:
            if not math.isfinite(getattr(self, name)):  # NaN slips through every comparison below
                raise bad(name, f"must be a finite number, got {getattr(self, name)}")
        for name in ["batch_size", "window", "checkpoint_every", "validate_every", "max_steps",
                     "discriminator_scales", "discriminator_capacity"]:
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        for name in ["adversarial_start", "kl_warmup", "num_workers"]:
            if getattr(self, name) < 0:
                raise bad(name, f"must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.seed < 2 ** 32:
            raise bad("seed", f"must be in [0, 2**32), got {self.seed}")
        if self.num_workers > MAX_WORKERS:
            raise bad("num_workers", f"must be <= {MAX_WORKERS}, got {self.num_workers}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise bad("validation_fraction", f"must be in [0, 1), got {self.validation_fraction}")
        for name in ["multiband_weight", "mel_weight"]:
            if not getattr(self, name) >= 0:
                raise bad(name, f"must be >= 0, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise bad("learning_rate", f"must be > 0, got {self.learning_rate}")
        for name in ["kl_beta", "feature_matching_weight"]:
            if getattr(self, name) < 0:
                raise bad(name, f"must be >= 0, got {getattr(self, name)}")
        if not self.stft_scales or any(s < MIN_STFT_SCALE for s in self.stft_scales):
            raise bad("stft_scales", f"must be a non-empty list of FFT sizes >= {MIN_STFT_SCALE}, "
                                     f"got {self.stft_scales}")
        if len(set(self.stft_scales)) != len(self.stft_scales):
            raise bad("stft_scales", f"lists a size twice: {self.stft_scales}")
        if self.discriminator_window < MIN_DISCRIMINATOR_WINDOW:
            raise bad("discriminator_window", f"must be >= {MIN_DISCRIMINATOR_WINDOW} samples, "
                                              f"got {self.discriminator_window}")
        if not self.discriminator_periods or any(p < 1 for p in self.discriminator_periods):
            raise bad("discriminator_periods", f"must be a non-empty list of integers >= 1, "
                                               f"got {self.discriminator_periods}")


@dataclass(frozen=True)
class DDSPConfig:
    """Architecture of a DDSP timbre-transfer model (models/ddsp): features -> decoder -> synth."""

    sample_rate: int = 48000
    channels: int = 1  # mono in, mono out
    hop: int = 240  # samples per control frame
    n_harmonics: int = 100
    noise_bands: int = 65  # filtered-noise magnitudes; FIR of 2 * (bands - 1) taps
    hidden: int = 512  # decoder width (MLPs and GRU)
    f0_min: float = 40.0  # Hz, the pitch tracker's range
    f0_max: float = 2000.0
    pitch_decimation: int = 3  # the tracker runs at sample_rate / this
    pitch_threshold: float = 0.1  # YIN's absolute threshold on the normalised difference
    voicing_threshold: float = 0.35  # aperiodicity above this: unvoiced, the last f0 is held
    silence_db: float = -70.0  # frames quieter than this hold the last f0 too
    loudness_window: int = 1024  # samples of the A-weighted loudness analysis

    @property
    def family(self) -> str:
        return "ddsp"

    @property
    def compression(self) -> int:
        """Audio samples per control frame: what windows and buffers are multiples of."""
        return self.hop

    def validate(self, origin: str) -> None:
        def bad(name: str, why: str) -> ProfileError:
            return ProfileError(f"{origin}: model.{name} {why}")

        for name in ["sample_rate", "hop", "n_harmonics", "hidden", "pitch_decimation",
                     "loudness_window"]:
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.channels != 1:
            raise bad("channels", f"must be 1 (the DDSP model is mono), got {self.channels}")
        if self.noise_bands < 2:
            raise bad("noise_bands", f"must be >= 2, got {self.noise_bands}")
        if 2 * (self.noise_bands - 1) - 1 > self.hop:
            raise bad("noise_bands", f"gives a noise FIR of {2 * (self.noise_bands - 1)} taps, longer "
                                     f"than hop + 1 = {self.hop + 1}: use at most {self.hop // 2 + 1} bands")
        if self.hop % self.pitch_decimation:
            raise bad("hop", f"must be a multiple of model.pitch_decimation ({self.pitch_decimation})")
        for name in ["f0_min", "f0_max", "pitch_threshold", "voicing_threshold", "silence_db"]:
            if not math.isfinite(getattr(self, name)):
                raise bad(name, f"must be a finite number, got {getattr(self, name)}")
        pitch_rate = self.sample_rate / self.pitch_decimation
        if not 0 < self.f0_min < self.f0_max <= pitch_rate / 4:
            raise bad("f0_max", f"needs 0 < f0_min < f0_max <= {pitch_rate / 4:g} Hz (a quarter of "
                                f"the tracker's rate), got {self.f0_min:g}..{self.f0_max:g}")
        if not 0 < self.pitch_threshold < 1 or not 0 < self.voicing_threshold <= 1:
            raise bad("pitch_threshold", "and model.voicing_threshold must be in (0, 1)")


@dataclass(frozen=True)
class DDSPTrainConfig:
    """Optimisation settings of a DDSP model: one reconstruction phase, no critic."""

    batch_size: int = 8
    window: int = 48000  # samples per training example (rounded up to the hop)
    learning_rate: float = 1e-3
    stft_scales: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128, 64])
    checkpoint_every: int = 5000
    validate_every: int = 2000
    validation_fraction: float = 0.05
    max_steps: int = 300_000
    seed: int = 0
    num_workers: int = 0

    def validate(self, origin: str) -> None:
        def bad(name: str, why: str) -> ProfileError:
            return ProfileError(f"{origin}: train.{name} {why}")

        for name in ["learning_rate", "validation_fraction"]:
            if not math.isfinite(getattr(self, name)):
                raise bad(name, f"must be a finite number, got {getattr(self, name)}")
        for name in ["batch_size", "window", "checkpoint_every", "validate_every", "max_steps"]:
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise bad("learning_rate", f"must be > 0, got {self.learning_rate}")
        if not 0 <= self.num_workers <= MAX_WORKERS:
            raise bad("num_workers", f"must be in [0, {MAX_WORKERS}], got {self.num_workers}")
        if not 0 <= self.seed < 2 ** 32:
            raise bad("seed", f"must be in [0, 2**32), got {self.seed}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise bad("validation_fraction", f"must be in [0, 1), got {self.validation_fraction}")
        if not self.stft_scales or any(s < MIN_STFT_SCALE for s in self.stft_scales):
            raise bad("stft_scales", f"must be a non-empty list of FFT sizes >= {MIN_STFT_SCALE}, "
                                     f"got {self.stft_scales}")
        if len(set(self.stft_scales)) != len(self.stft_scales):
            raise bad("stft_scales", f"lists a size twice: {self.stft_scales}")


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
    def family(self) -> str:
        return "effect"

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
    """Optimisation settings of an effect model: L1 + STFT on dry/wet pairs (docs/effects.md)."""

    batch_size: int = 8
    window: int = 8192  # samples per example on which the loss is computed
    warmup: int = 2048  # samples of context before them, not in the loss (the model's state fills)
    learning_rate: float = 3e-3  # at step 0; a cosine takes it to final_lr_fraction of it at max_steps
    final_lr_fraction: float = 0.1
    stft_weight: float = 0.1  # multi-resolution STFT distance (auraloss), added to the L1...
    stft_start: int = 0  # ...from this step (docs/effects.md: why it may start at once)
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
        if not 0.0 < self.final_lr_fraction <= 1.0:
            raise bad("final_lr_fraction", f"must be in (0, 1], got {self.final_lr_fraction}")
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


FAMILIES = {"autoencoder": (ModelConfig, TrainConfig), "ddsp": (DDSPConfig, DDSPTrainConfig),
            "effect": (EffectConfig, EffectTrainConfig)}


# Settings a run may change when it continues (``tildekit train ... --resume --set``): they steer
# the optimisation from the next step on without breaking the checkpoint or the replayed data
# order. The start of phase 2 may move while the run is still in phase 1 and the new start is
# ahead of it (models/trainer.py, _check_phase_boundary_move). Everything else (architecture,
# batch, window, seed, data split, losses' shapes, discriminator) is fixed for a run's whole life.
PHASE_BOUNDARY = "train.adversarial_start"
RESUMABLE_SETTINGS = ("train.learning_rate", "train.kl_beta", "train.kl_warmup",
                      "train.feature_matching_weight", "train.checkpoint_every", "train.validate_every",
                      "train.max_steps", "train.num_workers")


@dataclass(frozen=True)
class Profile:
    name: str
    model: ModelConfig | DDSPConfig | EffectConfig
    train: TrainConfig | DDSPTrainConfig | EffectTrainConfig

    @property
    def family(self) -> str:
        if isinstance(self.model, (DDSPConfig, EffectConfig)):
            return self.model.family
        return "autoencoder"

    def to_dict(self) -> dict[str, Any]:
        # autoencoder profiles are written as before (no family key)
        family = {} if self.family == "autoencoder" else {"family": self.family}
        return {"name": self.name, **family, "model": dataclasses.asdict(self.model),
                "train": dataclasses.asdict(self.train)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def available_profiles(family: str | None = "autoencoder") -> list[str]:
    """The shipped profiles of one family (the autoencoder's by default; every family's with None)."""
    names = []
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            data = None
        declared = data.get("family", "autoencoder") if isinstance(data, Mapping) else "autoencoder"
        if family is None or declared == family:
            names.append(path.stem)
    return names


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """Return ``value`` converted to ``annotation`` or raise a ProfileError naming ``where``."""
    origin = typing.get_origin(annotation)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise ProfileError(f"{where} must be a list, got {value!r}")
        return [_check_type(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ProfileError(f"{where} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ProfileError(f"{where} must be an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ProfileError(f"{where} must be a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ProfileError(f"{where} must be a string, got {value!r}")
    raise TypeError(f"unsupported annotation {annotation!r}")


def _build(cls: type, values: Mapping[str, Any], section: str, origin: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(values, Mapping):
        raise ProfileError(f"{origin}: section '{section}' must be a mapping")
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            raise ProfileError(
                f"{origin}: unknown field '{section}.{key}' (known: {', '.join(sorted(known))})")
        kwargs[key] = _check_type(value, hints[key], f"{origin}: {section}.{key}")
    return cls(**kwargs)


def _parse_override(text: str) -> tuple[str, str, Any]:
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ProfileError(f"override {text!r} must look like section.field=value, "
                           "e.g. model.capacity=32 or train.batch_size=4")
    key, raw = text.split("=", 1)
    section, name = key.split(".", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ProfileError(f"override {text!r}: the value is not valid YAML (a number, true/false, "
                           "a word or a list like [2, 3])") from None
    return section.strip(), name.strip(), value


def load_profile(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Profile:
    """Load a shipped profile by name (``small``) or a YAML file by path, then apply overrides."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ProfileError(f"unknown profile {str(name_or_path)!r}: choose one of "
                               f"{', '.join(available_profiles(None))} or give a path to a YAML file")
    if not path.exists():
        raise ProfileError(f"profile file {str(path)!r} does not exist")
    origin = str(path) if path.parent != PROFILE_DIR else f"profile '{path.stem}'"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"{origin}: not valid YAML ({exc})") from None
    return profile_from_dict(data, origin, overrides, default_name=path.stem)


def profile_from_dict(data: Mapping[str, Any], origin: str = "profile",
                      overrides: list[str] | tuple[str, ...] = (),
                      default_name: str = "custom") -> Profile:
    if not isinstance(data, Mapping):
        raise ProfileError(f"{origin}: must be a mapping with 'model' and 'train' sections")
    unknown = set(data) - {"name", "family", "model", "train"}
    if unknown:
        raise ProfileError(f"{origin}: unknown top-level field(s) {sorted(unknown)}; "
                           "expected name, family, model, train")
    family = data.get("family", "autoencoder")
    if family not in FAMILIES:
        raise ProfileError(f"{origin}: family must be one of {', '.join(FAMILIES)}, got {family!r}")
    model_type, train_type = FAMILIES[family]
    sections: dict[str, dict[str, Any]] = {"model": dict(data.get("model") or {}),
                                           "train": dict(data.get("train") or {})}
    for text in overrides:
        section, name, value = _parse_override(text)
        if section not in sections:
            raise ProfileError(f"override {text!r}: section must be 'model' or 'train'")
        sections[section][name] = value
    model = _build(model_type, sections["model"], "model", origin)
    train = _build(train_type, sections["train"], "train", origin)
    model.validate(origin)
    train.validate(origin)
    return Profile(name=str(data.get("name", default_name)), model=model, train=train)

"""Training of effect models: L1 + multi-resolution STFT loss, ESR on held-out segments.

``tildekit train PAIRS_DIR RUN_DIR --profile effect-tcn`` lands here (``models/families.py``
routes by the profile's ``family``). The run dir has the autoencoder's layout and files (``profile.yaml``,
``checkpoints/``, ``metrics.jsonl``, ``plots/``), written with the same helpers; resuming
replays an uninterrupted run (window ``i`` depends on the seed and ``i`` only, and the random
states come back from the checkpoint). One process: torchrun jobs are refused.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import auraloss
import numpy as np
import torch
import torch.nn as nn

from tildekit.errors import TildekitError
from tildekit.models.config import EffectConfig, EffectTrainConfig, Profile
from tildekit.models.effects.model import EffectModel, build_effect_model
from tildekit.models.effects.pairs import PairSet, PairWindows
from tildekit.models.effects.reference import KnobRange
from tildekit.models.run import (
    CHECKPOINT_FORMAT,
    METRICS_FILE,
    PLOTS_DIR,
    PROFILE_FILE,
    load_checkpoint,
    newest_checkpoint,
    read_metrics,
    read_profile,
    write_checkpoint,
)
from tildekit.models.trainer import (
    TrainSummary,
    _truncate_metrics,
    adam,
    restore_rng_state,
    rng_state,
    write_plots,
)

VALIDATION_SEGMENTS = 16
TORCH_ADAM_BETAS = (0.9, 0.999)  # torch's defaults: effect models train with them
# Floor of the squared STFT magnitudes in the training loss (auraloss's default is 1e-8): bins
# below 1e-3 in magnitude (a sine near -100 dBFS) count as silence, so the log-magnitude term
# does not chase leakage 80 dB down in the pauses (docs/effects.md). The evaluation keeps 1e-8.
STFT_FLOOR = 1e-6
# What ``--resume --set`` may change: the rest is fixed for a run's life.
RESUMABLE_SETTINGS = ("train.learning_rate", "train.checkpoint_every", "train.validate_every",
                      "train.max_steps")


def learning_rate_at(cfg: EffectTrainConfig, step: int) -> float:
    """Cosine from ``learning_rate`` at step 0 to ``final_lr_fraction`` of it at ``max_steps``
    (constant after): a function of the step alone, so a resumed run follows the same curve."""
    progress = min(step / cfg.max_steps, 1.0)
    floor = cfg.final_lr_fraction
    return cfg.learning_rate * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def esr(target: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Error-to-signal ratio: ``sum((y - y_hat)^2) / sum(y^2)`` over everything given."""
    return (target - output).pow(2).sum() / target.pow(2).sum().clamp_min(1e-10)


class EffectLoss(nn.Module):
    """L1 + ``stft_weight`` x auraloss's multi-resolution STFT distance (spectral convergence
    + log magnitude), FFT sizes ``scales`` hopping by a quarter."""

    def __init__(self, scales: list[int], stft_weight: float, esr_weight: float = 0.0,
                 floor: float = STFT_FLOOR) -> None:
        super().__init__()
        self.stft = auraloss.freq.MultiResolutionSTFTLoss(
            fft_sizes=list(scales), hop_sizes=[s // 4 for s in scales], win_lengths=list(scales), eps=floor)
        self.stft_weight, self.esr_weight = stft_weight, esr_weight

    def forward(self, target: torch.Tensor, output: torch.Tensor, with_stft: bool = True) -> dict[str, torch.Tensor]:
        l1 = (target - output).abs().mean()
        stft = self.stft(output, target)
        error = esr(target, output)
        total = l1 + self.esr_weight * error + (self.stft_weight * stft if with_stft else 0.0)
        return {"total": total, "l1": l1, "stft": stft, "esr": error}


def effect_sections(profile: Profile, where: str) -> tuple[EffectConfig, EffectTrainConfig]:
    """The model and train sections of an effect profile; a profile of another family is refused."""
    if not isinstance(profile.model, EffectConfig) or not isinstance(profile.train, EffectTrainConfig):
        raise TildekitError(f"{where}: profile '{profile.name}' is a {profile.family} profile, "
                            "not an effect profile (family: effect)")
    return profile.model, profile.train


def read_effect_profile(run_dir: Path) -> Profile:
    profile = read_profile(run_dir)
    effect_sections(profile, f"run dir '{run_dir}'")
    return profile


def load_effect_run(run_dir: str | Path, streaming: bool) -> EffectModel:
    """The newest checkpoint's model of an effect run, in eval mode."""
    run_dir = Path(run_dir)
    model_cfg, _ = effect_sections(read_profile(run_dir), f"run dir '{run_dir}'")
    path = newest_checkpoint(run_dir)
    if path is None:
        raise TildekitError(f"run dir '{run_dir}' has no checkpoint yet")
    checkpoint = load_checkpoint(path)
    model = build_effect_model(model_cfg, [KnobRange(**k) for k in checkpoint["knobs"]], streaming)
    model.load_state_dict(checkpoint["model"])
    return model.eval()


class EffectTrainer:
    def __init__(self, pairs: PairSet, run_dir: Path, profile: Profile, checkpoint: dict | None) -> None:
        model_cfg, cfg = effect_sections(profile, "tildekit train")
        if pairs.sample_rate != model_cfg.sample_rate:
            raise TildekitError(f"the pair set is at {pairs.sample_rate} Hz but profile '{profile.name}' "
                                f"trains at {model_cfg.sample_rate} Hz")
        self.pairs, self.run_dir, self.profile, self.cfg = pairs, run_dir, profile, cfg
        self.train_segments, held = pairs.split(cfg.validation_fraction, cfg.seed)
        self.held_out = held[:VALIDATION_SEGMENTS]
        torch.manual_seed(cfg.seed)
        self.model = build_effect_model(model_cfg, pairs.knobs, streaming=False).train()
        self.loss = EffectLoss(cfg.stft_scales, cfg.stft_weight, cfg.esr_weight)
        self.optimizer = adam(self.model.parameters(), cfg.learning_rate, torch.device("cpu"), betas=TORCH_ADAM_BETAS)
        self.step = 0
        if checkpoint is not None:
            try:
                self.model.load_state_dict(checkpoint["model"])
                self.optimizer.load_state_dict(checkpoint["optimizer"])
            except (KeyError, RuntimeError, ValueError) as exc:
                raise TildekitError(f"the checkpoint in '{run_dir}' does not fit the run's profile "
                                    f"({str(exc).splitlines()[0]}): start a new run dir") from None
            for group in self.optimizer.param_groups:
                group["lr"] = cfg.learning_rate  # a resumable setting
            self.step = int(checkpoint["step"])
            restore_rng_state(checkpoint["rng"])
        self.first_validation: float | None = None
        self.last_validation: float | None = None

    def windows(self, length: int) -> PairWindows:
        cfg = self.cfg
        return PairWindows(self.pairs, self.train_segments, cfg.window, cfg.warmup, cfg.seed, length)

    def train_step(self, dry: torch.Tensor, wet: torch.Tensor, knobs: torch.Tensor) -> dict[str, float]:
        warmup = self.cfg.warmup
        output = self.model.process(dry, knobs)
        terms = self.loss(wet[..., warmup:], output[..., warmup:], self.step >= self.cfg.stft_start)
        if not torch.isfinite(terms["total"]):
            raise TildekitError(f"training stopped at step {self.step + 1}: the loss is not finite; "
                                "lower train.learning_rate")
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate_at(self.cfg, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        self.optimizer.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    @torch.no_grad()
    def evaluate(self, segments: np.ndarray) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
        """ESR, L1 and STFT distance on whole segments (from rest, as rendered)."""
        self.model.eval()
        dry = torch.from_numpy(self.pairs.dry[segments]).unsqueeze(1)
        wet = torch.from_numpy(self.pairs.wet[segments]).unsqueeze(1)
        knobs = torch.from_numpy(self.pairs.values[segments])
        output = self.model.process(dry, knobs)
        self.model.train()
        terms = self.loss(wet, output)
        values = {"esr": float(esr(wet, output)), "l1": float(terms["l1"]), "stft": float(terms["stft"])}
        return values, (wet[0, 0].numpy(), output[0, 0].numpy())

    def validate(self) -> float:
        values, example = self.evaluate(self.held_out)
        if self.first_validation is None:
            self.first_validation = values["esr"]
        self.last_validation = values["esr"]
        record = {"kind": "validation", "step": self.step, "distance": values["esr"], **values,
                  "time": time.time()}
        with open(self.run_dir / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        write_plots(self.run_dir / PLOTS_DIR, read_metrics(self.run_dir), example, self.pairs.sample_rate)
        return values["esr"]

    def checkpoint(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "step": self.step, "profile": self.profile.to_yaml(),
                "family": "effect", "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "knobs": [dict(vars(k)) for k in self.pairs.knobs], "rng": rng_state()}


def _prepare(run_dir: Path, profile: Profile | None, resume: bool) -> tuple[Profile, Path | None]:
    checkpoint = newest_checkpoint(run_dir) if run_dir.is_dir() else None
    if not resume:
        if checkpoint is not None:
            raise TildekitError(f"'{run_dir}' already holds a run (checkpoint {checkpoint.name}): pass "
                                "--resume to continue it, or choose another run dir")
        if profile is None:
            raise TildekitError("a new run needs a profile: pass --profile NAME")
        effect_sections(profile, "tildekit train")
        return profile, None
    if not (run_dir / PROFILE_FILE).is_file():
        raise TildekitError(f"nothing to resume in '{run_dir}' (no {PROFILE_FILE})")
    stored = read_effect_profile(run_dir)
    if profile is None:
        return stored, checkpoint
    effect_sections(profile, "tildekit train --resume")
    given, kept = profile.to_dict(), stored.to_dict()
    fixed = [f"{s}.{k}" for s in ("model", "train") for k in kept[s]
             if given[s][k] != kept[s][k] and f"{s}.{k}" not in RESUMABLE_SETTINGS]
    if fixed:
        raise TildekitError(f"--resume cannot change {', '.join(fixed)}: fixed for the whole run "
                            f"(only {', '.join(RESUMABLE_SETTINGS)} may change)")
    return profile, checkpoint


def train_effect(dataset_dir: str | Path, run_dir: str | Path, profile: Profile | None,
                 steps: int | None = None, resume: bool = False, progress: bool = True) -> TrainSummary:
    """Train (or continue) the effect run in ``run_dir`` on the pair set ``dataset_dir``."""
    from tqdm import tqdm

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TildekitError("effect models train in one process: start `tildekit train` without torchrun")
    if profile is not None:
        effect_sections(profile, "tildekit train")
    dataset_dir, run_dir = Path(dataset_dir), Path(run_dir)
    if not PairSet.is_pair_set(dataset_dir):
        raise TildekitError(f"'{dataset_dir}' is not a pair set (no pairs.json): effect profiles train "
                            "on dry/wet pairs")
    profile, checkpoint_path = _prepare(run_dir, profile, resume)
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path is not None else None
    trainer = EffectTrainer(PairSet.load(dataset_dir), run_dir, profile, checkpoint)
    cfg = trainer.cfg
    start = trainer.step
    target = steps if steps is not None else cfg.max_steps
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / PROFILE_FILE).write_text(profile.to_yaml())
    _truncate_metrics(run_dir, start)
    summary = TrainSummary(run_dir, profile.name, start, start, "effect", "cpu", 1)
    if target <= start:
        print(f"run '{run_dir}' is already at step {start} (asked for {target}): nothing to do", file=sys.stderr)
        return summary
    if start == 0:
        trainer.validate()
    windows = trainer.windows(target * cfg.batch_size)
    bar = tqdm(total=target, initial=start, unit="step", disable=not progress, desc=profile.name)
    began, values = time.perf_counter(), {}
    sums: dict[str, float] = {}
    count = 0
    for step in range(start, target):
        items = [windows[step * cfg.batch_size + i] for i in range(cfg.batch_size)]
        dry, wet, knobs = (torch.stack(parts) for parts in zip(*items))
        values = trainer.train_step(dry, wet, knobs)
        trainer.step = step + 1
        bar.update(1)
        count += 1
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value
        if trainer.step % 50 == 0 or trainer.step == target:
            with open(run_dir / METRICS_FILE, "a") as handle:
                handle.write(json.dumps({"kind": "train", "step": trainer.step,
                                         **{k: v / count for k, v in sums.items()}, "time": time.time()}) + "\n")
            sums, count = {}, 0
        if trainer.step % cfg.validate_every == 0 or trainer.step == target:
            trainer.validate()
        if trainer.step % cfg.checkpoint_every == 0 or trainer.step == target:
            write_checkpoint(run_dir, trainer.checkpoint())
    bar.close()
    elapsed = time.perf_counter() - began
    summary.step = trainer.step
    summary.losses = values
    summary.first_validation_distance = trainer.first_validation
    summary.validation_distance = trainer.last_validation
    summary.steps_per_second = (target - start) / elapsed if elapsed > 0 else None
    return summary


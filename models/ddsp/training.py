"""Training a DDSP model: the reconstruction distance and the trainer behind ``tildekit train``.

A DDSP model learns from audio alone: its own pitch tracker and loudness give the controls of
each training window (no gradient flows through them), the decoder and synth play them back,
and a multi-scale spectral distance (auraloss: spectral convergence + log-magnitude L1) compares
the result with the window. There is one phase and no critic.

:class:`DDSPTrainer` is the autoencoder ``Trainer`` with its model-specific parts replaced, so a
``family: ddsp`` profile trains with the same run dir, checkpoints, metrics, resume and
``torchrun`` support.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import auraloss
import torch
import torch.nn as nn

from tildekit.errors import TildekitError
from tildekit.models.config import DDSPConfig, Profile
from tildekit.models.dataset import SequentialWindows
from tildekit.models.ddsp import control_stats
from tildekit.models.ddsp.model import DDSP, analysis_latency, build_ddsp
from tildekit.models.run import PLOTS_DIR, read_metrics
from tildekit.models.trainer import (
    STATS_WINDOWS,
    Processes,
    Trainer,
    _seed_everything,
    _spread,
    adam,
    write_plots,
)


def alignment(model: DDSP) -> int:
    """Samples by which the output follows the input: the loudness window's centre plus half a glide.

    The model is causal, so a note reaches its output about this late; the distance compares the
    output with the input shifted by as much, or it would ask the decoder to foresee onsets.
    """
    latency = analysis_latency(model)
    return int(round(latency["loudness_window_centre"] + latency["glide"] / 2))


class DDSPLoss(nn.Module):
    """Multi-resolution STFT distance of ``y`` from ``x`` shifted by ``shift`` samples."""

    def __init__(self, scales: Sequence[int], shift: int) -> None:
        super().__init__()
        scales = sorted(int(s) for s in scales)
        self.shift = shift
        self.distance = auraloss.freq.MultiResolutionSTFTLoss(
            fft_sizes=scales, hop_sizes=[s // 4 for s in scales], win_lengths=scales,
            w_sc=1.0, w_log_mag=1.0, w_lin_mag=0.0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.shift > 0:
            x, y = x[..., : x.shape[-1] - self.shift], y[..., self.shift:]
        return self.distance(y, x)


class Reconstruct(nn.Module):
    """audio -> features (no gradient) -> decoder -> synth, as one module for DDP."""

    def __init__(self, model: DDSP) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            controls = self.model.features(x)
        harmonic, noise = self.model.render(controls[:, 0], controls[:, 1])
        return harmonic + noise


def train_step(model: DDSP, optimizer: torch.optim.Optimizer, loss: DDSPLoss,
               x: torch.Tensor) -> float:
    """One optimisation step on a batch of windows (B, 1, T); returns the distance."""
    distance = loss(x, Reconstruct(model)(x))
    optimizer.zero_grad(set_to_none=True)
    distance.backward()
    optimizer.step()
    return float(distance.detach())


class DDSPTrainer(Trainer):
    """The trainer for ``family: ddsp`` profiles (one phase, no discriminator, no latent)."""

    has_critic = False

    def __init__(self, dataset_dir: Path, run_dir: Path, profile: Profile, checkpoint: dict | None,
                 processes: Processes, device: torch.device) -> None:
        assert isinstance(profile.model, DDSPConfig)
        self.run_dir, self.profile, self.processes, self.device = run_dir, profile, processes, device
        cfg = profile.train
        self._open_data(dataset_dir)

        _seed_everything(cfg.seed)
        self.model = build_ddsp(profile.model, streaming=False).to(device).train()
        self.loss = DDSPLoss(cfg.stft_scales, alignment(self.model)).to(device)
        self.gen_opt = adam(self.model.parameters(), cfg.learning_rate, device)
        self.step = 0
        if checkpoint is not None:
            self._load(checkpoint)
        self.reconstruct = Reconstruct(self.model)
        self.recon_step: nn.Module = self._wrap(self.reconstruct) if processes.distributed else self.reconstruct
        self.adversarial = False
        self._start_records(cfg.validate_every, cfg.checkpoint_every)

    def _load_parts(self, checkpoint: dict) -> None:
        self.model.load_state_dict(checkpoint["model"], strict=True)
        self.gen_opt.load_state_dict(checkpoint["generator_optimizer"])

    def _parts(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "generator_optimizer": self.gen_opt.state_dict()}

    def set_phase(self, adversarial: bool) -> None:
        if adversarial:
            raise TildekitError("a DDSP model has no adversarial phase")

    @property
    def phase_name(self) -> str:
        return "reconstruction"

    def _randomise_noise(self) -> None:
        source = self.model.noise.source
        source.offset = int(torch.randint(source.table_length, ()).item())

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        x = x.to(self.device, non_blocking=True)
        self._randomise_noise()
        distance = self.loss(x, self.recon_step(x))
        values = self._reduce({"distance": distance})
        self.gen_opt.zero_grad(set_to_none=True)
        distance.backward()
        self.gen_opt.step()
        return values

    @torch.no_grad()
    def validate(self) -> float | None:
        if not self.validation:
            return None
        self.model.eval()
        self.model.noise.source.offset = 0
        inputs, outputs = [], []
        batch = self.profile.train.batch_size
        for start in range(0, len(self.validation), batch):
            x = torch.stack(self.validation[start:start + batch]).to(self.device)
            inputs.append(x)
            outputs.append(self.reconstruct(x))
        self.model.train()
        distance = float(self.loss(torch.cat(inputs), torch.cat(outputs)))
        if self.first_validation is None:
            self.first_validation = distance
        self.last_validation = distance
        self.log({"kind": "validation", "step": self.step, "distance": distance, "time": time.time()})
        first = (inputs[0][0].mean(0).cpu().numpy(), outputs[0][0].mean(0).cpu().numpy())
        write_plots(self.run_dir / PLOTS_DIR, read_metrics(self.run_dir), first,
                    self.profile.model.sample_rate)
        return distance

    def save_latent_stats(self) -> None:
        """No latent space: the loudness range of the data instead, for playing from notes."""
        windows = _spread(SequentialWindows(self.dataset, self.dataset.segments(), self.window), STATS_WINDOWS)
        self.model.eval()
        span = control_stats.loudness_range(self.model, windows, self.profile.train.batch_size)
        self.model.train()
        control_stats.save(self.run_dir, span)

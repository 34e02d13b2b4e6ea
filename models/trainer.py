"""The two-phase trainer behind ``tildekit train``.

Phase 1 (representation), steps ``[0, train.adversarial_start)``: the whole autoencoder learns
to reconstruct, with the multiscale spectral distance plus the posterior's KL divergence (its
weight ramps up over ``train.kl_warmup`` steps). When phase 1 ends the latent statistics are
saved. Phase 2 (adversarial): the encoder is frozen and the decoder is fine-tuned against the
multi-scale / multi-period discriminator (hinge loss + feature matching), still with the
spectral distance.

Resuming replays an uninterrupted run: batch ``s`` is always made of the windows
``RandomWindows[s * global_batch + ...]``, and model, optimizers and random generators come
back from the checkpoint. Several processes started by ``torchrun`` train with PyTorch's
DistributedDataParallel (gloo on CPU, nccl on GPU); rank 0 alone writes the run dir.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, Sampler

from tildekit.errors import TildekitError
from tildekit.models.autoencoder import AutoEncoder, EarlierLayout, build_model, load_weights
from tildekit.models.config import PHASE_BOUNDARY, RESUMABLE_SETTINGS, Profile
from tildekit.models.contract.atomic import atomic_path, atomic_write_text
from tildekit.models.dataset import AudioDataset, RandomWindows, SequentialWindows
from tildekit.models.discriminator import (
    MultiDiscriminator,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
    split_real_fake,
)
from tildekit.models.latent_stats import FILE_NAME as LATENT_STATS_FILE
from tildekit.models.latent_stats import compute_latent_stats
from tildekit.models.losses import ReconstructionLoss, kl_divergence, kl_weight
from tildekit.models.run import (
    CHECKPOINT_DIR,
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

VALIDATION_WINDOWS = 16  # fixed windows: the distance is comparable across a run
STATS_WINDOWS = 128  # windows, spread over the whole dataset, for the latent statistics
ADAM_BETAS = (0.5, 0.9)


def adam(parameters: Iterable[nn.Parameter], learning_rate: float, device: torch.device,
         betas: tuple[float, float] = ADAM_BETAS) -> torch.optim.Adam:
    """Adam, fused where torch has the kernel (CPU, CUDA): one pass over every weight instead of a
    loop of small ops per tensor (a `default` step's update 206 -> 46 ms on one CPU thread); the
    same update (to float rounding) and the same checkpoint state either way."""
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(parameters, learning_rate, betas=betas, fused=fused or None)


# --------------------------------------------------------------------------- setup helpers


def choose_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            requested = "mps"
        else:
            requested = "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise TildekitError("--device cuda was asked but no CUDA GPU is visible to torch")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if requested == "mps" and not torch.backends.mps.is_available():
        raise TildekitError("--device mps was asked but MPS is not available on this machine")
    if requested not in ("cpu", "mps"):
        raise TildekitError(f"unknown device {requested!r}: use auto, cpu, cuda or mps")
    return torch.device(requested)


@dataclass(frozen=True)
class Processes:
    """Where this process sits in a ``torchrun`` job (rank 0 of 1 when started alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _processes_from_env() -> Processes:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    return Processes(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def training_window(profile: Profile) -> int:
    """``train.window`` rounded up to a multiple of the model's compression."""
    compression = profile.model.compression
    return -(-profile.train.window // compression) * compression


def _check_dataset(dataset: AudioDataset, profile: Profile, window: int) -> None:
    cfg = profile.model
    if (dataset.sample_rate, dataset.channels) != (cfg.sample_rate, cfg.channels):
        raise TildekitError(
            f"dataset '{dataset.path}' is {dataset.sample_rate} Hz, {dataset.channels} channel(s) "
            f"but profile '{profile.name}' trains at {cfg.sample_rate} Hz, {cfg.channels} channel(s): "
            f"re-run `tildekit preprocess AUDIO_FOLDER {dataset.path} --profile {profile.name}`")
    largest = max(profile.train.stft_scales)
    if largest > window:
        raise TildekitError(f"profile '{profile.name}': train.stft_scales holds {largest}, longer than "
                            f"the training window ({window} samples): raise train.window or drop "
                            "the large scale")


def _changed_settings(given: Profile, stored: Profile) -> dict[str, tuple[Any, Any]]:
    """``{"section.field": (stored value, given value)}`` for every setting that differs."""
    given_d, stored_d = given.to_dict(), stored.to_dict()
    return {f"{section}.{key}": (value, given_d[section][key])
            for section in ("model", "train") for key, value in stored_d[section].items()
            if given_d[section][key] != value}


# --------------------------------------------------------------------------- data order


class StepBatches(Sampler[list[int]]):
    """Batch ``s`` of this rank = windows ``s * batch * world + rank * batch + [0, batch)``."""

    def __init__(self, first_step: int, last_step: int, batch: int, processes: Processes) -> None:
        self.first_step, self.last_step = first_step, last_step
        self.batch, self.processes = batch, processes

    def __len__(self) -> int:
        return max(0, self.last_step - self.first_step)

    def __iter__(self) -> Iterator[list[int]]:
        per_step = self.batch * self.processes.world
        for step in range(self.first_step, self.last_step):
            start = step * per_step + self.processes.rank * self.batch
            yield list(range(start, start + self.batch))


def _spread(dataset: SequentialWindows, count: int) -> list[torch.Tensor]:
    """Up to ``count`` windows taken evenly over ``dataset``."""
    if len(dataset) == 0:
        return []
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int))
    return [dataset[int(i)] for i in picks]


# --------------------------------------------------------------------------- random state


def rng_state() -> dict[str, Any]:
    """Every generator the run draws from, as plain tensors, numbers and lists."""
    _, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": [int(version), [int(v) for v in internal], gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# --------------------------------------------------------------------------- modules


class Reconstruct(nn.Module):
    """encode -> sample -> decode as one module, so DistributedDataParallel can wrap it."""

    def __init__(self, model: AutoEncoder) -> None:
        super().__init__()
        self.model = model
        self.encoder_frozen = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (audio, sub-bands before synthesis, posterior mean, posterior scale)."""
        if self.encoder_frozen:
            with torch.no_grad():
                mean, scale = self.model.encode_params(x)
        else:
            mean, scale = self.model.encode_params(x)
        z = self.model.sample(mean, scale, 1.0)
        bands = self.model.decoder.bands_of(z)
        pqmf = self.model.decoder.pqmf
        return (bands if pqmf is None else pqmf(bands)), bands, mean, scale


class NonFiniteLoss(Exception):
    pass


@dataclass
class TrainSummary:
    run_dir: Path
    profile: str
    start_step: int
    step: int
    phase: str
    device: str
    processes: int
    losses: dict[str, float] = field(default_factory=dict)
    first_validation_distance: float | None = None
    validation_distance: float | None = None
    steps_per_second: float | None = None

    def text(self) -> str:
        lines = [f"run '{self.run_dir}' ({self.profile}): step {self.start_step} -> {self.step}, "
                 f"phase {self.phase}, {self.device} x {self.processes}"]
        if self.steps_per_second:
            lines.append(f"speed: {self.steps_per_second:.3g} steps/s")
        if self.losses:
            lines.append("losses: " + ", ".join(f"{k} {v:.4g}" for k, v in self.losses.items()))
        if self.validation_distance is not None:
            first = (f" (first {self.first_validation_distance:.4g})"
                     if self.first_validation_distance is not None else "")
            lines.append(f"validation distance: {self.validation_distance:.4g}{first}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- the trainer


class Trainer:
    # Whether runs have the adversarial phase (from train.adversarial_start); a family without
    # a critic trains one phase.
    has_critic = True

    def __init__(self, dataset_dir: Path, run_dir: Path, profile: Profile, checkpoint: dict | None,
                 processes: Processes, device: torch.device) -> None:
        self.run_dir, self.profile, self.processes, self.device = run_dir, profile, processes, device
        cfg = profile.train
        self._open_data(dataset_dir)

        _seed_everything(cfg.seed)  # same initial weights on every rank
        self.model = build_model(profile.model, streaming=False).to(device).train()
        self.discriminator = MultiDiscriminator(cfg, profile.model.channels).to(device).train()
        self.loss = ReconstructionLoss(cfg.stft_scales, profile.model.sample_rate, profile.model.n_band,
                                       cfg.multiband_weight, cfg.mel_weight).to(device)
        self.gen_opt = adam(self.model.parameters(), cfg.learning_rate, device)
        self.dis_opt = adam(self.discriminator.parameters(), cfg.learning_rate, device)
        self.step = 0
        if checkpoint is not None:
            self._load(checkpoint)
        # Ranks draw different posterior noise; rank 0 continues its saved stream.
        if processes.rank > 0:
            torch.manual_seed(cfg.seed + 7919 * processes.rank + self.step)
        self.reconstruct = Reconstruct(self.model)
        self.recon_step: nn.Module = self.reconstruct
        self.dis_step: nn.Module = self.discriminator
        if processes.distributed:
            self.dis_step = self._wrap(self.discriminator)
        self.adversarial = False
        self.set_phase(self.step >= cfg.adversarial_start)
        self._start_records(cfg.validate_every, cfg.checkpoint_every)

    def _start_records(self, validate_every: int, checkpoint_every: int) -> None:
        """Running loss sums, the clock and the validation figures of a fresh or resumed run."""
        self.log_every = max(1, min(50, validate_every, checkpoint_every))
        self._sums: dict[str, tuple[float, int]] = {}
        self._count = 0
        self._clock = time.perf_counter()
        self.first_validation: float | None = None
        self.last_validation: float | None = None
        self.last_losses: dict[str, float] = {}

    # ---- state

    def _open_data(self, dataset_dir: Path) -> None:
        """The dataset, its training segments and the held-out windows validation judges."""
        cfg = self.profile.train
        self.window = training_window(self.profile)
        self.dataset = AudioDataset(dataset_dir)
        _check_dataset(self.dataset, self.profile, self.window)
        self.train_segments, validation = self.dataset.split(cfg.validation_fraction, cfg.seed)
        held_out = SequentialWindows(self.dataset, validation, self.window)
        if len(held_out) == 0:  # held-out audio shorter than a window: judge on training audio
            held_out = SequentialWindows(self.dataset, self.train_segments, self.window)
        self.validation = _spread(held_out, VALIDATION_WINDOWS)

    def _load(self, checkpoint: dict) -> None:
        try:
            self._load_parts(checkpoint)
        except EarlierLayout as exc:
            raise TildekitError(f"the checkpoint in '{self.run_dir}' was {exc}: start a new run dir") from None
        except (KeyError, RuntimeError, ValueError) as exc:
            raise TildekitError(f"the checkpoint in '{self.run_dir}' does not fit the run's profile "
                                f"({str(exc).splitlines()[0]}): start a new run dir") from None
        self.step = int(checkpoint["step"])
        if self.processes.main:
            restore_rng_state(checkpoint["rng"])

    def _load_parts(self, checkpoint: dict) -> None:
        """Load the family's modules and optimisers from ``checkpoint`` (the keys of :meth:`_parts`)."""
        load_weights(self.model, checkpoint["model"])
        self.discriminator.load_state_dict(checkpoint["discriminator"], strict=True)
        self.gen_opt.load_state_dict(checkpoint["generator_optimizer"])
        self.dis_opt.load_state_dict(checkpoint["discriminator_optimizer"])

    def _parts(self) -> dict[str, Any]:
        """The family's modules and optimisers as a checkpoint stores them."""
        return {"model": self.model.state_dict(), "discriminator": self.discriminator.state_dict(),
                "generator_optimizer": self.gen_opt.state_dict(),
                "discriminator_optimizer": self.dis_opt.state_dict()}

    def checkpoint(self) -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "step": self.step, "profile": self.profile.to_yaml(),
                **self._parts(), "rng": rng_state(), "processes": self.processes.world}

    def _wrap(self, module: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        # Buffers are constants (filters, noise tables): no need to sync them every step.
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
            no_buffer_sync = {"forward_sync_buffers": False}
        else:  # torch before the rename
            no_buffer_sync = {"broadcast_buffers": False}
        # Weight norm's (1, C, 1) gains have strides DDP's buckets do not mirror: harmless.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        return DistributedDataParallel(module, device_ids=ids, **no_buffer_sync)

    def set_phase(self, adversarial: bool) -> None:
        """Phase 2 freezes the encoder (DDP must then be rebuilt over the trainable weights)."""
        self.adversarial = adversarial
        self.reconstruct.encoder_frozen = adversarial
        for parameter in self.model.encoder.parameters():
            parameter.requires_grad_(not adversarial)
        if self.processes.distributed:
            self.recon_step = self._wrap(self.reconstruct)

    # ---- one step

    def _reduce(self, values: dict[str, torch.Tensor],
                latent: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
        """Average over ranks; raise NonFiniteLoss (on every rank alike) on NaN or inf, or when
        ``latent`` = (input, posterior mean) is exactly zero for sound in on every rank."""
        parts = [v.detach().float() for v in values.values()]
        if latent is not None:
            # weights blown up by a huge step can leave the encoder giving exactly 0 whatever
            # comes in (seen at learning rate 1e30) while the loss stays finite: training would
            # go on with a model that ignores its input
            x, mean = latent
            parts.append(((mean.detach().abs().amax() == 0) & (x.abs().amax() > 0)).float())
        stacked = torch.stack(parts)
        if self.processes.distributed:
            dist.all_reduce(stacked)
            stacked = stacked / self.processes.world
        numbers = stacked.cpu().tolist()
        if latent is not None and numbers.pop() == 1.0:
            raise NonFiniteLoss("the encoder's latent is exactly zero for sound in (its weights collapsed)")
        for name, number in zip(values, numbers):
            if not math.isfinite(number):
                raise NonFiniteLoss(f"the {name} loss is {number}")
        return dict(zip(values, numbers))

    def _randomise_noise(self) -> None:
        noise = self.model.decoder.noise
        if noise is not None:  # a new stretch of the noise table each step, not always the first
            noise.offset = int(torch.randint(noise.table_length, ()).item())

    def _critic_view(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One random crop of ``train.discriminator_window`` samples, the same in real and generated."""
        length = self.profile.train.discriminator_window
        if length >= x.shape[-1]:
            return x, y
        start = int(torch.randint(x.shape[-1] - length + 1, ()).item())
        return x[..., start:start + length], y[..., start:start + length]

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        cfg = self.profile.train
        x = x.to(self.device, non_blocking=True)
        self._randomise_noise()
        y, y_bands, mean, scale = self.recon_step(x)
        analysis = self.model.encoder.pqmf
        with torch.no_grad():
            x_bands = analysis(x) if analysis is not None else None
        terms = self.loss(x, y, x_bands, y_bands)
        distance = terms["distance"]
        if not self.adversarial:
            weight = kl_weight(self.step, cfg.kl_beta, cfg.kl_warmup)
            kl = kl_divergence(mean, scale)
            loss = distance + weight * kl
            values = self._reduce({"total": loss, **terms, "kl": kl}, (x, mean))
            self.gen_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.gen_opt.step()
            values["kl_weight"] = weight
            return values

        x_seen, y_seen = self._critic_view(x, y)
        real, fake = split_real_fake(self.dis_step(torch.cat([x_seen, y_seen])), x.shape[0])
        adversarial = generator_hinge_loss(fake)
        matching = feature_matching_loss(real, fake)
        loss = distance + adversarial + cfg.feature_matching_weight * matching
        values = self._reduce({"total": loss, **terms, "adversarial": adversarial,
                               "feature_matching": matching}, (x, mean))
        self.gen_opt.zero_grad(set_to_none=True)
        self.dis_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.gen_opt.step()

        self.dis_opt.zero_grad(set_to_none=True)  # drop what the generator's loss left there
        real, fake = split_real_fake(self.dis_step(torch.cat([x_seen, y_seen.detach()])), x.shape[0])
        dis_loss = discriminator_hinge_loss(real, fake)
        values.update(self._reduce({"discriminator": dis_loss}))
        dis_loss.backward()
        self.dis_opt.step()
        return values

    # ---- what rank 0 writes

    def log(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def accumulate(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            total, count = self._sums.get(key, (0.0, 0))
            self._sums[key] = (total + value, count + 1)  # per key: phases log different losses
        self._count += 1
        self.last_losses = values

    def flush_train_record(self) -> None:
        if not self._count:
            return
        elapsed = time.perf_counter() - self._clock
        record = {"kind": "train", "step": self.step, "phase": self.phase_name,
                  **{k: total / count for k, (total, count) in self._sums.items()},
                  "steps_per_second": self._count / elapsed if elapsed > 0 else None,
                  "time": time.time()}
        if self.processes.main:
            self.log(record)
        self._sums, self._count, self._clock = {}, 0, time.perf_counter()

    @property
    def phase_name(self) -> str:
        return "adversarial" if self.adversarial else "representation"

    @torch.no_grad()
    def validate(self) -> float | None:
        """The reconstruction loss (posterior mean, no noise) on the held-out windows; plots.

        The same weighted distance that training lowers, so a falling curve means the model
        generalises what it learns, not that it found a quieter output for another metric.
        """
        if not self.validation:
            return None
        self.model.eval()
        decoder = self.model.decoder
        if decoder.noise is not None:
            decoder.noise.offset = 0
        analysis = self.model.encoder.pqmf
        inputs, outputs, input_bands, output_bands = [], [], [], []
        batch = self.profile.train.batch_size
        for start in range(0, len(self.validation), batch):
            x = torch.stack(self.validation[start:start + batch]).to(self.device)
            bands = decoder.bands_of(self.model.encode(x, 0.0))
            inputs.append(x)
            output_bands.append(bands)
            outputs.append(bands if decoder.pqmf is None else decoder.pqmf(bands))
            if analysis is not None:
                input_bands.append(analysis(x))
        self.model.train()
        # One distance over every window: a quiet window cannot dominate as it would alone.
        x_bands = torch.cat(input_bands) if input_bands else None
        y_bands = torch.cat(output_bands) if input_bands else None
        distance = float(self.loss(torch.cat(inputs), torch.cat(outputs), x_bands, y_bands)["distance"])
        first = (inputs[0][0].mean(0).cpu().numpy(), outputs[0][0].mean(0).cpu().numpy())
        if self.first_validation is None:
            self.first_validation = distance
        self.last_validation = distance
        self.log({"kind": "validation", "step": self.step, "distance": distance, "time": time.time()})
        write_plots(self.run_dir / PLOTS_DIR, read_metrics(self.run_dir), first,
                    self.profile.model.sample_rate)
        return distance

    def save_latent_stats(self) -> None:
        windows = _spread(SequentialWindows(self.dataset, self.dataset.segments(), self.window),
                          STATS_WINDOWS)
        stats = compute_latent_stats(self.model, windows, self.profile.train.batch_size)
        stats.save(self.run_dir / LATENT_STATS_FILE)


# --------------------------------------------------------------------------- plots


def write_plots(folder: Path, records: list[dict[str, Any]],
                example: tuple[np.ndarray, np.ndarray] | None, sample_rate: int) -> None:
    """``losses.png`` (every logged loss against steps) and ``spectrogram.png`` (input vs output)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    train_records = [r for r in records if r.get("kind") == "train"]
    validation = [r for r in records if r.get("kind") == "validation"]
    skip = {"kind", "step", "phase", "time", "steps_per_second", "kl_weight"}
    names = sorted({k for r in train_records for k in r if k not in skip})
    figure, axes = plt.subplots(len(names) + 1, 1, figsize=(8, 2.2 * (len(names) + 1)), sharex=True,
                                squeeze=False)
    for axis, name in zip(axes[:, 0], names):
        points = [(r["step"], r[name]) for r in train_records if r.get(name) is not None]
        if points:
            axis.plot(*zip(*points), ".-", lw=1, ms=3)  # markers: a single point still shows
        axis.set_ylabel(name)
    axis = axes[-1, 0]
    if validation:
        axis.plot([r["step"] for r in validation], [r["distance"] for r in validation], "o-", lw=1)
    axis.set_ylabel("validation\ndistance")
    axis.set_xlabel("step")
    figure.tight_layout()
    _save_figure(figure, folder / "losses.png")
    plt.close(figure)

    if example is None:
        return
    figure, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for axis, signal, title in zip(axes, example, ("input", "reconstruction")):
        spectrum = torch.stft(torch.from_numpy(signal), 1024, 256, window=torch.hann_window(1024),
                              return_complex=True).abs()
        decibels = 20 * torch.log10(spectrum + 1e-5)
        seconds = len(signal) / sample_rate
        axis.imshow(decibels.numpy(), origin="lower", aspect="auto", vmin=-100,
                    vmax=float(decibels.max()),
                    extent=(0.0, seconds, 0.0, sample_rate / 2000))
        axis.set_title(title)
        axis.set_ylabel("kHz")
    axes[-1].set_xlabel("seconds")
    figure.tight_layout()
    _save_figure(figure, folder / "spectrogram.png")
    plt.close(figure)


def _save_figure(figure: Any, path: Path) -> None:
    with atomic_path(path, durable=False) as temporary:  # a figure is cheap to redraw
        figure.savefig(temporary, dpi=80)


# --------------------------------------------------------------------------- entry point


def _prepare(run_dir: Path, profile: Profile | None, resume: bool) -> tuple[Profile, Path | None]:
    """The profile to train and the checkpoint to continue from, after checking the run dir."""
    stored_path = run_dir / PROFILE_FILE
    stored = read_profile(run_dir) if stored_path.is_file() else None
    checkpoint = newest_checkpoint(run_dir) if run_dir.is_dir() else None
    if resume:
        if stored is None:
            raise TildekitError(f"nothing to resume in '{run_dir}' (no {PROFILE_FILE}): start the run "
                                "without --resume")
        if profile is None:
            return stored, checkpoint
        changed = _changed_settings(profile, stored)
        if PHASE_BOUNDARY in changed:
            _check_phase_boundary_move(*changed.pop(PHASE_BOUNDARY), checkpoint)
        fixed = [name for name in changed if name not in RESUMABLE_SETTINGS]
        if fixed:
            shown = "; ".join(f"{name} (run: {changed[name][0]!r}, given: {changed[name][1]!r})"
                              for name in fixed[:4]) + (f"; and {len(fixed) - 4} more" if len(fixed) > 4 else "")
            raise TildekitError(f"--resume cannot change {shown}: fixed for the whole run (only "
                                f"{', '.join(RESUMABLE_SETTINGS)} may change, and {PHASE_BOUNDARY} within phase 1); "
                                "drop that --profile/--set/--batch-size, or start a new run dir")
        return profile, checkpoint
    if checkpoint is not None:
        raise TildekitError(f"'{run_dir}' already holds a run (checkpoint {checkpoint.name}): pass "
                            "--resume to continue it, or choose another run dir")
    if profile is None:
        raise TildekitError("a new run needs a profile: pass --profile NAME")
    return profile, None


def _check_phase_boundary_move(stored: int, given: int, checkpoint: Path | None) -> None:
    """``--resume --set train.adversarial_start=N`` moves the start of phase 2 while the run is in
    phase 1 and N is still ahead: phase 1 then lasts longer or shorter, and nothing it already
    did belongs to phase 2. A run that reached its boundary keeps it (its encoder is frozen and
    its critic has trained)."""
    step = int(load_checkpoint(checkpoint)["step"]) if checkpoint is not None else 0
    if step >= stored:
        raise TildekitError(f"--resume cannot move {PHASE_BOUNDARY} (run: {stored}, given: {given}): the run "
                            f"is at step {step}, already in phase 2; start a new run dir to change it")
    if given <= step:
        raise TildekitError(f"--resume cannot move {PHASE_BOUNDARY} to {given}: the run is at step {step} "
                            f"in phase 1, so the new start of phase 2 must be a later step (> {step})")


def train(dataset_dir: str | Path, run_dir: str | Path, profile: Profile | None,
          steps: int | None = None, resume: bool = False, progress: bool = True,
          device: str = "auto", family_trainers: Mapping[str, type[Trainer]] | None = None) -> TrainSummary:
    """Train (or continue) the run in ``run_dir`` on ``dataset_dir`` until ``steps`` total steps.

    ``steps`` defaults to ``train.max_steps``. ``profile`` may be None with ``resume`` (the run's
    stored profile is used); given with ``resume`` it must equal the stored one.
    ``family_trainers``: the Trainer subclass of each other model family, by profile family
    (the family is known only once the run's stored profile is read); the caller names them,
    so this module imports no family built on it.
    """
    processes = _processes_from_env()
    chosen = choose_device(device, processes.local_rank)
    if processes.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    try:
        return _train(Path(dataset_dir), Path(run_dir), profile, steps, resume, progress,
                      processes, chosen, family_trainers)
    finally:
        if processes.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(dataset_dir: Path, run_dir: Path, profile: Profile | None, steps: int | None, resume: bool,
           progress: bool, processes: Processes, device: torch.device,
           family_trainers: Mapping[str, type[Trainer]] | None = None) -> TrainSummary:
    from tqdm import tqdm

    profile, checkpoint_path = _prepare(run_dir, profile, resume)
    if processes.distributed:
        dist.barrier()  # every rank has looked at the run dir before rank 0 writes to it
    checkpoint = load_checkpoint(checkpoint_path) if checkpoint_path is not None else None
    if checkpoint is not None:
        _resume_with(checkpoint, profile)
    cfg = profile.train
    trainers = {"autoencoder": Trainer, **(family_trainers or {})}
    if profile.family not in trainers:
        raise TildekitError(f"no trainer for the {profile.family!r} model family here: train it with "
                            "`tildekit train` (tildekit.models.families.train)")
    trainer_class = trainers[profile.family]
    trainer = trainer_class(dataset_dir, run_dir, profile, checkpoint, processes, device)
    adversarial_start = cfg.adversarial_start if trainer.has_critic else math.inf
    start = trainer.step
    target = steps if steps is not None else cfg.max_steps
    if target < 1:
        raise TildekitError(f"--steps must be >= 1, got {target}")

    if processes.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for leftover in (run_dir / CHECKPOINT_DIR).glob(".*.tmp"):
            leftover.unlink(missing_ok=True)  # a write cut short by a kill
        (run_dir / PROFILE_FILE).write_text(profile.to_yaml())
        _truncate_metrics(run_dir, start)
    summary = TrainSummary(run_dir, profile.name, start, start, trainer.phase_name, str(device),
                           processes.world)
    if target <= start:
        if processes.main:
            print(f"run '{run_dir}' is already at step {start} (asked for {target}): nothing to do",
                  file=sys.stderr)
        return summary

    global_batch = cfg.batch_size * processes.world
    windows = RandomWindows(trainer.dataset, trainer.train_segments, trainer.window,
                            length=target * global_batch, seed=cfg.seed)
    loader = DataLoader(windows, batch_sampler=StepBatches(start, target, cfg.batch_size, processes),
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        # its own generator: making the iterator must not draw from the global
                        # one, or a resumed run would see different noise than an uninterrupted one
                        generator=torch.Generator().manual_seed(cfg.seed))
    if processes.main and start == 0:
        trainer.validate()  # the untrained baseline
        if adversarial_start == 0:
            trainer.save_latent_stats()

    bar = tqdm(total=target, initial=start, unit="step", dynamic_ncols=True,
               disable=not (progress and processes.main), desc=profile.name)
    done, training_seconds = 0, 0.0  # speed counts training steps, not validation or saving
    try:
        for batch in loader:
            if trainer.step >= adversarial_start and not trainer.adversarial:
                trainer.set_phase(True)
            began = time.perf_counter()
            try:
                values = trainer.train_step(batch)
            except NonFiniteLoss as exc:
                raise TildekitError(_non_finite_message(str(exc), trainer.step + 1, run_dir, dataset_dir,
                                                        cfg.learning_rate)) from None
            trainer.step += 1
            done += 1
            training_seconds += time.perf_counter() - began
            trainer.accumulate(values)
            bar.update(1)
            bar.set_postfix({"phase": trainer.phase_name[:5],
                             **{k: f"{v:.3g}" for k, v in values.items() if k != "kl_weight"}},
                            refresh=False)
            step = trainer.step
            if step % trainer.log_every == 0 or step == target:
                trainer.flush_train_record()
            if not processes.main:
                continue
            if step == adversarial_start:
                trainer.save_latent_stats()  # phase 1 is over: its latent space is final
            if step % cfg.validate_every == 0:
                trainer.validate()
            if step == target and step < adversarial_start:
                trainer.save_latent_stats()  # phase 1 never ended: stats of the latest encoder
            if step % cfg.checkpoint_every == 0 or step == target:
                if step == target and step % cfg.validate_every:
                    trainer.validate()
                write_checkpoint(run_dir, trainer.checkpoint())
    except KeyboardInterrupt:
        saved = newest_checkpoint(run_dir)
        where = (f"the checkpoint of step {int(load_checkpoint(saved)['step'])}" if saved
                 else "the start (no checkpoint yet)")
        raise TildekitError(f"interrupted at step {trainer.step}: continue from {where} with "
                            f"`tildekit train {dataset_dir} {run_dir} --resume`") from None
    finally:
        bar.close()
    summary.step = trainer.step
    summary.phase = trainer.phase_name
    summary.losses = {k: v for k, v in trainer.last_losses.items() if k != "kl_weight"}
    summary.first_validation_distance = trainer.first_validation
    summary.validation_distance = trainer.last_validation
    summary.steps_per_second = done / training_seconds if training_seconds > 0 else None
    return summary


def _resume_with(checkpoint: dict[str, Any], profile: Profile) -> None:
    """Carry the settings changed on ``--resume`` into what the checkpoint restores.

    The optimizers restore their learning rate from the checkpoint: a new ``train.learning_rate``
    replaces it there (the other resumable settings are read from the profile at every step).
    """
    for name in ("generator_optimizer", "discriminator_optimizer"):
        state = checkpoint.get(name)
        if isinstance(state, dict):
            for group in state.get("param_groups", []):
                group["lr"] = profile.train.learning_rate


def _non_finite_message(what: str, step: int, run_dir: Path, dataset_dir: Path, learning_rate: float) -> str:
    """Where the run stopped, what was kept, and a command that goes on with a lower learning rate.

    The loss of step ``s`` is computed with the weights of step ``s - 1``: a checkpoint of that
    step holds the weights that gave the bad loss, and resuming from it would replay the same
    batch on the same weights. Then the command starts a new run dir from the run's profile;
    otherwise it resumes from the (older, good) checkpoint, or from the start if there is none.
    """
    import shlex

    lower = float(f"{learning_rate / 10:.3g}")
    setting = f"train.learning_rate={lower:g}"
    saved = newest_checkpoint(run_dir)
    saved_step = int(load_checkpoint(saved)["step"]) if saved is not None else None
    if saved_step is not None and saved_step >= step - 1:
        fresh = run_dir.with_name(f"{run_dir.name}-lr{lower:g}")
        command = shlex.join(["tildekit", "train", str(dataset_dir), str(fresh), "--profile",
                              str(run_dir / PROFILE_FILE), "--set", setting])
        return (f"training stopped at step {step}: {what}; the newest checkpoint (step {saved_step}, in "
                f"'{saved.parent}') holds the weights that gave it, so resuming would replay it. Start "
                f"again with a lower learning rate: `{command}` (or check the dataset)")
    if saved_step is not None:
        keep = f"the last good checkpoint (step {saved_step}) is kept in '{saved.parent}'"  # type: ignore[union-attr]
    else:
        keep = "no checkpoint had been written yet"
    command = shlex.join(["tildekit", "train", str(dataset_dir), str(run_dir), "--resume", "--set", setting])
    return (f"training stopped at step {step}: {what}; {keep}. Continue with a lower learning rate: "
            f"`{command}` (or check the dataset)")


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop log lines past the checkpoint being resumed: they are about to be replayed."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = [r for r in read_metrics(run_dir) if int(r.get("step", 0)) <= step]
    if step == 0:
        kept = []
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


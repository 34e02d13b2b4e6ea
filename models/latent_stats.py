"""Statistics of a trained encoder's latent space, saved in the run dir as ``latent_stats.json``.

A PCA of the posterior means over the dataset orders latent dimensions by how much of the
material's variation they carry; exporters rotate the latent space with ``components`` so the
first exposed dimension is the most expressive, and patches size their sliders from the
per-dimension ranges. Every per-dimension field is in the PCA basis, in that order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tildekit.errors import TildekitError
from tildekit.models.contract.atomic import atomic_write_text

FILE_NAME = "latent_stats.json"
LOW_PERCENTILE = 0.5  # slider ranges cover the central 99 % of the frames
HIGH_PERCENTILE = 99.5


@dataclass(frozen=True)
class LatentStats:
    mean: list[float]  # (L,) mean posterior mean, in the model's own basis
    components: list[list[float]]  # (L, L) rows = principal axes, most variance first
    variance: list[float]  # (L,) variance explained by each axis
    dim_mean: list[float]  # (L,) per PCA dimension: mean (about 0 by construction)
    dim_std: list[float]
    dim_min: list[float]  # 0.5th percentile
    dim_max: list[float]  # 99.5th percentile
    frames: int = 0  # latent frames the statistics were computed from

    @property
    def size(self) -> int:
        return len(self.mean)

    @property
    def variance_ratio(self) -> list[float]:
        total = float(sum(self.variance))
        return [v / total if total > 0 else 0.0 for v in self.variance]

    def project(self, z: np.ndarray) -> np.ndarray:
        """(frames, L) model-basis latents -> PCA basis."""
        return (np.asarray(z) - np.asarray(self.mean)) @ np.asarray(self.components).T

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def save(self, path: str | Path) -> None:
        """Write atomically: a reader never sees half a file."""
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> LatentStats:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise TildekitError(f"latent statistics '{path}' are unreadable ({exc}): re-run "
                                "`tildekit train ... --resume` to recompute them") from None


def stats_from_latents(latents: np.ndarray) -> LatentStats:
    """Statistics of (frames, L) posterior means."""
    z = np.asarray(latents, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise TildekitError(f"latent statistics need at least 2 latent frames, got shape {z.shape}")
    mean = z.mean(0)
    centered = z - mean
    covariance = centered.T @ centered / (z.shape[0] - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(eigenvalues)[::-1]
    variance = np.clip(eigenvalues[order], 0.0, None)
    components = eigenvectors[:, order].T
    # An eigenvector's sign is arbitrary: fix it so the largest coefficient is positive,
    # which makes the basis reproducible across runs and platforms.
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    projected = centered @ components.T
    return LatentStats(
        mean=mean.tolist(), components=components.tolist(), variance=variance.tolist(),
        dim_mean=projected.mean(0).tolist(), dim_std=projected.std(0).tolist(),
        dim_min=np.percentile(projected, LOW_PERCENTILE, axis=0).tolist(),
        dim_max=np.percentile(projected, HIGH_PERCENTILE, axis=0).tolist(),
        frames=int(z.shape[0]))


@torch.no_grad()
def compute_latent_stats(model: torch.nn.Module, windows: Iterable[torch.Tensor],
                         batch_size: int = 8) -> LatentStats:
    """Encode every window (``(C, T)`` tensors) with the posterior mean and summarise the frames.

    ``model`` is a non-streaming ``AutoEncoder``; its training mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    frames: list[np.ndarray] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        x = torch.stack(batch).to(device)
        mean, _ = model.encode_params(x)  # (B, L, F)
        frames.append(mean.permute(0, 2, 1).reshape(-1, mean.shape[1]).double().cpu().numpy())
        batch.clear()

    try:
        for window in windows:
            batch.append(window)
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
    finally:
        model.train(was_training)
    if not frames:
        raise TildekitError("no audio window to compute latent statistics from")
    return stats_from_latents(np.concatenate(frames))

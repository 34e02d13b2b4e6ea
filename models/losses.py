"""Training losses of phase 1: the multiscale spectral distance and the posterior's KL divergence.

The spectral distance compares magnitude spectrograms at several FFT sizes (``train.stft_scales``),
so both transients (short FFTs) and pitch (long FFTs) count. At each scale it adds

- a log-magnitude L1 term, which weighs quiet partials as much as loud ones, and
- the linear spectral convergence ``||S_y - S_x||_F / ||S_x||_F``, which keeps the loud ones exact,

and averages the scales. It is also the validation metric ("reconstruction distance").
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

_EPS = 1e-7  # floor of the magnitudes: log(0) stays finite on digital silence
_CONVERGENCE_FLOOR = 1e-3  # per-bin magnitude (about -110 dB of a full-scale sine at n_fft 1024)


class MultiScaleSTFTDistance(nn.Module):
    def __init__(self, scales: Sequence[int], overlap: int = 4) -> None:
        super().__init__()
        if not scales:
            raise ValueError("at least one STFT scale is needed")
        self.scales = [int(s) for s in scales]
        self.overlap = overlap
        # Hann windows live as buffers so they follow the module to the training device.
        for n_fft in self.scales:
            self.register_buffer(f"window_{n_fft}", torch.hann_window(n_fft), persistent=False)

    def magnitude(self, x: torch.Tensor, n_fft: int) -> torch.Tensor:
        """(B, C, T) -> (B * C, bins, frames) magnitude spectrogram."""
        flat = x.reshape(-1, x.shape[-1])
        spec = torch.stft(flat, n_fft, hop_length=n_fft // self.overlap,
                          window=getattr(self, f"window_{n_fft}"), center=True,
                          normalized=False, return_complex=True)
        return spec.abs()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance of the reconstruction ``y`` from the target ``x``, both (B, C, T)."""
        total = x.new_zeros(())
        for n_fft in self.scales:
            target = self.magnitude(x, n_fft)
            estimate = self.magnitude(y, n_fft)
            log_l1 = (torch.log(estimate + _EPS) - torch.log(target + _EPS)).abs().mean()
            # The floor keeps a near-silent target (a gap between notes) from turning a
            # faint estimate into a huge ratio that would swamp the batch.
            floor = _CONVERGENCE_FLOOR * target.numel() ** 0.5
            convergence = (torch.linalg.vector_norm(estimate - target)
                           / (torch.linalg.vector_norm(target) + floor))
            total = total + log_l1 + convergence
        return total / len(self.scales)


def kl_divergence(mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, scale²) || N(0, 1)), summed over latent dimensions, averaged over batch and frames.

    ``mean`` and ``scale`` are (B, L, frames), as ``AutoEncoder.encode_params`` returns them.
    """
    variance = scale.pow(2)
    per_dim = 0.5 * (mean.pow(2) + variance - torch.log(variance) - 1.0)
    return per_dim.sum(1).mean()


def kl_weight(step: int, beta: float, warmup: int) -> float:
    """The KL weight at ``step``: ramps linearly from 0 to ``beta`` over ``warmup`` steps."""
    if warmup <= 0:
        return beta
    return beta * min(1.0, step / warmup)

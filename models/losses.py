"""Training losses: the reconstruction distance (full band, sub-bands, mel) and the posterior's KL.

The spectral distance compares magnitude spectrograms at several FFT sizes (``train.stft_scales``),
so both transients (short FFTs) and pitch (long FFTs) count. At each scale it adds

- a log-magnitude L1 term, which weighs quiet partials as much as loud ones, down to a floor of
  -100 dB of a full-scale sine (``metrics.MAGNITUDE_FLOOR``, where `tildekit eval` stops counting
  too): with a floor far below it (1e-7 of the raw magnitude: -175 to -200 dB), bins the eval cannot
  tell apart (digital silence between notes, the empty octave above a sample's bandwidth) dominate
  the log term and an early model spends its steps on them, and
- the linear spectral convergence ``||S_y - S_x||_F / ||S_x||_F``, which keeps the loud ones exact,

and averages the scales.

Training adds two views of the same error (``ReconstructionLoss``):

- the same distance on the PQMF sub-bands (the decoder's output before synthesis against the
  analysis of the input), which gives every band its own level and envelope error, and
- a multi-scale log-mel distance (windows 32 to 2048 with 5 to 320 mel bands, a coarse-to-fine
  spectral envelope). Log-magnitude L1 on fine bins alone scores a quiet constant output above
  any output that follows the input's loudness but not yet its partials, so an early model
  settles on the average spectrum and ignores its latent; pooled mel bands reward following
  the envelope from the first steps.

The trainer validates with the same weighted sum on held-out windows (posterior mean), so the
validation curve measures what training lowers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from tildekit.models.metrics import MAGNITUDE_FLOOR

_CONVERGENCE_FLOOR = 1e-3  # per-bin magnitude (about -110 dB of a full-scale sine at n_fft 1024)


Magnitudes = dict[int, tuple[torch.Tensor, torch.Tensor]]  # n_fft -> (target's, estimate's)


def stft_magnitude(x: torch.Tensor, n_fft: int, window: torch.Tensor) -> torch.Tensor:
    """(B, C, T) -> (B * C, bins, frames): |STFT| with a Hann window, hop ``n_fft / 4``, centred
    with reflection (torch.stft's defaults, as auraloss computes it)."""
    flat = x.reshape(-1, x.shape[-1])
    return torch.stft(flat, n_fft, hop_length=n_fft // 4, window=window, center=True,
                      normalized=False, return_complex=True).abs()


class SpectrogramCache(nn.Module):
    """The magnitude spectrograms of a target and an estimate at several sizes, each computed once.

    The full-band distance and the mel distance read the same STFTs (same sizes, hop, window):
    one STFT per size and signal instead of two (at 48 kHz and batch 4 the mel distance's own
    STFTs were a tenth of a `default` training step).
    """

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.sizes = sorted({int(n) for n in sizes}, reverse=True)
        # Hann windows live as buffers so they follow the module to the training device.
        for n_fft in self.sizes:
            self.register_buffer(f"window_{n_fft}", torch.hann_window(n_fft), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Magnitudes:
        out: Magnitudes = {}
        for n_fft in self.sizes:
            window = getattr(self, f"window_{n_fft}")
            with torch.no_grad():  # the target needs no graph
                target = stft_magnitude(x, n_fft, window)
            out[n_fft] = (target, stft_magnitude(y, n_fft, window))
        return out


class MultiScaleSTFTDistance(nn.Module):
    def __init__(self, scales: Sequence[int]) -> None:
        super().__init__()
        if not scales:
            raise ValueError("at least one STFT scale is needed")
        self.scales = [int(s) for s in scales]
        self.spectrograms = SpectrogramCache(self.scales)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance of the reconstruction ``y`` from the target ``x``, both (B, C, T)."""
        return self.from_magnitudes(self.spectrograms(x, y))

    def from_magnitudes(self, magnitudes: Magnitudes) -> torch.Tensor:
        """The distance from spectrograms already computed (``magnitudes`` holds every scale)."""
        parts = []
        for n_fft in self.scales:
            target, estimate = magnitudes[n_fft]
            # relative to a full-scale sine's peak bin (the Hann window sums to n / 2); added, not
            # clamped as the eval does, so a bin under the floor still gets a gradient
            log_floor = MAGNITUDE_FLOOR * n_fft / 2
            log_l1 = (torch.log(estimate + log_floor) - torch.log(target + log_floor)).abs().mean()
            # The floor keeps a near-silent target (a gap between notes) from turning a
            # faint estimate into a huge ratio that would swamp the batch.
            floor = _CONVERGENCE_FLOOR * target.numel() ** 0.5
            convergence = (torch.linalg.vector_norm(estimate - target)
                           / (torch.linalg.vector_norm(target) + floor))
            parts.append(log_l1 + convergence)
        return torch.stack(parts).mean()


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


# (window, mel bands) per scale: few bands at short windows (envelope), many at long ones
MEL_SCALES = ((32, 5), (64, 10), (128, 20), (256, 40), (512, 80), (1024, 160), (2048, 320))
_MEL_MAGNITUDE_FLOOR = 1e-5  # per-bin magnitude floor before the mel sum (power 1e-10, about -100 dB)


class MultiScaleMelDistance(nn.Module):
    """Mean log-mel-magnitude L1 over the scales of ``MEL_SCALES`` that fit ``max_window``.

    At each scale: ``mean |ln(M |X|) - ln(M |Y|)|`` with ``M`` librosa's mel filterbank (Slaney
    area-normalised bands from 0 Hz to Nyquist) and the magnitudes floored at 1e-5; what
    auraloss's ``STFTLoss(scale="mel", w_sc=0, w_log_mag=1, eps=1e-10)`` computes
    (tests/test_train.py checks the two agree), but from spectrograms the full-band distance
    shares, and without auraloss's phase (``angle``) of every STFT, which no term here uses.
    """

    def __init__(self, sample_rate: int, max_window: int) -> None:
        super().__init__()
        import librosa

        self.scales: list[int] = []
        for n, bands in MEL_SCALES:
            if n > max_window:
                continue
            bank = librosa.filters.mel(sr=sample_rate, n_fft=n, n_mels=bands)
            # at high rates a short window's lowest mel bands fall between FFT bins: an empty band
            # has zero magnitude, log 0 is -inf and the loss NaN. Such a scale is left out.
            if not bool((bank.sum(-1) > 0).all()):
                continue
            self.scales.append(n)
            self.register_buffer(f"bank_{n}", torch.from_numpy(bank), persistent=False)
        if not self.scales:
            raise ValueError(f"no mel scale fits {sample_rate} Hz and windows up to {max_window}")
        self.spectrograms = SpectrogramCache(self.scales)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.from_magnitudes(self.spectrograms(x, y))

    def from_magnitudes(self, magnitudes: Magnitudes) -> torch.Tensor:
        parts = []
        for n_fft in self.scales:
            bank = getattr(self, f"bank_{n_fft}")
            target, estimate = magnitudes[n_fft]
            mel_target = torch.matmul(bank, target.clamp(min=_MEL_MAGNITUDE_FLOOR))
            mel_estimate = torch.matmul(bank, estimate.clamp(min=_MEL_MAGNITUDE_FLOOR))
            parts.append((torch.log(mel_estimate) - torch.log(mel_target)).abs().mean())
        return torch.stack(parts).mean()


class ReconstructionLoss(nn.Module):
    """Phase-1 distance: full band + weighted sub-band and mel terms (see the module docstring)."""

    def __init__(self, scales: Sequence[int], sample_rate: int, n_band: int, multiband_weight: float,
                 mel_weight: float) -> None:
        super().__init__()
        self.fullband = MultiScaleSTFTDistance(scales)
        self.multiband = (MultiScaleSTFTDistance(sorted({max(16, s // n_band) for s in scales}, reverse=True))
                          if n_band > 1 and multiband_weight > 0 else None)
        self.mel = MultiScaleMelDistance(sample_rate, max(scales)) if mel_weight > 0 else None
        # the full-band signals' spectrograms, once per size for both full-band terms
        self.spectrograms = SpectrogramCache([*scales, *(self.mel.scales if self.mel is not None else [])])
        self.multiband_weight, self.mel_weight = multiband_weight, mel_weight

    def forward(self, x: torch.Tensor, y: torch.Tensor, x_bands: torch.Tensor | None,
                y_bands: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The weighted sum under ``distance`` and each term under its name."""
        magnitudes = self.spectrograms(x, y)
        terms = {"fullband": self.fullband.from_magnitudes(magnitudes)}
        total = terms["fullband"]
        if self.multiband is not None and x_bands is not None and y_bands is not None:
            terms["multiband"] = self.multiband(x_bands, y_bands)
            total = total + self.multiband_weight * terms["multiband"]
        if self.mel is not None:
            terms["mel"] = self.mel.from_magnitudes(magnitudes)
            total = total + self.mel_weight * terms["mel"]
        return {"distance": total, **terms}

"""Pseudo-QMF filter bank: splits audio into ``n_band`` critically sampled sub-bands and back.

A cosine-modulated bank built from one linear-phase low-pass prototype of ``N = n_band *
taps_per_band`` taps (Kaiser window, cutoff tuned for near-perfect reconstruction). Analysis
is a strided convolution, synthesis a transposed one, both streaming-safe layers.

Padding, chosen so that analysis followed by synthesis has **zero** delay on a whole signal
(the two linear-phase filters delay by ``N - 1`` in total) while the analysis decimates at
phase 0 of each filter's output (any other phase breaks the aliasing cancellation)::

    synthesis filter:          z zeros, then the N taps; conv-transpose padding p = (N + z - M) / 2
    analysis conv (stride M):  keeps sample q of each filter's output, q = N - 1 - left
    whole-signal delay:        (N - 1) - q - p + z = 0   =>   q = (N + M) / 2 - 1 + z / 2
    phase 0:                   q % M == 0, which picks the smallest even z
    length T / M:              left + right = N - M     =>   right = q + 1 - M

When streaming, the ``right`` and ``p`` samples of future become delay, which the layers
report like any other.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.optimize import minimize_scalar
from scipy.signal import firwin

from tildekit.models.streaming import CachePad, Layers


def _cosine_modulate(h: np.ndarray, n_band: int) -> np.ndarray:
    n_taps = len(h)
    n = np.arange(n_taps)
    k = np.arange(n_band)[:, None]
    phase = (2 * k + 1) * math.pi / (2 * n_band) * (n - (n_taps - 1) / 2) + (-1.0) ** k * math.pi / 4
    return 2 * h * np.cos(phase)


def _round_trip(h: np.ndarray, n_band: int, x: np.ndarray) -> np.ndarray:
    """Analysis, decimation, expansion and synthesis of ``x``, aligned (delay N - 1 removed)."""
    bank = _cosine_modulate(h, n_band)
    y = np.zeros(len(x) + 2 * len(h))
    for filt in bank:
        v = np.convolve(x, filt)
        kept = np.zeros_like(v)
        kept[::n_band] = v[::n_band]
        out = np.convolve(kept, filt[::-1])
        y[: len(out)] += n_band * out
    return y[len(h) - 1: len(h) - 1 + len(x)]


@functools.cache
def design_prototype(n_band: int, taps: int) -> np.ndarray:
    """Kaiser-windowed low-pass, cutoff and window searched for the best reconstruction.

    The score is the round trip itself on a fixed noise signal: largest error after the
    best overall gain, which is then folded into the prototype.
    """
    x = np.random.default_rng(0).standard_normal(64 * n_band + 2 * taps)
    core = slice(taps, len(x) - taps)

    def error(h: np.ndarray) -> tuple[float, float]:
        y = _round_trip(h, n_band, x)[core]
        gain = float(y @ x[core] / (x[core] @ x[core]))
        return float(np.max(np.abs(y - gain * x[core]))), gain

    best: tuple[float, np.ndarray] | None = None
    for beta in (5.0, 6.0, 7.0, 8.0, 9.0, 10.0):
        result = minimize_scalar(lambda c, beta=beta: error(firwin(taps, c / n_band, window=("kaiser", beta)))[0],
                                 bounds=(0.4, 0.7), method="bounded", options={"xatol": 1e-5})
        h = firwin(taps, result.x / n_band, window=("kaiser", beta))
        err, gain = error(h)
        if best is None or err < best[0]:
            best = (err, h / math.sqrt(gain))
    assert best is not None
    return best[1]


def bank_geometry(n_band: int, n_taps: int) -> tuple[int, int, int]:
    """(analysis left pad, analysis right pad, synthesis leading zeros) for a zero-delay round trip."""
    for zeros in range(0, 2 * n_band, 2):
        q = (n_taps + n_band) // 2 - 1 + zeros // 2
        if q % n_band == 0:
            return n_taps - 1 - q, q + 1 - n_band, zeros
    raise AssertionError("unreachable: some even z < 2M always fits")


def cosine_bank(n_band: int, taps_per_band: int) -> np.ndarray:
    """(n_band, N) analysis filters h_k (convolution form)."""
    return _cosine_modulate(design_prototype(n_band, n_band * taps_per_band), n_band)


def fix_filters(conv: nn.Module, weight: torch.Tensor) -> None:
    """Make ``conv.weight`` a constant buffer holding ``weight``.

    The bank is a pure function of the profile: as a buffer it is never trained (no optimizer
    or ``requires_grad_`` toggle can reach it), never saved, and the streaming build's
    polyphase copies, computed from it at construction, always match what runs in training.
    """
    del conv.weight
    conv.register_buffer("weight", weight, persistent=False)


class PQMFAnalysis(nn.Module):
    """(B, C, T) audio -> (B, C * M, T / M) sub-bands, band-major within each channel."""

    def __init__(self, layers: Layers, channels: int, n_band: int, taps_per_band: int, delay_in: int = 0):
        super().__init__()
        self.n_band = n_band
        filters = cosine_bank(n_band, taps_per_band)
        n_taps = filters.shape[-1]
        left, right, _ = bank_geometry(n_band, n_taps)
        padding = (left, right)
        self.conv, self.delay = layers.conv(channels, channels * n_band, n_taps, delay_in,
                                            stride=n_band, groups=channels, bias=False, padding=padding)
        # conv1d correlates: convolution by h_k is correlation by the reversed filter
        weight = torch.tensor(filters[:, ::-1].copy(), dtype=torch.float32).unsqueeze(1)
        fix_filters(self.conv, weight.repeat(channels, 1, 1))
        # polyphase form (fixed filters, so precomputing it is safe): tap n = j * M + r reads
        # phase r of block t + j, i.e. a stride-1 conv over M phase channels with N / M taps
        polyphase = self.conv.weight.detach().reshape(channels * n_band, n_taps // n_band, n_band)
        self.register_buffer("polyphase", polyphase.transpose(1, 2).contiguous(), persistent=False)
        self.channels = channels
        self.streaming = layers.streaming

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Strided conv by N-tap filters == stride-1 conv of the (C * M, T / M) phase blocks.

        PyTorch runs the strided single-channel conv on its slow im2col path; this is 1.6-2x
        faster (benchmarks/models.py) and exact up to float summation order. Streaming builds
        only: the training build keeps the plain conv (the polyphase form there broke
        DistributedDataParallel training, tests/test_train.py, cause not yet understood).
        """
        if not self.streaming:
            return self.conv(x)
        x = self.conv.padded(x)
        batch, blocks = x.shape[0], x.shape[-1] // self.n_band
        x = x[..., : blocks * self.n_band].reshape(batch, self.channels, blocks, self.n_band)
        x = x.transpose(2, 3).reshape(batch, self.channels * self.n_band, blocks)
        return F.conv1d(x, self.polyphase, None, 1, 0, 1, self.channels)

    def reset_state(self) -> None:
        self.conv.reset_state()


class PQMFSynthesis(nn.Module):
    """(B, C * M, T / M) sub-bands -> (B, C, T) audio."""

    def __init__(self, layers: Layers, channels: int, n_band: int, taps_per_band: int, delay_in: int = 0):
        super().__init__()
        self.n_band = n_band
        filters = cosine_bank(n_band, taps_per_band)
        n_taps = filters.shape[-1]
        _, _, zeros = bank_geometry(n_band, n_taps)
        self.conv, self.delay = layers.conv_transpose(channels * n_band, channels, n_band, delay_in,
                                                      kernel_size=n_taps + zeros, groups=channels,
                                                      bias=False)
        # synthesis filters g_k = reversed h_k, after z zeros; conv_transpose applies them as
        # convolution. The factor M restores the energy lost by decimation.
        synthesis = np.concatenate([np.zeros((n_band, zeros)), filters[:, ::-1]], axis=1)
        weight = torch.tensor(n_band * synthesis, dtype=torch.float32).unsqueeze(1)
        fix_filters(self.conv, weight.repeat(channels, 1, 1))
        self.channels = channels
        self.frames = None
        if layers.streaming:
            # polyphase form: output phase r of block u sums taps j * M + r of input frames
            # u - j, a stride-1 conv over the last J frames (J = taps rounded up to blocks).
            # Its state is those J - 1 input frames instead of conv_transpose's output overlap.
            blocks = -(-weight.shape[-1] // n_band)
            taps = torch.zeros(channels * n_band, blocks * n_band)
            taps[:, : weight.shape[-1]] = self.conv.weight.detach()[:, 0]
            taps = taps.reshape(channels, n_band, blocks, n_band).permute(0, 3, 1, 2).flip(-1)
            self.register_buffer("polyphase", taps.reshape(channels * n_band, n_band, blocks).contiguous(),
                                 persistent=False)
            self.frames = CachePad(channels * n_band, blocks - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.frames
        if frames is None:
            return self.conv(x)
        # streaming: 1.5-3x faster than the strided conv_transpose (benchmarks/models.py)
        batch, length = x.shape[0], x.shape[-1]
        y = F.conv1d(frames(x), self.polyphase, None, 1, 0, 1, self.channels)
        return y.reshape(batch, self.channels, self.n_band, length).transpose(2, 3).reshape(
            batch, self.channels, length * self.n_band)

    def reset_state(self) -> None:
        self.conv.reset_state()
        frames = self.frames
        if frames is not None:
            frames.reset_state()

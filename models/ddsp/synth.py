"""The synthesiser: an additive harmonic oscillator and frame-wise filtered noise, both streaming.

Controls arrive once per frame; frame ``k`` is reached at the last sample of block ``k``
(samples ``k * hop .. (k + 1) * hop - 1``), linearly from frame ``k - 1``::

    control   c[k-1]                 c[k]
    block k    |-- (1 - w) c[k-1] + w c[k],  w = (j + 1) / hop --|

so block ``k`` needs nothing after frame ``k``: a call of ``F`` frames renders ``F * hop``
samples and keeps the last frame (``previous``) for the next call. A whole signal is one call
from zero state, so buffers of whole frames reproduce it exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from tildekit.models.noise import NoiseTable
from tildekit.models.streaming import MAX_BATCH_SIZE, Stateful

TWO_PI = 2.0 * math.pi


class Harmonic(Stateful):
    """Sum of ``n_harmonics`` sines at integer multiples of f0, band-limited below Nyquist.

    The fundamental's phase runs in float64 and is wrapped modulo 2π at every frame start
    (``phase`` keeps it between calls), one frame after another in every build, so it is the
    same to the bit in one call or many and stays exact over any run length; harmonic ``h``
    is ``sin(h * phase)`` in float32. A harmonic is
    silent for a whole block if it would pass Nyquist anywhere in that block (f0 moves
    linearly, so its maximum is at one end): no partial ever aliases.
    """

    state_names = ("previous", "phase")

    def __init__(self, n_harmonics: int, sample_rate: int, hop: int, streaming: bool) -> None:
        super().__init__()
        self.n_harmonics = n_harmonics
        self.sample_rate = sample_rate
        self.hop = hop
        self.streaming = streaming
        self.nyquist = sample_rate / 2.0
        self.two_pi = TWO_PI  # TorchScript reads no globals
        numbers = torch.arange(1, n_harmonics + 1, dtype=torch.float64)
        self.register_buffer("numbers_f", numbers.float(), persistent=False)
        ramp = torch.arange(1, hop + 1, dtype=torch.float64) / hop
        self.register_buffer("ramp", ramp, persistent=False)
        # the last frame's (f0, amplitudes) and the phase at the next block's start
        self.register_buffer("previous", torch.zeros(MAX_BATCH_SIZE, 1 + n_harmonics), persistent=False)
        self.register_buffer("phase", torch.zeros(MAX_BATCH_SIZE, 1, dtype=torch.float64), persistent=False)

    def forward(self, f0: torch.Tensor, amplitudes: torch.Tensor) -> torch.Tensor:
        """f0 (B, F) in Hz, amplitudes (B, n_harmonics, F) -> (B, 1, F * hop)."""
        batch, frames = f0.shape
        controls = torch.cat([f0.unsqueeze(1), amplitudes], 1)  # (B, 1 + K, F)
        if self.streaming:
            last = self.previous[:batch]
            start_phase = self.phase[:batch]
        else:
            last = torch.zeros(batch, 1 + self.n_harmonics, dtype=f0.dtype, device=f0.device)
            start_phase = torch.zeros(batch, 1, dtype=torch.float64, device=f0.device)
        before = torch.cat([last.unsqueeze(-1), controls[..., :-1]], -1)  # frame k - 1 for each k

        with torch.no_grad():  # f0 is an input, never learned: the phase needs no gradient
            f_before = before[:, 0].double()
            f_now = controls[:, 0].double()
            per_sample = f_before.unsqueeze(-1) + (f_now - f_before).unsqueeze(-1) * self.ramp  # (B, F, H)
            within = torch.cumsum(per_sample, -1) * (self.two_pi / self.sample_rate)
            # block starts one frame after another, wrapped at each: the same additions in the
            # same order whether the frames come in one call or many, so the phase is bit-exact
            starts = []
            start = start_phase
            for k in range(frames):
                starts.append(start)
                start = torch.remainder(start + within[:, k, -1:], self.two_pi)
            phase = torch.remainder(torch.cat(starts, -1).unsqueeze(-1) + within, self.two_pi)
            # the float32 product is exact enough for any harmonic (|error| < h * 2.4e-7 rad)
            # and, fed the same phase, identical in every build
            sines = torch.sin(phase.float().unsqueeze(-1) * self.numbers_f)  # (B, F, H, K)
            highest = torch.maximum(f_before, f_now).float().unsqueeze(-1) * self.numbers_f
            audible = (highest < self.nyquist).to(f0.dtype)  # (B, F, K)
            if self.streaming:
                if self.functional:
                    self.phase = start
                else:
                    start_phase.copy_(start)

        amp_before = before[:, 1:].transpose(1, 2) * audible  # (B, F, K)
        amp_now = amplitudes.transpose(1, 2) * audible
        # sum_h sin_h * ((1 - w) a_h[k-1] + w a_h[k]) as one matmul per block
        ends = torch.matmul(sines, torch.stack([amp_before, amp_now], -1))  # (B, F, H, 2)
        weight = self.ramp.to(f0.dtype)
        audio = ends[..., 0] * (1.0 - weight) + ends[..., 1] * weight  # (B, F, H)
        if self.streaming:
            tail = controls[..., -1].detach()
            if self.functional:
                self.previous = tail
            else:
                last.copy_(tail)
        return audio.reshape(batch, 1, frames * self.hop)

    def reset_state(self) -> None:
        self.previous.zero_()
        self.phase.zero_()


class FilteredNoise(Stateful):
    """White noise through one linear-phase FIR per frame, overlap-added across blocks.

    Each frame's ``bands`` magnitudes (linearly spaced from 0 to Nyquist) are a zero-phase
    response; its inverse FFT, centred and Hann-windowed, is an FIR of ``2 * (bands - 1)``
    taps. Block ``k`` of noise filtered by it rings for ``taps - 1`` samples into block
    ``k + 1`` (kept in ``tail``; the taps never exceed hop + 1, so one block holds it).
    Noise comes from a fixed table read at absolute positions (models/noise.py).
    """

    state_names = ("tail",)

    def __init__(self, bands: int, hop: int, streaming: bool) -> None:
        super().__init__()
        self.bands = bands
        self.hop = hop
        self.taps = 2 * (bands - 1)
        assert self.taps - 1 <= hop, "the FIR must ring for at most one block"
        self.n_fft = 1 << (hop + self.taps - 2).bit_length()
        self.streaming = streaming
        self.source = NoiseTable(1, 0, streaming, "uniform", seed=11)
        self.register_buffer("window", torch.hann_window(self.taps, periodic=False), persistent=False)
        self.register_buffer("tail", torch.zeros(MAX_BATCH_SIZE, self.taps - 1), persistent=False)

    def forward(self, magnitudes: torch.Tensor) -> torch.Tensor:
        """(B, bands, F) -> (B, 1, F * hop)."""
        batch, _, frames = magnitudes.shape
        impulse = torch.fft.irfft(magnitudes.transpose(1, 2).to(torch.complex64), self.taps)
        impulse = torch.roll(impulse, [self.taps // 2], [-1]) * self.window  # causal, linear phase
        noise = self.source(batch, frames * self.hop, 0).reshape(batch, frames, self.hop)
        filtered = torch.fft.irfft(torch.fft.rfft(impulse, self.n_fft) * torch.fft.rfft(noise, self.n_fft),
                                   self.n_fft)
        head = filtered[..., : self.hop]
        ring = filtered[..., self.hop: self.hop + self.taps - 1]  # (B, F, taps - 1)
        if self.streaming:
            carried = self.tail[:batch]
        else:
            carried = torch.zeros(batch, self.taps - 1, dtype=head.dtype, device=head.device)
        rings = torch.cat([carried.unsqueeze(1), ring[:, :-1]], 1)
        audio = head + nn.functional.pad(rings, (0, self.hop - self.taps + 1))
        if self.streaming:
            last = ring[:, -1].detach()
            if self.functional:
                self.tail = last
            else:
                carried.copy_(last)
        return audio.reshape(batch, 1, frames * self.hop)

    def reset_state(self) -> None:
        self.tail.zero_()
        self.source.reset_state()

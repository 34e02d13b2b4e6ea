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

import torch
import torch.nn as nn

from tildekit.models.ddsp.dft import irfft_matrix, rfft_matrix, sine_tables, traced_only
from tildekit.models.noise import NoiseTable
from tildekit.models.streaming import MAX_BATCH_SIZE, Stateful

# single-cycle wavetable length: images of linear interpolation at (h / TABLE_SIZE)^2 of partial h
TABLE_SIZE = 2048
PHASE_ONE = 1 << 44  # one cycle in the block starts' fixed point


class Harmonic(Stateful):
    """Sum of ``n_harmonics`` sines at integer multiples of f0, band-limited below Nyquist.

    Each block reads two single-cycle wavetables (the harmonic amplitudes of frames ``k - 1``
    and ``k``, each built by one inverse FFT of ``TABLE_SIZE`` points) at the fundamental's
    phase with linear interpolation, and crossfades them as the amplitudes glide: the cost per
    sample does not grow with the number of harmonics, and no sine is evaluated per sample.
    The tables hold only the harmonics that stay under Nyquist over the whole block (f0 moves
    linearly, so its maximum is at one end), pre-emphasised by the interpolation's droop so
    every partial keeps its level; the interpolation's images sit ``(h / TABLE_SIZE)^2`` below
    partial ``h`` (-52 dB for the 100th).

    The phase, in cycles: within a block the float64 cumulative sum of the per-sample f0; the
    block starts advance by each block's increment rounded to 2^-44 cycle and add up in int64,
    which is exact and associative, so one call and many calls give the same phase to the bit
    and it never drifts, over any run length.
    """

    state_names = ("previous", "phase")

    def __init__(self, n_harmonics: int, sample_rate: int, hop: int, streaming: bool) -> None:
        super().__init__()
        if 2 * n_harmonics >= TABLE_SIZE:
            raise ValueError(f"at most {TABLE_SIZE // 2 - 1} harmonics fit a table of {TABLE_SIZE}")
        self.n_harmonics = n_harmonics
        self.sample_rate = sample_rate
        self.hop = hop
        self.streaming = streaming
        self.nyquist = sample_rate / 2.0
        self.table_size = TABLE_SIZE
        self.phase_one = PHASE_ONE
        # the phase arithmetic's scales, in table points (exact: powers of two times 1 / rate)
        self.table_points = float(TABLE_SIZE)
        self.points_per_hz_sample = (1.0 / sample_rate) * TABLE_SIZE
        self.unit_per_point = float(PHASE_ONE // TABLE_SIZE)
        self.point_per_unit = 1.0 / (PHASE_ONE // TABLE_SIZE)
        # row 0 of the controls is f0, here harmonic 0: its coefficient 0 is the tables' DC
        numbers = torch.arange(0, n_harmonics + 1, dtype=torch.float64)
        self.register_buffer("numbers", numbers.float(), persistent=False)
        # sin(2 pi h n / N) = irfft of -i N / 2 at bin h; linear interpolation scales partial h
        # by sinc(h / N)^2, undone here
        droop = torch.sinc(numbers / TABLE_SIZE).pow(2)
        gains = torch.where(numbers > 0, -0.5 * TABLE_SIZE / droop, torch.zeros_like(numbers))
        self.register_buffer("gains", torch.complex(torch.zeros_like(gains), gains).to(torch.complex64),
                             persistent=False)
        ramp = torch.arange(1, hop + 1, dtype=torch.float64) / hop
        self.register_buffer("ramp", ramp, persistent=False)
        # per sample, the weight of frame k's table against frame k - 1's: (hop, 1)
        self.register_buffer("crossfade", ramp.float().unsqueeze(-1), persistent=False)
        # flat offsets of the four values a sample reads: points i, i + 1 of each table
        self.register_buffer("corners", torch.tensor([0, 1, TABLE_SIZE + 2, TABLE_SIZE + 3]), persistent=False)
        # the last frame's (f0, amplitudes) and the phase at the next block's start (fixed point)
        self.register_buffer("previous", torch.zeros(MAX_BATCH_SIZE, 1 + n_harmonics), persistent=False)
        self.register_buffer("phase", torch.zeros(MAX_BATCH_SIZE, 1, dtype=torch.int64), persistent=False)

    def forward(self, f0: torch.Tensor, amplitudes: torch.Tensor) -> torch.Tensor:
        """f0 (B, F) in Hz, amplitudes (B, n_harmonics, F) -> (B, 1, F * hop)."""
        batch, frames = f0.shape
        controls = torch.cat([f0.unsqueeze(1), amplitudes], 1)  # (B, 1 + K, F)
        if self.streaming:
            last = self.previous[:batch]
            start_phase = self.phase[:batch]
        else:
            last = torch.zeros(batch, 1 + self.n_harmonics, dtype=f0.dtype, device=f0.device)
            start_phase = torch.zeros(batch, 1, dtype=torch.int64, device=f0.device)
        before = torch.cat([last.unsqueeze(-1), controls[..., :-1]], -1)  # frame k - 1 for each k

        with torch.no_grad():  # f0 is an input, never learned: the phase needs no gradient
            f_before = before[:, 0].double()
            f_now = controls[:, 0].double()
            per_sample = torch.lerp(f_before.unsqueeze(-1), f_now.unsqueeze(-1), self.ramp)  # (B, F, H)
            # phases in table points (N per cycle): N is a power of two, so every product and
            # remainder below is the one in cycles scaled exactly, bit for bit
            within = torch.cumsum(per_sample, -1) * self.points_per_hz_sample
            # the fraction of a cycle each block advances (remainder: in [0, N] for any sign)
            steps = torch.round(torch.remainder(within[..., -1], self.table_points) * self.unit_per_point).long()
            ends = start_phase + torch.cumsum(steps, -1)
            # wrapped to one cycle; the counts are never negative, so a remainder is the bit mask
            # (an ONNX opset 17 op, where BitwiseAnd is not)
            starts = torch.remainder(ends - steps, self.phase_one)
            # in [0, N]: the tables repeat their first 2 points
            position = torch.remainder(starts.double().unsqueeze(-1) * self.point_per_unit + within, self.table_points)
            index = position.long()
            fraction = (position - index.double()).float()
            # flat positions of the 4 values each sample reads, (B, F, H, 4); the clamp keeps a
            # NaN or infinite f0 inside the tables (the output is then NaN-free garbage, not a crash)
            taps = index.clamp(0, self.table_size).unsqueeze(-1) + self.corners
            highest = torch.maximum(f_before, f_now).float().unsqueeze(-1) * self.numbers
            audible = (highest < self.nyquist).to(f0.dtype).unsqueeze(-2)  # (B, F, 1, 1 + K)
            if self.streaming:
                end = torch.remainder(ends[:, -1:], self.phase_one)
                if self.functional:
                    self.phase = end
                else:
                    start_phase.copy_(end)

        pair = torch.stack([before, controls], 1).permute(0, 3, 1, 2) * audible  # (B, F, 2, 1 + K)
        if self.functional:
            tables = pair @ self.traced_tables()
        else:
            tables = torch.fft.irfft(pair * self.gains, self.table_size)  # (B, F, 2, N)
            tables = torch.cat([tables, tables[..., :2]], -1)
        # each block reads its own two tables: rows of (block, both tables)
        rows = tables.reshape(batch * frames, 2 * self.table_size + 4)
        values = rows.gather(1, taps.reshape(batch * frames, 4 * self.hop)).view(batch, frames, self.hop, 4)
        points = torch.lerp(values[..., :2], values[..., 2:], self.crossfade)  # (B, F, H, 2)
        audio = torch.lerp(points[..., 0], points[..., 1], fraction)
        if self.streaming:
            tail = controls[..., -1].detach()
            if self.functional:
                self.previous = tail
            else:
                last.copy_(tail)
        return audio.reshape(batch, 1, frames * self.hop)

    @traced_only
    def traced_tables(self) -> torch.Tensor:
        """(1 + K, N + 2): the inverse FFT of ``forward`` as one matrix (for ONNX)."""
        return sine_tables(self.n_harmonics, self.table_size)

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
        # magnitudes -> the FIR's spectrum at n_fft points is linear: inverse FFT, centring
        # (causal, linear phase), Hann window and FFT folded into one (bands, bins) matrix,
        # stored as (real, imaginary) pairs
        eye = torch.eye(bands, dtype=torch.float64)
        impulse = torch.roll(torch.fft.irfft(eye.to(torch.complex128), self.taps), [self.taps // 2], [-1])
        impulse = impulse * torch.hann_window(self.taps, periodic=False, dtype=torch.float64)
        response = torch.view_as_real(torch.fft.rfft(impulse, self.n_fft)).reshape(bands, -1)
        self.register_buffer("response", response.float(), persistent=False)
        self.register_buffer("tail", torch.zeros(MAX_BATCH_SIZE, self.taps - 1), persistent=False)

    def forward(self, magnitudes: torch.Tensor) -> torch.Tensor:
        """(B, bands, F) -> (B, 1, F * hop)."""
        batch, _, frames = magnitudes.shape
        response = torch.matmul(magnitudes.transpose(1, 2), self.response).view(batch, frames, -1, 2)
        noise = self.source(batch, frames * self.hop, 0).reshape(batch, frames, self.hop)
        if self.functional:
            filtered = self.traced_filter(response, noise)
        else:
            filtered = torch.fft.irfft(torch.view_as_complex(response) * torch.fft.rfft(noise, self.n_fft),
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

    @traced_only
    def traced_filter(self, response: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The FFT filtering of ``forward`` as real DFT matrix products (for ONNX): the first
        ``hop + taps - 1`` samples, all that ``forward`` reads."""
        bins = self.n_fft // 2 + 1
        spectrum = noise @ rfft_matrix(self.hop, self.n_fft).float()
        re, im = spectrum[..., :bins], spectrum[..., bins:]
        gain_re, gain_im = response[..., 0], response[..., 1]
        product = torch.cat([gain_re * re - gain_im * im, gain_re * im + gain_im * re], -1)
        return product @ irfft_matrix(self.n_fft, self.hop + self.taps - 1).float()

    def reset_state(self) -> None:
        self.tail.zero_()
        self.source.reset_state()

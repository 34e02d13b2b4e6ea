"""Frame-rate features of audio, both causal: A-weighted loudness (dB) and a YIN pitch tracker.

Frame ``k`` describes the audio strictly before sample ``k * hop``: its analysis windows end
there. Each call prepends the last ``context`` samples of the previous one (a cached padding,
zeros for a whole signal), so a signal cut into buffers of whole hops gives exactly the frames
of one pass, with no lookahead and no delay::

    padded:  [ context (past or zeros) | x0 x1 ... x(T-1) ]
    frame k: window ending just before x(k * hop), k = 0 .. T / hop - 1

The last hop of a buffer is only read by the next call's first frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tildekit.models.config import DDSPConfig
from tildekit.models.ddsp.dft import frame_positions, irfft_matrix, lower_triangle, rfft_matrix, traced_only
from tildekit.models.streaming import MAX_BATCH_SIZE, CachePad, Stateful

LOUDNESS_FLOOR_DB = -120.0


def a_weighting(frequencies: torch.Tensor) -> torch.Tensor:
    """IEC 61672 A-weighting as a power gain (1 at 1 kHz)."""
    f2 = frequencies.double() ** 2
    response = (12194.0 ** 2 * f2 ** 2) / ((f2 + 20.6 ** 2) * torch.sqrt((f2 + 107.7 ** 2) * (f2 + 737.9 ** 2))
                                          * (f2 + 12194.0 ** 2))
    gain_db = 20 * torch.log10(response.clamp_min(1e-20)) + 2.0
    return (10 ** (gain_db / 10)).float()


class Loudness(nn.Module):
    """Mean A-weighted power of Hann-windowed frames, in dB: a full-scale 1 kHz sine reads -3 dB."""

    def __init__(self, sample_rate: int, window: int) -> None:
        super().__init__()
        hann = torch.hann_window(window)
        frequencies = torch.fft.rfftfreq(window, 1.0 / sample_rate)
        # Parseval over a one-sided spectrum, normalised by the window's energy
        weights = a_weighting(frequencies) * 2.0 / (window * float(hann.pow(2).sum()))
        self.register_buffer("hann", hann, persistent=False)
        # each bin's weight twice, for its real and imaginary parts (view_as_real)
        self.register_buffer("weights", weights.repeat_interleave(2), persistent=False)
        self.window = window
        self.floor = 10.0 ** (LOUDNESS_FLOOR_DB / 10.0)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, F, window) -> (B, F) dB."""
        spectrum = torch.view_as_real(torch.fft.rfft(frames * self.hann)).flatten(-2)
        # multiply and sum, not a matrix product: a row's sum must not depend on the row count
        # (BLAS blocks rows by count), or the frames of a buffer would differ from one pass
        weighted = (spectrum.pow(2) * self.weights).sum(-1)
        return 10.0 * torch.log10(weighted.clamp_min(self.floor))

    @traced_only
    def traced(self, frames: torch.Tensor) -> torch.Tensor:
        """``forward`` with the FFT as a matrix product (models/ddsp/dft.py), for ONNX."""
        spectrum = (frames * self.hann) @ rfft_matrix(self.window, self.window).float()  # [re | im]
        weights = self.weights[::2]
        weighted = (spectrum.pow(2) * torch.cat([weights, weights])).sum(-1)
        return 10.0 * torch.log10(weighted.clamp_min(self.floor))


def fft_length(minimum: int) -> int:
    """The smallest even length >= ``minimum`` with no prime factor above 5: fast for pocketfft,
    and up to 40 % shorter than the next power of two."""
    n = minimum + (minimum % 2)
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 2


def lowpass_taps(decimation: int) -> torch.Tensor:
    """Windowed-sinc anti-alias filter for decimation: cutoff at 80 % of the new Nyquist."""
    if decimation == 1:
        return torch.ones(1)
    length = 12 * decimation + 1
    n = torch.arange(length, dtype=torch.float64) - (length - 1) / 2
    cutoff = 0.8 / decimation  # of the input Nyquist
    taps = cutoff * torch.special.sinc(cutoff * n) * torch.blackman_window(length, periodic=False,
                                                                          dtype=torch.float64)
    return (taps / taps.sum()).float()


class Yin(nn.Module):
    """YIN (de Cheveigné and Kawahara, 2002) on frames of decimated audio, vectorised.

    For each frame ``x`` of ``span = width + tau_max + 1`` samples: the difference function
    ``d(tau) = sum_{j < width} (x_j - x_{j + tau})^2`` (energies by cumulative sums, the cross
    term by one FFT correlation), its cumulative-mean normalisation ``d'``, the first local
    minimum of ``d'`` whose parabolic bottom is under ``threshold`` in ``[tau_min, tau_max)`` (else the global minimum),
    and a parabolic refinement. Returns f0 in Hz and the aperiodicity ``d'(tau)``.
    """

    def __init__(self, rate: float, f0_min: float, f0_max: float, threshold: float) -> None:
        super().__init__()
        self.rate = rate
        self.tau_min = max(2, int(math.floor(rate / f0_max)))
        self.tau_max = int(math.ceil(rate / f0_min)) + 1
        self.width = self.tau_max  # integrate over at least one longest period
        self.span = self.width + self.tau_max + 1
        self.n_fft = fft_length(self.span)
        self.threshold = threshold
        self.register_buffer("lags", torch.arange(self.tau_max + 1, dtype=torch.float64), persistent=False)
        self.register_buffer("neighbours", torch.tensor([-1, 0, 1]), persistent=False)
        # the search's key of a dip at each searched lag: negative, rising with the lag
        searched = self.tau_max - self.tau_min
        self.register_buffer("dip_ranks", torch.arange(searched, dtype=torch.float64) - searched, persistent=False)

    def forward(self, frames: torch.Tensor, functional: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, F, span) -> f0 (B, F) in Hz, aperiodicity (B, F) in [0, 1].

        In float64: the refinement divides by the difference function's curvature, which
        amplifies float32 rounding of the correlation to ~1e-4 Hz, and the phase integrates
        that; in float64 the FFT here and the DFT products of an ONNX graph give the same f0.
        """
        width, tau_max = self.width, self.tau_max
        dtype = frames.dtype
        frames = frames.double()
        if functional:
            correlation = self.traced_correlation(frames)
        else:
            spectrum = torch.fft.rfft(frames, self.n_fft)
            correlation = torch.fft.irfft(torch.conj(torch.fft.rfft(frames[..., :width], self.n_fft)) * spectrum,
                                          self.n_fft)[..., : tau_max + 1]
        energy = F.pad(torch.cumsum(frames.pow(2), -1), (1, 0))
        shifted = energy[..., width: width + tau_max + 1] - energy[..., : tau_max + 1]
        difference = (shifted[..., :1] + shifted - 2.0 * correlation).clamp_min(0.0)
        running = torch.cumsum(difference[..., 1:], -1)
        normalised = torch.where(running > 1e-9 * shifted[..., :1].clamp_min(1e-12),
                                 difference[..., 1:] * self.lags[1:] / running.clamp_min(1e-30),
                                 1.0)
        normalised = F.pad(normalised, (1, 0), value=1.0)  # d'(0) = 1, index = lag
        lo = self.tau_min
        inner = normalised[..., lo: tau_max]  # lags lo .. tau_max - 1, each with two neighbours
        before = normalised[..., lo - 1: tau_max - 1]
        after = normalised[..., lo + 1: tau_max + 1]
        # a period that falls between two lags leaves both above the threshold when the frame is
        # rich in high partials; the parabola's minimum through the neighbours does not
        bend = before - 2.0 * inner + after
        bottom = torch.where(bend > 1e-9, inner - (before - after).pow(2) / (8.0 * bend.clamp_min(1e-9)), inner)
        dip = (bottom < self.threshold) & (inner < before) & (inner <= after)
        # the first dip, else the global minimum, as one argmin: dips rank below every d' (>= 0),
        # the earliest lowest
        index = torch.argmin(torch.where(dip, self.dip_ranks, inner), -1) + lo  # the chosen lag
        # refine on the raw difference (as YIN does): the normalisation tilts d' and biases the vertex
        around = difference.gather(-1, index.unsqueeze(-1) + self.neighbours)  # lags index - 1 .. + 1
        y0, y1, y2 = around[..., 0], around[..., 1], around[..., 2]
        aperiodicity = normalised.gather(-1, index.unsqueeze(-1)).squeeze(-1)
        curvature = y0 - 2.0 * y1 + y2
        offset = torch.where(curvature > 1e-12, 0.5 * (y0 - y2) / curvature.clamp_min(1e-12),
                             0.0).clamp(-1.0, 1.0)
        lag = index.to(frames.dtype) + offset
        return (self.rate / lag).to(dtype), aperiodicity.clamp(0.0, 1.0).to(dtype)

    @traced_only
    def traced_correlation(self, frames: torch.Tensor) -> torch.Tensor:
        """The FFT correlation of ``forward`` as real DFT matrix products (for ONNX)."""
        forward = rfft_matrix(self.span, self.n_fft)
        bins = self.n_fft // 2 + 1
        spectrum = frames @ forward
        head = frames[..., : self.width] @ forward[: self.width]
        re, im = spectrum[..., :bins], spectrum[..., bins:]
        head_re, head_im = head[..., :bins], head[..., bins:]
        product = torch.cat([head_re * re + head_im * im, head_re * im - head_im * re], -1)  # conj(H) X
        return product @ irfft_matrix(self.n_fft, self.tau_max + 1)


class Features(Stateful):
    """audio (B, 1, T) -> f0 in Hz and loudness in dB, (B, 2, T / hop); causal, no delay.

    Frames judged unvoiced (aperiodicity above ``voicing_threshold``) or quiet (below
    ``silence_db``) hold the last voiced f0, so silence and noise do not send the oscillator
    jumping; the held value is carried across calls (``last_f0``; 0 until a frame was voiced, so
    the initial state is zeros, as the ONNX file format has it).
    """

    state_names = ("last_f0",)

    def __init__(self, cfg: DDSPConfig, streaming: bool) -> None:
        super().__init__()
        self.hop = cfg.hop
        self.decimation = cfg.pitch_decimation
        self.loudness = Loudness(cfg.sample_rate, cfg.loudness_window)
        self.yin = Yin(cfg.sample_rate / cfg.pitch_decimation, cfg.f0_min, cfg.f0_max, cfg.pitch_threshold)
        taps = lowpass_taps(cfg.pitch_decimation)
        self.register_buffer("lowpass", taps.flip(0), persistent=False)
        self.taps = taps.numel()
        # full-rate samples the pitch frame of one frame reads (filter support included)
        pitch_context = self.taps + cfg.pitch_decimation * (self.yin.span - 1)
        needed = max(pitch_context, cfg.loudness_window)
        self.context = -(-needed // cfg.hop) * cfg.hop
        self.voicing_threshold = cfg.voicing_threshold
        self.silence_db = cfg.silence_db
        self.rest_f0 = math.sqrt(cfg.f0_min * cfg.f0_max)  # held before anything was voiced
        self.streaming = streaming
        self.history = CachePad(1, self.context) if streaming else None
        self.register_buffer("last_f0", torch.zeros(MAX_BATCH_SIZE, 1), persistent=False)
        # where the analysis windows sit, for reports: pitch frames span the last
        # `pitch_window` samples before the frame time, loudness the last `loudness_window`
        self.pitch_window = cfg.pitch_decimation * self.yin.span
        self.loudness_window = cfg.loudness_window

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        history = self.history
        if history is not None:
            return history(x)
        return F.pad(x, (self.context, 0))

    def pitch_frames(self, padded: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, 1, context + T) -> (B, F, span) decimated pitch frames, frame k ending before k * hop."""
        d, span, k = self.decimation, self.yin.span, self.taps
        start = self.context - d * (span - 1) - k
        outputs = span + (frames - 1) * (self.hop // d)
        region = padded[:, 0, start: start + (outputs - 1) * d + k]
        if d > 1 and self.functional:  # one Conv node in ONNX, not a slice per window
            region = F.conv1d(region.unsqueeze(1), self.lowpass.view(1, 1, k), stride=d).squeeze(1)
        elif d > 1:
            # strided windows times the taps, summed (conv1d's im2col path was 3x slower at
            # these sizes; a matrix product would round differently for other buffer lengths)
            region = (region.unfold(-1, k, d) * self.lowpass).sum(-1)
        return self.windows(region, frames, span, self.hop // d)

    def windows(self, region: torch.Tensor, frames: int, size: int, step: int) -> torch.Tensor:
        """(B, L) -> (B, frames, size): ``frames`` windows of ``size`` every ``step`` samples."""
        if self.functional:
            return region[:, self.traced_positions(frames, size, step)]
        return region.unfold(-1, size, step)

    @traced_only
    def traced_positions(self, frames: int, size: int, step: int) -> torch.Tensor:
        return frame_positions(frames, size, step)  # unfold needs sizes the exporter cannot see

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[-1] // self.hop
        padded = self.padded(x)
        start = self.context - self.loudness_window
        region = padded[:, 0, start: start + (frames - 1) * self.hop + self.loudness_window]
        windows = self.windows(region, frames, self.loudness_window, self.hop)
        loudness = self.loudness.traced(windows) if self.functional else self.loudness(windows)
        f0, aperiodicity = self.yin(self.pitch_frames(padded, frames), self.functional)
        voiced = (aperiodicity < self.voicing_threshold) & (loudness > self.silence_db)
        f0 = self.hold(f0, voiced)
        return torch.stack([f0, loudness], 1)

    def hold(self, f0: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
        """Unvoiced frames take the last voiced f0 (from earlier calls too)."""
        batch, frames = f0.shape
        state = self.last_f0[:batch]
        if self.streaming:
            previous = torch.where(state > 0.0, state, self.rest_f0)
        else:
            previous = torch.full((batch, 1), self.rest_f0, dtype=f0.dtype, device=f0.device)
        values = torch.cat([previous, f0], -1)
        # the position in ``values`` of the last voiced frame so far (0: the held one)
        positions = torch.arange(1, frames + 1, device=f0.device)
        marks = voiced.long() * positions
        if self.functional:  # ONNX has no running maximum: a masked maximum over the frames so far
            source = (marks.unsqueeze(-2) * self.traced_triangle(frames)).amax(-1)
        else:
            source = torch.cummax(marks, -1)[0]
        held = values.gather(-1, source)
        if self.streaming:
            tail = held[:, -1:]
            if self.functional:
                self.last_f0 = tail
            else:
                state.copy_(tail.detach())
        return held

    @traced_only
    def traced_triangle(self, frames: int) -> torch.Tensor:
        return lower_triangle(frames)

    def reset_state(self) -> None:
        history = self.history
        if history is not None:
            history.reset_state()
        self.last_f0.zero_()

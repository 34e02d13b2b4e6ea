"""Filters for sample-rate conversion between a host's rate and a model's rate.

Pure numpy (no torch, no scipy): the nn~ export bakes these filters into its file, and the
headless engine designs them at run time on machines that only have numpy.

A rational conversion ``out_rate / in_rate = up / down`` (reduced) is, in principle, "insert
``up - 1`` zeros between samples, low-pass at the common rate ``F = up * in_rate``, keep every
``down``-th sample". The low-pass is one prototype FIR at ``F``; a polyphase implementation only
ever multiplies its taps with real input samples (see :mod:`tildekit.models.resample_stream`).

Audio uses a Kaiser-windowed sinc. Its band edges are set relative to the LOWER of the two
rates, ``low``::

    passband  0 .. PASSBAND * low        (0.4 * low = 80 % of the low rate's Nyquist)
    stopband  (1 - PASSBAND) * low ..    (>= STOPBAND_DB of rejection)

so the 6 dB point sits exactly at the low rate's Nyquist. Content between the passband edge
and the low Nyquist may alias, but only into the transition band, never into the passband:
that halves the filter length (and its delay) compared with a stopband starting at the
Nyquist, which is what keeps the round trip host -> model -> host under 2 ms even for a 16 kHz
model. Latent frames are sampled and held (:func:`hold_prototype`): they are control signals
one frame apart, and any filter longer than a frame would delay them by frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

PASSBAND = 0.4  # passband edge, as a fraction of the lower of the two rates
STOPBAND_DB = 80.0  # rejection promised from (1 - PASSBAND) * low upwards
DESIGN_DB = 84.0  # what the Kaiser formulas are asked for: they are estimates, keep a margin


@dataclass(frozen=True)
class Prototype:
    """One prototype filter at the common rate ``up * in_rate``.

    ``taps`` has ``up * taps_per_phase`` values (zero-padded at the end); ``delay`` is its group
    delay in samples of the common rate (the centre of symmetry).
    """

    up: int
    down: int
    taps: np.ndarray  # float64, length up * taps_per_phase
    delay: Fraction

    @property
    def taps_per_phase(self) -> int:
        return len(self.taps) // self.up

    def bank(self) -> np.ndarray:
        """(up, taps_per_phase) float32: row ``p`` holds taps ``p, p + up, ...`` in reverse.

        Output sample at common-rate time ``t = k * up + p`` is ``bank[p] @ x[k - T + 1 .. k]``:
        the reversal lets a window of consecutive input samples meet the taps in order.
        """
        per_phase = self.taps.reshape(self.taps_per_phase, self.up).T  # [p, i] = taps[p + i*up]
        return np.ascontiguousarray(per_phase[:, ::-1], dtype=np.float32)


def period_offsets(up: int, down: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """For the ``up`` outputs of one period: where each window starts after the period's first
    window (``d``, input samples) and which phase of the bank it uses (``p``).

    Output ``n`` sits at common-rate time ``n * down + offset``; ``up`` consecutive outputs span
    exactly ``down`` inputs, and every period starts at the same phase, so one matrix serves all.
    """
    r = np.arange(up, dtype=np.int64)
    d = (r * down + offset) // up - offset // up
    return d, (r * down + offset) % up


def period_matrix(bank: np.ndarray, up: int, down: int, offset: int) -> np.ndarray:
    """``(K, up)`` float32: a window of ``K`` inputs from a period's first window start, times
    this matrix, gives the period's ``up`` outputs (column ``r`` holds ``bank[p_r]`` at row ``d_r``).

    Integer ratios compute it as a convolution (a period is one output, or one input).
    """
    taps = bank.shape[1]
    d, p = period_offsets(up, down, offset)
    matrix = np.zeros((int(d[-1]) + taps, up), dtype=np.float32)
    rows = d[None, :] + np.arange(taps)[:, None]
    matrix[rows, np.arange(up)[None, :]] = bank[p].T
    return matrix


def group_size(up: int, down: int, taps: int) -> int:
    """Outputs per group when a period is cut into groups (fractional ratios).

    A period's matrix is a diagonal band ``taps`` rows wide: multiplying it whole wastes
    ``K / taps`` (about 6 at 44.1 <-> 48 kHz). Groups of about ``taps * up / down`` consecutive
    outputs each need only a window of about ``2 * taps`` inputs.
    """
    return max(1, min(up, -(-taps * up // down)))


def group_matrices(bank: np.ndarray, up: int, down: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """``(G, S, size)`` float32 matrices and ``(G,)`` window offsets: group ``g`` of a period
    (outputs ``g * size ..``) is ``window @ matrices[g]``, its window of ``S`` inputs starting
    ``starts[g]`` after the period's first window start. Missing columns of the last group are 0.
    """
    taps = bank.shape[1]
    size = group_size(up, down, taps)
    groups = -(-up // size)
    d, p = period_offsets(up, down, offset)
    r = np.arange(up)
    starts = d[(r // size) * size][::size]
    rows = d - starts[r // size]
    span = int(rows.max()) + taps
    matrices = np.zeros((groups, span, size), dtype=np.float32)
    index = rows[None, :] + np.arange(taps)[:, None]
    matrices[(r // size)[None, :], index, (r % size)[None, :]] = bank[p].T
    return matrices, starts.astype(np.int64)


def produced(count: int, up: int, down: int, offset: int) -> int:
    """Outputs available after ``count`` input samples (``count >= 0``): output ``n`` sits at
    common-rate time ``n * down + offset`` and exists once input ``t // up`` has arrived."""
    return max(0, (count * up + down - 1 - offset) // down)


def reduced_ratio(in_rate: int, out_rate: int) -> tuple[int, int]:
    """``(up, down)`` with ``out_rate / in_rate = up / down`` in lowest terms."""
    if in_rate <= 0 or out_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {in_rate} and {out_rate}")
    g = math.gcd(in_rate, out_rate)
    return out_rate // g, in_rate // g


def kaiser_beta(attenuation_db: float) -> float:
    """Kaiser's window parameter for a stopband attenuation in dB (Kaiser 1974)."""
    a = attenuation_db
    if a > 50:
        return 0.1102 * (a - 8.7)
    if a >= 21:
        return 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21)
    return 0.0


def kaiser_length(attenuation_db: float, transition: float) -> int:
    """Taps for ``attenuation_db`` with a transition ``transition`` wide (cycles per sample)."""
    return int(math.ceil((attenuation_db - 7.95) / (2.285 * 2 * math.pi * transition))) + 1


def sinc_prototype(up: int, down: int, passband: float = PASSBAND,
                   attenuation_db: float = DESIGN_DB) -> Prototype:
    """The Kaiser-windowed sinc for an ``up / down`` conversion of audio (gain ``up``)."""
    low = 1.0 / max(up, down)  # the lower rate, in cycles per common-rate sample
    if up == down == 1:
        return Prototype(1, 1, np.ones(1), Fraction(0))
    transition = (1.0 - 2.0 * passband) * low
    length = kaiser_length(attenuation_db, transition)
    # Whole phases, and an odd symmetric length (one zero tap at the end when needed), so the
    # group delay is a whole number of common-rate samples: delays then add up exactly.
    per_phase = -(-length // up)
    while (per_phase * up) - (1 - per_phase * up % 2) < length:
        per_phase += 1
    padded = per_phase * up
    length = padded if padded % 2 else padded - 1
    centre = (length - 1) // 2
    n = np.arange(length) - centre
    cutoff = low / 2  # the 6 dB point: the low rate's Nyquist
    taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(length, kaiser_beta(attenuation_db))
    taps *= up / taps.sum()  # unit gain at DC after zero insertion
    return Prototype(up, down, np.pad(taps, (0, padded - length)), Fraction(centre))


def hold_prototype(up: int, down: int) -> Prototype:
    """Sample and hold: each output takes the latest input at or before its time.

    One tap of 1 per phase (a causal rectangle one input period long): a constant latent stays
    exactly constant, no frame is smeared into its neighbours, and the delay is half an input
    period on average, the least a causal converter of control frames can have.
    """
    return Prototype(up, down, np.ones(up), Fraction(up - 1, 2))

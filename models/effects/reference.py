"""Reference effects, written here, that render dry/wet pairs with known knob settings.

Both are deterministic functions of (dry audio, sample rate, knob values) and start from rest,
so a segment rendered alone is reproducible and a model that starts from zero state sees the
same history as the effect.

- :func:`overdrive`: 1st-order high-pass (90 Hz, keeps the low end from saturating first),
  pre-gain, asymmetric soft clipping ``tanh(u + b) - tanh(b)`` (the bias gives even harmonics,
  as a diode pair of unequal forward voltages does), a 1st-order tone low-pass and output level.
  Knobs: ``gain`` (dB), ``tone`` (Hz), ``level`` (dB).
- :func:`compressor`: feed-forward, peak detector in dB, soft-knee gain computer, gain
  reduction smoothed in the log domain with separate attack and release time constants (the
  smoother runs on dB values, so attack and release are times per dB, independent of level).
  Knobs: ``threshold`` (dB), ``ratio``, ``attack`` (ms), ``release`` (ms).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter


@dataclass(frozen=True)
class KnobRange:
    name: str
    minimum: float
    maximum: float
    default: float
    unit: str = ""


@dataclass(frozen=True)
class ReferenceEffect:
    name: str
    knobs: tuple[KnobRange, ...]
    render: Callable[..., np.ndarray]

    def __call__(self, dry: np.ndarray, sample_rate: int, values: Mapping[str, float]) -> np.ndarray:
        missing = [k.name for k in self.knobs if k.name not in values]
        if missing:
            raise ValueError(f"{self.name}: missing knob(s) {missing}")
        return self.render(np.asarray(dry, dtype=np.float64), sample_rate,
                           **{k.name: float(values[k.name]) for k in self.knobs}).astype(np.float32)


def _one_pole_coefficient(cutoff_hz: float, sample_rate: int) -> float:
    """Pole of a 1st-order filter with the given -3 dB frequency (impulse-invariant)."""
    return math.exp(-2.0 * math.pi * min(cutoff_hz, 0.45 * sample_rate) / sample_rate)


def _low_pass(x: np.ndarray, cutoff_hz: float, sample_rate: int) -> np.ndarray:
    pole = _one_pole_coefficient(cutoff_hz, sample_rate)
    return lfilter([1.0 - pole], [1.0, -pole], x)


def _high_pass(x: np.ndarray, cutoff_hz: float, sample_rate: int) -> np.ndarray:
    return x - _low_pass(x, cutoff_hz, sample_rate)


CLIP_BIAS = 0.3  # asymmetry of the clipper: tanh(u + b) - tanh(b) clips at 1 - tanh(b) / -1 - tanh(b)


def render_overdrive(x: np.ndarray, sample_rate: int, gain: float, tone: float, level: float) -> np.ndarray:
    u = 10.0 ** (gain / 20.0) * _high_pass(x, 90.0, sample_rate)
    clipped = np.tanh(u + CLIP_BIAS) - math.tanh(CLIP_BIAS)
    return 10.0 ** (level / 20.0) * _low_pass(clipped, tone, sample_rate)


KNEE_DB = 6.0


def gain_reduction_db(level_db: np.ndarray, threshold: float, ratio: float) -> np.ndarray:
    """Static curve: dB of reduction for a detector level, soft knee of ``KNEE_DB``."""
    over = level_db - threshold
    slope = 1.0 - 1.0 / ratio
    knee = np.where(np.abs(over) <= KNEE_DB / 2, slope * (over + KNEE_DB / 2) ** 2 / (2 * KNEE_DB), 0.0)
    return np.where(over > KNEE_DB / 2, slope * over, knee)


def smooth_attack_release(target: np.ndarray, attack_coef: float, release_coef: float) -> np.ndarray:
    """One-pole smoothing of a gain-reduction curve, faster while it rises (attack)."""
    out = np.empty_like(target)
    state = 0.0
    # a plain loop on Python floats: the branch depends on the state, so no filter routine fits
    for i, value in enumerate(target.tolist()):
        coef = attack_coef if value > state else release_coef
        state = coef * state + (1.0 - coef) * value
        out[i] = state
    return out


def render_compressor(x: np.ndarray, sample_rate: int, threshold: float, ratio: float, attack: float,
                      release: float) -> np.ndarray:
    level_db = 20.0 * np.log10(np.abs(x) + 1e-6)
    target = gain_reduction_db(level_db, threshold, ratio)
    attack_coef = math.exp(-1.0 / (attack * 1e-3 * sample_rate))
    release_coef = math.exp(-1.0 / (release * 1e-3 * sample_rate))
    reduction = smooth_attack_release(target, attack_coef, release_coef)
    return x * 10.0 ** (-reduction / 20.0)


OVERDRIVE = ReferenceEffect("overdrive", (
    KnobRange("gain", 0.0, 36.0, 18.0, "dB"),
    KnobRange("tone", 800.0, 8000.0, 3000.0, "Hz"),
    KnobRange("level", -18.0, 0.0, -6.0, "dB"),
), render_overdrive)

COMPRESSOR = ReferenceEffect("compressor", (
    KnobRange("threshold", -40.0, -6.0, -20.0, "dB"),
    KnobRange("ratio", 1.5, 10.0, 4.0),
    KnobRange("attack", 1.0, 30.0, 5.0, "ms"),
    KnobRange("release", 30.0, 300.0, 100.0, "ms"),
), render_compressor)

EFFECTS: dict[str, ReferenceEffect] = {e.name: e for e in (OVERDRIVE, COMPRESSOR)}

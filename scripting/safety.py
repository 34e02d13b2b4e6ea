"""The engine's last stage before the speakers: finite audio under a peak ceiling, whatever the model does.

A model can blow up (NaN or inf after a hostile input or an unlucky latent) or get very loud
(a large latent bias, a gain of 16). After the model and the gain, every buffer goes through:

1. **non-finite guard**: a buffer holding NaN or inf is replaced by silence, and the caller
   resets the model's streaming state (a NaN in a cache would otherwise poison every buffer after);
2. **peak limiter** at the ceiling (default -1 dBFS, settable within ``CEILING_RANGE_DB``): the gain
   drops at once to what keeps the loudest sample at the ceiling (no look-ahead, so no added
   latency), then recovers at ``RELEASE_DB_PER_SECOND`` towards unity (from at most
   ``MAX_HELD_REDUCTION_DB`` below it). No sample ever leaves above
   the ceiling; audio that stays under it passes bit for bit.

The limiter runs on whole buffers with numpy: the recursion ``g[n] = min(g_needed[n], g[n-1] + r)``
(log gain, release ``r`` per sample) has the closed form ``min(g[-1] + (n+1) r,
n r + cummin_k(g_needed[k] - k r))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tildekit.errors import TildekitError

DEFAULT_CEILING_DB = -1.0
CEILING_RANGE_DB = (-40.0, 0.0)
# Back from 10 dB of gain reduction in 0.1 s.
RELEASE_DB_PER_SECOND = 100.0
# A deeper spike (a blown-up model at 1e30) is held down where it is, but the gain after it
# recovers from at most this much: full level again within 0.6 s of the last spike.
MAX_HELD_REDUCTION_DB = 60.0


def check_ceiling(ceiling_db: float, option: str = "--ceiling-db") -> float:
    lo, hi = CEILING_RANGE_DB
    if isinstance(ceiling_db, bool) or not isinstance(ceiling_db, (int, float)) \
            or not math.isfinite(ceiling_db) or not lo <= ceiling_db <= hi:
        raise TildekitError(f"{option} {ceiling_db!r}: the output ceiling must be between {lo:g} and "
                            f"{hi:g} dBFS (default {DEFAULT_CEILING_DB:g})")
    return float(ceiling_db)


def to_db(amplitude: float) -> float:
    return 20.0 * math.log10(amplitude) if amplitude > 0 else -math.inf


@dataclass(frozen=True)
class Outcome:
    """What the stage did to one buffer."""

    peak: float  # the loudest sample it received (inf or nan for a non-finite buffer)
    silenced: bool = False  # non-finite: replaced by silence
    limited: bool = False  # went over the ceiling: the limiter held it down
    reduction_db: float = 0.0  # deepest gain reduction of the limiter in this buffer (<= 0)


class SafetyStage:
    """Non-finite guard and peak limiter, buffer by buffer, for one stream."""

    def __init__(self, sample_rate: int, ceiling_db: float = DEFAULT_CEILING_DB) -> None:
        self.ceiling_db = check_ceiling(ceiling_db)
        self.ceiling = 10.0 ** (self.ceiling_db / 20.0)
        # The bound as float32, rounded down: a float32 sample clipped to it is never above the ceiling.
        bound = np.float32(self.ceiling)
        self._bound = bound if float(bound) <= self.ceiling else np.nextafter(bound, np.float32(0))
        self._log_ceiling = math.log(self.ceiling)
        self._release = RELEASE_DB_PER_SECOND / 20.0 * math.log(10.0) / sample_rate  # per sample
        self._deepest_held = -MAX_HELD_REDUCTION_DB / 20.0 * math.log(10.0)
        self._log_gain = 0.0  # the limiter's gain at the end of the last buffer (natural log, <= 0)

    def reset(self) -> None:
        self._log_gain = 0.0

    def process(self, audio: np.ndarray) -> tuple[np.ndarray, Outcome]:
        """``(channels, frames)`` -> the same shape, finite and within +-ceiling."""
        magnitude = np.abs(audio)
        peak = float(magnitude.max()) if magnitude.size else 0.0
        if not math.isfinite(peak):
            return np.zeros_like(audio, dtype=np.float32), Outcome(peak, silenced=True)
        if peak <= self.ceiling and self._log_gain == 0.0:
            return audio, Outcome(peak)  # the usual case: untouched
        frames = audio.shape[-1]
        loudest = magnitude.max(axis=0).astype(np.float64) if audio.ndim > 1 else magnitude.astype(np.float64)
        with np.errstate(divide="ignore"):
            needed = np.minimum(0.0, self._log_ceiling - np.log(loudest))  # 0 where silent (log 0 = -inf)
        ramp = self._release * np.arange(frames)
        held = np.maximum(needed, self._deepest_held)
        log_gain = np.minimum.reduce([
            self._log_gain + self._release + ramp,  # recovering from the previous buffer
            ramp + np.minimum.accumulate(held - ramp),  # the deepest need so far, released since
            np.zeros(frames),
            needed,  # a spike deeper than the held range is still brought down to the ceiling
        ])
        if frames:
            self._log_gain = max(float(log_gain[-1]), self._deepest_held)
        limited = (audio * np.exp(log_gain)).astype(np.float32)
        np.clip(limited, -self._bound, self._bound, out=limited)  # rounding of exp/log: hard bound
        reduction_db = float(log_gain.min()) * 20.0 / math.log(10.0)
        return limited, Outcome(peak, limited=peak > self.ceiling, reduction_db=reduction_db)

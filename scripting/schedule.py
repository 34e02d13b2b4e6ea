"""Control shapes (ramps, LFOs) and a scheduler that sends timed messages on time.

Shapes are pure functions that return ``TimedMessage`` lists, so a score, a script and a
test can build, inspect and combine them before anything is sent. The ``Scheduler`` then
sends each message at ``start + time`` on the monotonic clock: every target is computed from
the same absolute start, so a late message never delays the ones after it (no drift).
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from tildekit.errors import TildekitError

# time.sleep() overshoots by up to a scheduler tick; sleep until this close to the target,
# then spin on the clock for the rest.
SPIN_SECONDS = 0.0015
DEFAULT_RATE_HZ = 50.0

# Resource bounds of shapes and scores: a typo (over: 1e9, update_hz: 1e9) is an error naming the
# limit, never a MemoryError. One home for them; scores check their fields against the same values.
MAX_RATE_HZ = 1000.0  # updates per second of a ramp, LFO or interpolation (OSC is not audio)
MAX_LFO_HZ = 100.0  # LFO frequency
MAX_SECONDS = 86_400.0  # a score, and any shape in it, ends within a day
MAX_UPDATES = 1_000_000  # updates of one shape (duration x rate), cycles of one LFO


class TimedMessage(NamedTuple):
    time: float  # seconds from the start of the performance
    address: str
    args: tuple[Any, ...]


# -- curves --------------------------------------------------------------------------
# Each maps progress u in [0, 1] to [0, 1], monotone, with f(0) = 0 and f(1) = 1 exactly.

def _linear(u: np.ndarray) -> np.ndarray:
    return u


def _smoothstep(u: np.ndarray) -> np.ndarray:
    return u * u * (3.0 - 2.0 * u)


def _ease_in(u: np.ndarray) -> np.ndarray:
    return u * u


def _ease_out(u: np.ndarray) -> np.ndarray:
    return 1.0 - (1.0 - u) ** 2


def _equal_power(u: np.ndarray) -> np.ndarray:
    # The rising half of an equal-power crossfade; snapped so the end is exactly 1.
    return np.where(u >= 1.0, 1.0, np.sin(0.5 * math.pi * u))


CURVES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": _linear,
    "smoothstep": _smoothstep,
    "ease-in": _ease_in,
    "ease-out": _ease_out,
    "equal-power": _equal_power,
}

LFO_SHAPES = ("sine", "tri", "square", "random-smooth")


def curve_function(name: str) -> Callable[[np.ndarray], np.ndarray]:
    try:
        return CURVES[name]
    except KeyError:
        raise TildekitError(f"unknown curve {name!r} (choose from {', '.join(CURVES)})") from None


def _check_positive(what: str, value: float, maximum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value <= maximum:
        raise TildekitError(f"{what} must be a number in (0, {maximum:g}], got {value!r}")


def update_count(duration: float, rate_hz: float) -> int:
    """How many updates ``update_times`` makes (checked against ``MAX_UPDATES`` before any is made)."""
    _check_positive("update rate (Hz)", rate_hz, MAX_RATE_HZ)
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration) \
            or duration > MAX_SECONDS:
        raise TildekitError(f"a shape lasts at most {MAX_SECONDS:g} s, got {duration!r}")
    if duration <= 0:
        return 1
    steps = max(1, math.ceil(duration * rate_hz - 1e-9))
    if steps + 1 > MAX_UPDATES:
        raise TildekitError(f"{duration:g} s at {rate_hz:g} Hz is {steps + 1:,} updates, more than "
                            f"{MAX_UPDATES:,}: lower the update rate or shorten it")
    return steps + 1


def update_times(duration: float, rate_hz: float) -> np.ndarray:
    """Update instants 0..duration (both included) at about ``rate_hz``, evenly spaced."""
    count = update_count(duration, rate_hz)
    if count == 1:
        return np.zeros(1)
    return np.linspace(0.0, duration, count)


# -- shapes ----------------------------------------------------------------------------

def ramp_values(start: float | Sequence[float], end: float | Sequence[float], duration: float,
                rate_hz: float = DEFAULT_RATE_HZ, curve: str = "linear") -> tuple[np.ndarray, np.ndarray]:
    """Times ``(N,)`` and values ``(N,)`` or ``(N, K)`` of a ramp; the last value is exactly ``end``."""
    shape = curve_function(curve)
    a = np.asarray(start, dtype=np.float64)
    b = np.asarray(end, dtype=np.float64)
    if a.shape != b.shape:
        raise TildekitError(f"ramp start and end differ in size ({a.size} vs {b.size} values)")
    times = update_times(duration, rate_hz)
    u = times / duration if duration > 0 else np.ones_like(times)
    weights = shape(u).reshape((-1,) + (1,) * a.ndim)
    values = a + (b - a) * weights
    values[-1] = b  # exact end, whatever the rounding
    return times, values


def lfo_values(shape: str, rate_hz: float, duration: float, depth: float = 1.0, center: float = 0.0,
               update_hz: float = DEFAULT_RATE_HZ, phase: float = 0.0,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Times and values ``center + depth * wave`` of a low-frequency oscillator, wave in [-1, 1].

    ``phase`` is in cycles (0..1). ``random-smooth`` draws one random target per cycle
    (seeded, so a score plays the same every time) and glides between them with a smoothstep.
    """
    if shape not in LFO_SHAPES:
        raise TildekitError(f"unknown LFO shape {shape!r} (choose from {', '.join(LFO_SHAPES)})")
    _check_positive("LFO rate_hz", rate_hz, MAX_LFO_HZ)
    times = update_times(duration, update_hz)  # checks the duration too
    if duration * rate_hz > MAX_UPDATES:
        raise TildekitError(f"an LFO of {duration:g} s at {rate_hz:g} Hz has more than {MAX_UPDATES:,} cycles")
    if not math.isfinite(phase):
        raise TildekitError(f"LFO phase must be a finite number of cycles, got {phase!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise TildekitError(f"LFO seed must be a whole number in [0, 2**63), got {seed!r}")
    cycles = times * rate_hz + phase % 1.0
    frac = cycles % 1.0
    if shape == "sine":
        wave = np.sin(2.0 * math.pi * cycles)
    elif shape == "tri":
        # starts at 0 rising, like the sine: 0 -> 1 -> -1 -> 0
        wave = 1.0 - 4.0 * np.abs(((cycles + 0.25) % 1.0) - 0.5)
    elif shape == "square":
        wave = np.where(frac < 0.5, 1.0, -1.0)
    else:
        points = np.random.default_rng(seed).uniform(-1.0, 1.0, int(np.floor(cycles.max())) + 2)
        index = np.floor(cycles).astype(int)
        wave = points[index] + (points[index + 1] - points[index]) * _smoothstep(frac)
    return times, center + depth * wave


def timed(address: str, times: np.ndarray, values: np.ndarray, offset: float = 0.0) -> list[TimedMessage]:
    """Turn a shape into messages: scalar values give one float argument, rows give several."""
    out = []
    for t, v in zip(times, values):
        args = tuple(float(x) for x in np.atleast_1d(v))
        out.append(TimedMessage(offset + float(t), address, args))
    return out


def merge(*sequences: Iterable[TimedMessage]) -> list[TimedMessage]:
    """All messages in time order; messages at the same time keep the order they were given."""
    combined = [m for seq in sequences for m in seq]
    return sorted(combined, key=lambda m: m.time)  # sorted() is stable


# -- scheduler -------------------------------------------------------------------------

@dataclass
class PlayReport:
    """How punctual a performance was: lateness of each message in seconds (>= 0 is late)."""

    sent: int = 0
    lateness: list[float] = field(default_factory=list)
    stopped: bool = False

    @property
    def median_lateness(self) -> float:
        return statistics.median(self.lateness) if self.lateness else 0.0

    @property
    def max_lateness(self) -> float:
        return max(self.lateness) if self.lateness else 0.0

    def summary(self) -> str:
        stop = " (stopped early)" if self.stopped else ""
        return (f"sent {self.sent} messages{stop}; lateness median "
                f"{1000 * self.median_lateness:.2f} ms, max {1000 * self.max_lateness:.2f} ms")


class Scheduler:
    """Sends messages at absolute times on the monotonic clock.

    Sleeps coarsely until ``spin`` seconds before each target, then spins on the clock, so the
    send lands within tens of microseconds of its target on an idle machine. ``stop()`` (from
    another thread, or a signal handler) ends a performance between two messages.
    """

    def __init__(self, spin: float = SPIN_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.spin = spin
        self.clock = clock
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def wait_until(self, target: float) -> bool:
        """Block until ``clock() >= target``; False if stopped first."""
        while True:
            remaining = target - self.clock()
            if remaining <= 0:
                return True
            if remaining > self.spin:
                # Event.wait doubles as an interruptible sleep.
                if self._stop.wait(remaining - self.spin):
                    return False
            elif self._stop.is_set():
                return False

    def play(self, messages: Iterable[TimedMessage], send: Callable[[str, tuple[Any, ...]], None],
             start: float | None = None) -> PlayReport:
        """Send every message at ``start + message.time`` (start defaults to now)."""
        self._stop.clear()
        ordered = sorted(messages, key=lambda m: m.time)
        origin = self.clock() if start is None else start
        report = PlayReport()
        for message in ordered:
            target = origin + message.time
            if not self.wait_until(target):
                report.stopped = True
                break
            report.lateness.append(self.clock() - target)
            send(message.address, message.args)
            report.sent += 1
        return report

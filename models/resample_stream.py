"""Streaming polyphase resampling in numpy: the arithmetic every implementation shares.

Conventions (one resampler, ``up / down`` in lowest terms, ``T`` taps per phase):

- input sample ``k`` sits at common-rate time ``k * up``; output sample ``n`` at
  ``t_n = n * down + offset`` (``0 <= offset < down``), and is
  ``bank[t_n % up] @ x[t_n // up - T + 1 .. t_n // up]`` (samples before the stream are 0);
- so output ``n`` exists as soon as input ``t_n // up`` has arrived: after ``C`` inputs there
  are :func:`produced` ``(C)`` outputs, whatever the sizes of the calls that brought them;
- the state between calls is the last inputs, ``position``, the common-rate time of the next
  output measured from the first sample of the next call (``0 <= position``), and ``phase``,
  the index of the next output within its period of ``up`` outputs.

Streaming is therefore exact: any split of a signal into calls gives the same samples as one
call with the whole signal. The torch twin (:mod:`tildekit.models.resample`) follows the same
steps (the file's resampler does them as one block product per call); the engine runs this
one, without torch. :class:`StreamPath` adds the FIFOs of a method's plan
(:mod:`tildekit.models.resample_plan`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tildekit.models.resample_design import group_matrices, produced

if TYPE_CHECKING:
    from fractions import Fraction

    from tildekit.models.resample_plan import MethodPlan


class PolyphaseStream:
    """A stateful resampler over ``(..., time)`` float32 arrays; leading axes are independent.

    Outputs are computed a period at a time (``up`` outputs from ``down`` inputs), in groups of
    consecutive outputs that share a window (:func:`~tildekit.models.resample_design.group_matrices`);
    ``phase`` counts the outputs already given from the current period, which is recomputed and sliced.
    """

    def __init__(self, bank: np.ndarray, up: int, down: int, offset: int = 0) -> None:
        if bank.ndim != 2 or bank.shape[0] != up:
            raise ValueError(f"bank must be (up={up}, taps per phase), got {bank.shape}")
        if not 0 <= offset < down:
            raise ValueError(f"offset must be in 0..{down - 1}, got {offset}")
        self.matrices, self.starts = group_matrices(bank, up, down, offset)
        self.up, self.down, self.offset = up, down, offset
        self.kept = down + bank.shape[1] - 1  # inputs kept: a period's first window may start this far back
        self.history: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        self.history = None
        self.position = self.offset
        self.phase = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        lead, length = x.shape[:-1], x.shape[-1]
        if self.history is None or self.history.shape[:-1] != lead:
            self.history = np.zeros(lead + (self.kept,), dtype=np.float32)
        up, down = self.up, self.down
        groups, span, size = self.matrices.shape
        extended = np.concatenate([self.history, x, np.zeros(lead + (span + down,), np.float32)], axis=-1)
        count = produced(length, up, down, self.position)
        start = (self.position - self.phase * down) // up + down  # the period's first window
        periods = max(1, -(-(self.phase + count) // up))
        if groups == 1:  # integer ratios: the windows are a strided view, no copy
            windows = np.lib.stride_tricks.sliding_window_view(extended[..., start:], span, axis=-1)
            y = windows[..., :periods * down:down, :] @ self.matrices[0]  # (..., periods, size)
        else:
            first = start + np.arange(periods)[:, None] * down + self.starts[None, :]  # (periods, G)
            windows = extended[..., first[..., None] + np.arange(span)]  # (..., periods, G, S)
            y = np.swapaxes(np.swapaxes(windows, -3, -2) @ self.matrices, -3, -2)  # (..., periods, G, size)
        y = y.reshape(lead + (periods, groups * size))[..., :up]
        y = y.reshape(lead + (periods * up,))[..., self.phase:self.phase + count]
        self.history = extended[..., length:length + self.kept]
        self.position += count * down - length * up
        self.phase = (self.phase + count) % up
        return np.ascontiguousarray(y)


class StreamPath:
    """The resamplers and FIFOs around one method, in numpy (twin of ``ResamplePath``, the same
    rule for the output FIFO's zeros: those for the first call's size, topped up once to the
    any-size prefill if a later call has another size).

    ``enter(x)`` takes host units ``(channels, n)`` and returns the whole granules ready for the
    method (maybe none); ``leave(y, count)`` takes the method's output and returns exactly
    ``count`` host units. ``plan`` is a :class:`~tildekit.models.resample_plan.MethodPlan`.
    """

    def __init__(self, plan: "MethodPlan", in_channels: int, out_channels: int) -> None:
        self.plan = plan
        self.pre = PolyphaseStream(plan.pre.prototype.bank(), plan.pre.up, plan.pre.down, plan.pre.offset)
        self.post = PolyphaseStream(plan.post.prototype.bank(), plan.post.up, plan.post.down,
                                    plan.post.offset)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.reset()

    def reset(self) -> None:
        self.pre.reset()
        self.post.reset()
        self.waiting = np.zeros((self.in_channels, 0), dtype=np.float32)
        self.ready = np.zeros((self.out_channels, 0), dtype=np.float32)
        self.call = -1  # host units per call: -1 before the first call, 0 once sizes differed
        self.filled = 0

    @property
    def delay(self) -> "Fraction":
        """Host samples from input to output for the calls so far (the any-size delay before
        the first call)."""
        if self.call < 0:
            return self.plan.delay
        return self.plan.delay - (self.plan.prefill - self.filled) * self.plan.out_ratio

    def enter(self, x: np.ndarray) -> np.ndarray:
        size = x.shape[-1]
        if size % self.plan.step:
            raise ValueError(f"at this host rate the method takes multiples of {self.plan.step} input "
                             f"frames, got {size}")
        if self.call < 0:
            self._fill(self.plan.call_prefill(size))
            self.call = size
        elif self.call > 0 and size != self.call:
            self._fill(self.plan.prefill - self.filled)
            self.call = 0
        waiting = np.concatenate([self.waiting, self.pre(x)], axis=-1)
        whole = waiting.shape[-1] - waiting.shape[-1] % self.plan.granularity
        self.waiting = waiting[..., whole:]
        return waiting[..., :whole]

    def _fill(self, zeros: int) -> None:
        if zeros > 0:
            self.ready = np.concatenate([np.zeros((self.out_channels, zeros), np.float32), self.ready], axis=-1)
            self.filled += zeros

    def leave(self, y: np.ndarray, count: int) -> np.ndarray:
        ready = np.concatenate([self.ready, self.post(y)], axis=-1)
        if ready.shape[-1] < count:  # cannot happen with the planned prefill
            raise RuntimeError(f"resampler FIFO ran dry ({ready.shape[-1]} of {count} samples)")
        self.ready = ready[..., count:]
        return ready[..., :count]

"""The engine's resampling stage: a model running at its own rate inside a host-rate stream.

The engine hands host-rate buffers of any size to :meth:`ResampleStage.process` and gets the
same number of samples back; in between, the buffers are resampled to the model's rate, the
Runner computes whole multiples of its quantum (a latent frame, or the fixed buffer of an ONNX
export), and the output is resampled back and delayed by a fixed, known number of host samples
(:attr:`ResampleStage.delay`). The arithmetic is :mod:`tildekit.models.resample_plan`'s, the
filters the same as in the nn~ export's file; only numpy is needed.
"""

from __future__ import annotations

import numpy as np

from tildekit.models.resample_plan import MethodPlan, plan_method
from tildekit.models.resample_stream import PolyphaseStream, StreamPath
from tildekit.scripting.runner import Runner


def runner_quantum(runner: Runner) -> int:
    """Model samples per call the runner accepts a multiple of."""
    streamer = getattr(runner, "streamer", None)
    return int(getattr(streamer, "quantum", 0) or runner.card.highest_ratio)


class ResampleStage:
    """``process`` / ``generate`` at ``host_rate`` for a Runner at the model's rate."""

    def __init__(self, runner: Runner, host_rate: int) -> None:
        card = runner.card
        self.runner = runner
        self.host_rate = host_rate
        self.quantum = runner_quantum(runner)
        self.plan: MethodPlan = plan_method("forward", card.sample_rate, host_rate, 1, 1, card.delay,
                                            card.compression, granularity=self.quantum)
        self.path = StreamPath(self.plan, card.channels, card.channels)
        self._ready: np.ndarray = np.zeros((card.channels, 0), dtype=np.float32)
        post = self.plan.post
        self._generated = PolyphaseStream(post.prototype.bank(), post.up, post.down, post.offset)
        self._reset_generation()

    @property
    def delay(self) -> float:
        """Host samples from input to output, the model's own delay included (for the engine's
        buffer size once it has played one; the any-size figure before)."""
        return float(self.path.delay)

    def process(self, block: np.ndarray) -> np.ndarray:
        """(channels, n) at the host rate -> (channels, n): the model's forward, resampled."""
        ready = self.path.enter(block)
        if ready.shape[-1]:
            y = self.runner.process(ready)
        else:
            y = np.zeros((self.runner.card.channels, 0), dtype=np.float32)
        return self.path.leave(y, block.shape[-1])

    def generate(self, count: int) -> np.ndarray:
        """``count`` host samples of latent-only generation (decoded a quantum at a time)."""
        while self._ready.shape[-1] < count:
            made = self._generated(self.runner.generate(self.quantum))
            self._ready = np.concatenate([self._ready, made], axis=-1)
        out, self._ready = self._ready[..., :count], self._ready[..., count:]
        return out

    def reset(self) -> None:
        """Clear the resampling state (the model's own state is the Runner's)."""
        self.path.reset()
        self._reset_generation()

    def _reset_generation(self) -> None:
        self._generated.reset()
        self._ready = np.zeros((self.runner.card.channels, 0), dtype=np.float32)

"""Knob conditioning: the FiLM generator and the knob smoother.

Knob values become a conditioning vector once per call (``D`` numbers per batch row):

- ``concat``: the knobs themselves, scaled to [-1, 1] (``D = K``), fed to the core as extra
  input channels;
- ``film``: knobs -> MLP -> one (gamma, beta) pair per channel of every FiLM site
  (``D = 2 * sum(site channels)``); the core computes ``exp(gamma) * h + beta``.

The smoother then moves the vector towards its new value with a one-pole filter per sample::

    c[n] = t + (c[-1] - t) * a^(n + 1),   a = exp(-1 / (smoothing_ms * sample_rate / 1000))

Knobs change between calls, so the target ``t`` is constant within one: the closed form gives
every sample at once, and the state (the last sample) carries into the next call, so any split
of a signal into buffers gives the same values. Smoothing the vector, not the knobs, keeps the
MLP at one evaluation per call; both move continuously, so a knob step cannot click.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from tildekit.models.streaming import MAX_BATCH_SIZE, Stateful


class FilmGenerator(nn.Module):
    """(B, K) knobs in [-1, 1] -> (B, D) FiLM parameters, per site a block of log-gains
    ``gamma`` then a block of shifts ``beta`` (the core computes ``exp(gamma) * h + beta``)."""

    def __init__(self, knobs: int, hidden: int, out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(knobs, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, out))
        # a small start: every site begins near the identity (gamma 1, beta 0) but already
        # depends on the knobs, so gradients reach both the MLP and the core from step one
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        nn.init.normal_(last.weight, std=0.01)
        nn.init.zeros_(last.bias)

    def forward(self, knobs: torch.Tensor) -> torch.Tensor:
        return self.net(knobs)


class Smoother(Stateful):
    """One-pole smoothing of a (B, D) target per sample; state: the last value of each row."""

    state_names = ("value", "primed")

    def __init__(self, size: int, smoothing_ms: float, sample_rate: int) -> None:
        super().__init__()
        samples = smoothing_ms * 1e-3 * sample_rate
        self.jump = samples <= 0  # no smoothing: every call starts at its target
        self.log_pole = -1.0 / samples if samples > 0 else 0.0
        self.register_buffer("value", torch.zeros(MAX_BATCH_SIZE, size), persistent=False)
        # rows start at their first target (no ramp from zero when a stream begins)
        self.register_buffer("primed", torch.zeros(MAX_BATCH_SIZE, dtype=torch.bool), persistent=False)

    def forward(self, target: torch.Tensor, length: int) -> torch.Tensor:
        """(B, D) target -> (B, D, length), or (B, D, 1) when every row already sits at its target."""
        batch = target.shape[0]
        value = self.value[:batch]
        primed = self.primed[:batch]
        start = torch.where(primed.unsqueeze(1), value, target)
        if self.functional:  # what the ONNX exporter traces: the state reassigned, every sample computed
            out = target.unsqueeze(-1) if self.jump else self.glide(start, target, length)
            self.value = out[..., -1]
            self.primed = torch.ones_like(primed)
            return out
        primed.fill_(True)
        if self.jump or bool(torch.equal(start, target)):
            value.copy_(target)
            return target.unsqueeze(-1)
        out = self.glide(start, target, length)
        value.copy_(out[..., -1])
        return out

    def glide(self, start: torch.Tensor, target: torch.Tensor, length: int) -> torch.Tensor:
        """(B, D) from ``start`` towards ``target`` -> (B, D, length); exactly ``target`` where
        they are equal (a trace cannot skip the rows at rest as :meth:`forward` does)."""
        steps = torch.arange(1, length + 1, dtype=target.dtype, device=target.device)
        decay = torch.exp(steps * self.log_pole)
        return target.unsqueeze(-1) + (start - target).unsqueeze(-1) * decay

    def reset_state(self) -> None:
        self.value.zero_()
        self.primed.fill_(False)


def film_gains(log_gains: torch.Tensor) -> torch.Tensor:
    """FiLM gains from the knob MLP's log-gains (every site at once, computed once per call).

    A log-domain gain: knobs such as drive span 30-40 dB, which exp() reaches from a small MLP
    output, while 1 + gamma would need weights 100 times larger (slow to learn)."""
    # clamped at exp(8), +69 dB, past any knob's reach: a wild MLP output stays finite (a literal:
    # TorchScript does not read module-level floats)
    return torch.exp(log_gains.clamp(max=8.0))

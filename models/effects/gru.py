"""GRU core; the hidden state of each batch row carries across calls in streaming builds.

::

    film:    x ─► linear (1 -> H) ─► x gain_in ─► GRU (H, no biases) ─► x gain_out ─► linear (H -> 1) ─► + direct * x
    concat:  [x, knobs] ─► GRU (H) ──────────────────────────────────► linear (H -> 1) ─► + direct * x

FiLM-GRU as in the conditioned-RNN literature: the knobs, through the MLP, scale the
recurrence's hidden output at every sample (``gain_out``, one log-gain per unit, smoothed
per sample across knob moves) and its input (``gain_in``, so the drive of every unit, what a
pre-gain knob sets, is a knob function before the GRU's nonlinearity). The shifts ``beta`` of
FiLM are left out and the GRU has no biases: with a silent input and a silent state every
gate's candidate is ``tanh(0) = 0``, so silence stays silent at every knob setting, as for the
FiLM TCN. That is what lets it learn from the dry-signal start: any bias leaks a constant into
the pauses between notes, which the log-magnitude STFT term punishes more than the error it
fixes, and a concat GRU (knobs as inputs, gate biases) stays at the dry signal for its first
hundreds of steps (docs/effects.md).

FiLM modulates the recurrence's input and output, not its hidden path: torch's fused ``nn.GRU``
then runs over the whole buffer (input projections of all samples in one GEMM, the recurrence
in C++), and the knobs still reach every gate through the scaled input.

The GRU is causal with an unbounded memory: the delay is 0. Its state is a non-persistent
buffer of ``MAX_BATCH_SIZE`` rows, so both builds share their ``state_dict`` keys. Everything
runs time-first (T, B, H), the layout ``nn.GRU`` computes in, so no transposes are copied.

Speed: torch steps a GRU one sample at a time (about 25-40 us a step on one loaded core here,
whatever the hidden size from 16 to 64: the per-step op overhead dominates), so a GRU core at
48 kHz runs near 1x real time in TorchScript; benchmarks/effects_speed.py measures it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from tildekit.models.effects.conditioning import film_gains
from tildekit.models.streaming import MAX_BATCH_SIZE, Stateful


class GRUCore(Stateful):
    state_names = ("hidden",)

    def __init__(self, hidden: int, knobs: int, film: bool, streaming: bool) -> None:
        super().__init__()
        self.film = film
        self.streaming = streaming
        self.hidden_size = hidden
        self.inp = nn.Linear(1, hidden, bias=False) if film else None
        self.gru = nn.GRU(hidden if film else 1 + knobs, hidden, bias=not film)
        self.out = nn.Linear(hidden, 1, bias=not film)
        # start near the identity (the dry signal), not loud: ``direct`` passes x and the
        # recurrent path starts small
        self.direct = nn.Parameter(torch.ones(1))
        with torch.no_grad():
            self.out.weight.mul_(0.1)
            if self.out.bias is not None:
                self.out.bias.zero_()
        # FiLM: two gain-only sites (log-gains), the input's and the hidden output's
        self.film_size = 2 * hidden if film else 0
        self.register_buffer("hidden", torch.zeros(1, MAX_BATCH_SIZE, hidden), persistent=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) audio and (B, D, T or 1) conditioning -> (B, 1, T)."""
        batch = x.shape[0]
        rows = x.permute(2, 0, 1)  # (T, B, 1)
        cond = cond.permute(2, 0, 1)  # (T or 1, B, D)
        size = self.hidden_size
        # both sites' log-gains to gains in one op
        gains = film_gains(cond) if self.film else cond
        inp = self.inp
        if inp is not None:
            h = rows * inp.weight.t() * gains[..., :size]  # the bias-free linear 1 -> H, then the gain
        else:
            h = torch.cat([rows, cond.expand(rows.shape[0], -1, -1)], 2)
        state = self.hidden[:, :batch]
        if self.streaming:
            y, last = self.gru(h, state)
            if self.functional:
                self.hidden = last
            else:
                state.copy_(last.detach())
        else:
            y, _ = self.gru(h, torch.zeros_like(state))
        if self.film:
            y = y * gains[..., size:2 * size]
        return self.out(y).permute(1, 2, 0) + self.direct * x

    def reset_state(self) -> None:
        self.hidden.zero_()

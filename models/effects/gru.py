"""GRU core; the hidden state of each batch row carries across calls in streaming builds.

::

    film:    x ─► linear (1 -> H) ─► FiLM_in ─► GRU (H) ─► FiLM_out ─► linear (H -> 1) ─► + direct * x
    concat:  [x, knobs] ─► GRU (H) ──────────────────────► linear (H -> 1) ─► + direct * x

FiLM modulates the recurrence's input and output, not its hidden path: torch's fused ``nn.GRU``
then runs over the whole buffer (input projections of all samples in one GEMM, the recurrence
in C++), and the knobs still reach every gate through the modulated input.

The GRU is causal with an unbounded memory: the delay is 0. Its state is a non-persistent
buffer of ``MAX_BATCH_SIZE`` rows, so both builds share their ``state_dict`` keys. Everything
runs time-first (T, B, H), the layout ``nn.GRU`` computes in, so no transposes are copied.

Speed: torch steps a GRU one sample at a time (about 25-40 us a step on one loaded core here,
whatever the hidden size from 8 to 32: the per-step op overhead dominates), so a GRU core at
48 kHz runs near 1x real time in TorchScript; benchmarks/effects_speed.py measures it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from tildekit.models.effects.conditioning import apply_film
from tildekit.models.streaming import MAX_BATCH_SIZE, Stateful


class GRUCore(Stateful):
    state_names = ("hidden",)

    def __init__(self, hidden: int, knobs: int, film: bool, streaming: bool) -> None:
        super().__init__()
        self.film = film
        self.streaming = streaming
        self.hidden_size = hidden
        self.inp = nn.Linear(1, hidden) if film else None
        self.gru = nn.GRU(hidden if film else 1 + knobs, hidden)
        self.out = nn.Linear(hidden, 1)
        # start near the identity (the dry signal), not loud: ``direct`` passes x and the
        # recurrent path starts small
        self.direct = nn.Parameter(torch.ones(1))
        with torch.no_grad():
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()
        self.film_size = 4 * hidden if film else 0
        self.register_buffer("hidden", torch.zeros(1, MAX_BATCH_SIZE, hidden), persistent=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) audio and (B, D, T or 1) conditioning -> (B, 1, T)."""
        batch = x.shape[0]
        rows = x.permute(2, 0, 1)  # (T, B, 1)
        cond = cond.permute(2, 0, 1)  # (T or 1, B, D)
        inp = self.inp
        if inp is not None:
            h = apply_film(inp(rows), cond, 0)
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
            y = apply_film(y, cond, 2 * self.hidden_size)
        return self.out(y).permute(1, 2, 0) + self.direct * x

    def reset_state(self) -> None:
        self.hidden.zero_()

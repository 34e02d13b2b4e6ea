"""GRU core; the hidden state of each batch row carries across calls in streaming builds.

::

    film:    x ─► linear (1 -> H) ─► FiLM_in ─► GRU (H) ─► FiLM_out ─► linear (H -> 1) ─► + direct * x
    concat:  [x, knobs] ─► GRU (H) ──────────────────────► linear (H -> 1) ─► + direct * x

The GRU is causal with an unbounded memory: the delay is 0. Its state is a non-persistent
buffer of ``MAX_BATCH_SIZE`` rows, so both builds share their ``state_dict`` keys.
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
        self.gru = nn.GRU(hidden if film else 1 + knobs, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 1)
        self.direct = nn.Parameter(torch.zeros(1))
        with torch.no_grad():  # start quiet: an untrained model should not be louder than the effect
            self.out.weight.mul_(0.1)
        self.film_size = 4 * hidden if film else 0
        self.register_buffer("hidden", torch.zeros(1, MAX_BATCH_SIZE, hidden), persistent=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) audio and (B, D, T or 1) conditioning -> (B, 1, T)."""
        batch, length = x.shape[0], x.shape[-1]
        inp = self.inp
        if inp is not None:
            h = apply_film(inp(x.transpose(1, 2)).transpose(1, 2), cond, 0)
        else:
            h = torch.cat([x, cond.expand(-1, -1, length)], 1)
        state = self.hidden[:, :batch]
        if self.streaming:
            y, last = self.gru(h.transpose(1, 2), state)
            state.copy_(last.detach())
        else:
            y, _ = self.gru(h.transpose(1, 2), torch.zeros_like(state))
        y = y.transpose(1, 2)
        if self.film:
            y = apply_film(y, cond, 2 * self.hidden_size)
        return self.out(y.transpose(1, 2)).transpose(1, 2) + self.direct * x

    def reset_state(self) -> None:
        self.hidden.zero_()

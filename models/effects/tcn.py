"""Causal dilated TCN core with FiLM in every block.

::

    x (B, 1, T) [+ knobs (B, K, T) for concat]
      └─ 1x1 conv ─► h (B, C, T)
    block i (dilation d_i), repeated:
      h ─► causal conv (kernel k, dilation d_i) ─► FiLM_i (gamma, beta) ─► tanh ─► 1x1 conv ─► + h
    out = 1x1 conv (C -> 1) + direct * x

Every conv is causal (left padding only), so the delay is 0 and the receptive field is
``1 + (k - 1) * sum(d_i)`` samples. Streaming builds keep ``(k - 1) * d_i`` past samples per
block in ``models/streaming.py``'s caches.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from tildekit.models.effects.conditioning import apply_film
from tildekit.models.streaming import Layers


class TCNBlock(nn.Module):
    def __init__(self, layers: Layers, channels: int, kernel_size: int, dilation: int, film: bool) -> None:
        super().__init__()
        self.conv, delay = layers.conv(channels, channels, kernel_size, 0, dilation=dilation, causal=True)
        assert delay == 0
        self.mix, _ = layers.conv(channels, channels, 1, 0)
        self.film = film

    def forward(self, h: torch.Tensor, cond: torch.Tensor, offset: int) -> torch.Tensor:
        y = self.conv(h)
        if self.film:
            y = apply_film(y, cond, offset)
        return h + self.mix(torch.tanh(y))


class TCNCore(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: list[int], knobs: int, film: bool,
                 streaming: bool) -> None:
        super().__init__()
        layers = Layers(streaming)
        self.film = film
        self.inp, _ = layers.conv(1 if film else 1 + knobs, channels, 1, 0)
        self.blocks = nn.ModuleList([TCNBlock(layers, channels, kernel_size, d, film) for d in dilations])
        self.out, _ = layers.conv(channels, 1, 1, 0)
        self.direct = nn.Parameter(torch.zeros(1))
        with torch.no_grad():  # start quiet: an untrained model should not be louder than the effect
            self.out.weight.mul_(0.1)
        self.channels = channels
        self.film_size = 2 * channels * len(dilations) if film else 0
        self.receptive_field = 1 + (kernel_size - 1) * sum(dilations)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) audio and (B, D, T or 1) conditioning -> (B, 1, T)."""
        if self.film:
            h = self.inp(x)
        else:
            h = self.inp(torch.cat([x, cond.expand(-1, -1, x.shape[-1])], 1))
        offset = 0
        for block in self.blocks:
            h = block(h, cond, offset)
            offset += 2 * self.channels
        return self.out(h) + self.direct * x

    def reset_state(self) -> None:
        for block in self.blocks:
            block.conv.reset_state()

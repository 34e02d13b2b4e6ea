"""Building blocks shared by the encoder and the decoder."""

from __future__ import annotations

import torch
import torch.nn as nn

from tildekit.models.streaming import Layers, Stateful


class Snake(Stateful):
    """x + sin^2(a x) / a, one learned frequency per channel (periodic inductive bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class LeakyReLU(Stateful):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.leaky_relu(x, 0.2)


def activation(kind: str, channels: int) -> Stateful:
    return Snake(channels) if kind == "snake" else LeakyReLU()


class Chain(Stateful):
    """A sequence of layers with ``reset_state`` on every stateful member (TorchScript-friendly)."""

    def __init__(self, *layers: Stateful) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def reset_state(self) -> None:
        for layer in self.layers:
            layer.reset_state()


class Residual(Stateful):
    """x + f(x), the skip path delayed like f when streaming::

        x ──► act ─► conv(k, dilation d) ─► act ─► conv(1) ──► (+) ──►
        └──────────── delay line (f's delay) ─────────────────┘
    """

    def __init__(self, layers: Layers, channels: int, kernel_size: int, dilation: int,
                 act: str, causal: bool, delay_in: int) -> None:
        super().__init__()
        conv, delay = layers.conv(channels, channels, kernel_size, delay_in, dilation=dilation,
                                  causal=causal)
        pointwise, delay = layers.conv(channels, channels, 1, delay)
        self.branch = Chain(activation(act, channels), conv, activation(act, channels), pointwise)
        self.skip = layers.delay(channels, delay - delay_in)
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.branch(x)

    def reset_state(self) -> None:
        self.branch.reset_state()
        self.skip.reset_state()

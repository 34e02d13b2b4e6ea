"""Building blocks shared by the encoder and the decoder."""

from __future__ import annotations

import torch
import torch.nn as nn

from tildekit.models.streaming import CachePad, Layers, Stateful, StreamConv1d


class Snake(Stateful):
    """x + sin^2(a x) / a, one learned frequency per channel (periodic inductive bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)

LEAKY_SLOPE = 0.2


class LeakyReLU(Stateful):
    def __init__(self) -> None:
        super().__init__()
        self.slope = LEAKY_SLOPE  # an attribute: TorchScript does not read module globals

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.leaky_relu(x, self.slope)

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

    Streaming, the conv's cache and the skip's delay line would hold the same past samples
    (the activation is elementwise), so one cache of the *raw* input serves both: the skip
    is a slice of it and the activation runs on the ``padding`` cached samples too::

        xp = cat(cache, x) ─► act ─► conv (no cache of its own) ─► act ─► conv(1) ─► (+)
        xp[left : left + T] (= x delayed by the conv's right padding) ───────────────┘

    ``branch`` and ``skip`` keep their modules (and ``state_dict`` keys); the streaming
    path reads the conv's weights but not its (then unused) cache.
    """

    def __init__(self, layers: Layers, channels: int, kernel_size: int, dilation: int,
                 act: str, causal: bool, delay_in: int) -> None:
        super().__init__()
        conv, delay = layers.conv(channels, channels, kernel_size, delay_in, dilation=dilation,
                                  causal=causal)
        pointwise, delay = layers.conv(channels, channels, 1, delay)
        self.branch = Chain(activation(act, channels), conv, activation(act, channels), pointwise)
        self.delay = delay
        fused = layers.streaming and isinstance(conv, StreamConv1d) and conv.trim == 0
        # the skip's delay line is part of ``line`` when fused (Delay holds no weights)
        self.skip = layers.delay(channels, 0 if fused else delay - delay_in)
        if fused:
            padding = conv.cache.padding
            self.line = CachePad(channels, padding)
            self.skip_start = padding - (delay - delay_in)
        else:
            self.line = None
            self.skip_start = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        line = self.line
        if line is None:
            return self.skip(x) + self.branch(x)
        xp = line(x)
        skip = xp[..., self.skip_start: self.skip_start + x.shape[-1]]
        branch = self.branch.layers
        h = branch[1].compute(branch[0](xp))
        return skip + branch[3](branch[2](h))

    def reset_state(self) -> None:
        self.branch.reset_state()
        self.skip.reset_state()
        line = self.line
        if line is not None:
            line.reset_state()

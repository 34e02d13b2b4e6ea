"""Encoder: audio -> sub-bands -> strided residual stages -> latent mean and scale.

::

    audio (B, C, T) ─► PQMF ─► conv 7 ─► [residuals ─► strided conv (2r, r)] x len(ratios)
                      (C*M, T/M)                                              ─► conv 3 ─► (B, 2L, T/compression)
"""

from __future__ import annotations

import torch

from tildekit.models.blocks import Chain, Residual, activation
from tildekit.models.config import ModelConfig
from tildekit.models.pqmf import PQMFAnalysis
from tildekit.models.streaming import Layers, Stateful


def stage_channels(cfg: ModelConfig) -> list[int]:
    """Channels at each rate, from the first stage (highest rate) to the latent rate."""
    return [min(cfg.capacity * 2**i, cfg.max_channels) for i in range(len(cfg.ratios) + 1)]


def is_causal(cfg: ModelConfig, hop: int) -> bool:
    """Coarse-rate layers are causal: a centered kernel there costs kernel * hop of delay."""
    return cfg.causal or hop > cfg.max_centered_hop


class Encoder(Stateful):
    def __init__(self, cfg: ModelConfig, layers: Layers) -> None:
        super().__init__()
        act = cfg.activation
        channels = stage_channels(cfg)
        blocks: list[Stateful] = []
        delay = 0
        span = 0  # input samples one output frame depends on, summed over layers
        hop = 1
        if cfg.n_band > 1:
            self.pqmf = PQMFAnalysis(layers, cfg.channels, cfg.n_band, cfg.pqmf_taps_per_band)
            delay = self.pqmf.delay
            span += cfg.n_band * cfg.pqmf_taps_per_band
        else:
            self.pqmf = None
        hop = cfg.n_band
        conv, delay = layers.conv(cfg.channels * cfg.n_band, channels[0], 7, delay, causal=is_causal(cfg, hop))
        span += 6 * hop
        blocks.append(conv)
        for i, ratio in enumerate(cfg.ratios):
            for dilation in cfg.dilations:
                block = Residual(layers, channels[i], cfg.kernel_size, dilation, act, is_causal(cfg, hop), delay)
                delay = block.delay
                span += (cfg.kernel_size - 1) * dilation * hop
                blocks.append(block)
            blocks.append(activation(act, channels[i]))
            conv, delay = layers.conv(channels[i], channels[i + 1], 2 * ratio, delay, stride=ratio,
                                      causal=is_causal(cfg, hop))
            span += (2 * ratio - 1) * hop
            blocks.append(conv)
            hop *= ratio
        blocks.append(activation(act, channels[-1]))
        conv, delay = layers.conv(channels[-1], 2 * cfg.latent_size, 3, delay, causal=is_causal(cfg, hop))
        span += 2 * hop
        blocks.append(conv)
        self.net = Chain(*blocks)
        self.delay = delay  # latent frames
        self.span = span

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pqmf = self.pqmf
        if pqmf is not None:
            x = pqmf(x)
        return self.net(x)

    def reset_state(self) -> None:
        pqmf = self.pqmf
        if pqmf is not None:
            pqmf.reset_state()
        self.net.reset_state()

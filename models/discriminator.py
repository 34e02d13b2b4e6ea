"""Phase 2's critic: multi-scale and multi-period convolutional discriminators.

- Multi-scale: ``train.discriminator_scales`` 1-D conv nets, on the waveform and on copies
  average-pooled by 2, 4, ... (coarser scales judge the envelope, finer ones the texture).
- Multi-period: one 2-D conv net per period in ``train.discriminator_periods``; the waveform
  is folded into ``(T / p, p)`` so each column holds every p-th sample, exposing periodic
  structure (pitch) that a 1-D net sees poorly.

Every net returns its feature maps; the last one is the score map. The losses are hinge
losses and an L1 feature matching between real and generated feature maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

from tildekit.models.config import TrainConfig

Features = list[torch.Tensor]  # one discriminator's feature maps, scores last

_SLOPE = 0.2
_MAX_CHANNELS = 1024


def _widths(capacity: int) -> list[int]:
    return [min(capacity * m, _MAX_CHANNELS) for m in (1, 4, 16, 16)]


def _features(layers: nn.ModuleList, score: nn.Module, x: torch.Tensor) -> Features:
    """Every layer's activation (for feature matching), then the score map."""
    features = []
    for layer in layers:
        x = F.leaky_relu(layer(x), _SLOPE)
        features.append(x)
    features.append(score(x))
    return features


class ScaleDiscriminator(nn.Module):
    """1-D strided conv net over a (possibly pooled) waveform."""

    def __init__(self, channels: int, capacity: int) -> None:
        super().__init__()
        widths = _widths(capacity)
        layers = [weight_norm(nn.Conv1d(channels, widths[0], 15, padding=7))]
        for before, after in zip(widths, widths[1:]):
            # grouped strided convs keep the wide layers cheap (as MelGAN's critic does)
            groups = math.gcd(before, after, 16)
            layers.append(weight_norm(nn.Conv1d(before, after, 41, stride=4, padding=20, groups=groups)))
        layers.append(weight_norm(nn.Conv1d(widths[-1], widths[-1], 5, padding=2)))
        self.layers = nn.ModuleList(layers)
        self.score = weight_norm(nn.Conv1d(widths[-1], 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> Features:
        return _features(self.layers, self.score, x)


class PeriodDiscriminator(nn.Module):
    """2-D conv net over the waveform folded by ``period``."""

    def __init__(self, channels: int, capacity: int, period: int) -> None:
        super().__init__()
        self.period = period
        widths = _widths(capacity)
        layers = [weight_norm(nn.Conv2d(channels, widths[0], (5, 1), stride=(3, 1), padding=(2, 0)))]
        for before, after in zip(widths, widths[1:]):
            layers.append(weight_norm(nn.Conv2d(before, after, (5, 1), stride=(3, 1), padding=(2, 0))))
        layers.append(weight_norm(nn.Conv2d(widths[-1], widths[-1], (5, 1), padding=(2, 0))))
        self.layers = nn.ModuleList(layers)
        self.score = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> Features:
        batch, channels, length = x.shape
        remainder = length % self.period
        if remainder:
            x = F.pad(x, (0, self.period - remainder))
        x = x.reshape(batch, channels, -1, self.period)
        return _features(self.layers, self.score, x)


class MultiDiscriminator(nn.Module):
    """Every scale and period discriminator; ``forward`` returns one feature list per net."""

    def __init__(self, cfg: TrainConfig, channels: int) -> None:
        super().__init__()
        self.scales = nn.ModuleList(ScaleDiscriminator(channels, cfg.discriminator_capacity)
                                    for _ in range(cfg.discriminator_scales))
        self.periods = nn.ModuleList(PeriodDiscriminator(channels, cfg.discriminator_capacity, p)
                                     for p in cfg.discriminator_periods)

    def forward(self, x: torch.Tensor) -> list[Features]:
        outputs = []
        for index, net in enumerate(self.scales):
            pooled = x if index == 0 else F.avg_pool1d(x, 2 ** index, 2 ** index)
            outputs.append(net(pooled))
        for net in self.periods:
            outputs.append(net(x))
        return outputs


def split_real_fake(outputs: list[Features], real_count: int) -> tuple[list[Features], list[Features]]:
    """Split outputs of one pass over ``cat([real, fake])`` into the real and the fake halves."""
    real = [[f[:real_count] for f in feats] for feats in outputs]
    fake = [[f[real_count:] for f in feats] for feats in outputs]
    return real, fake


def discriminator_hinge_loss(real: Sequence[Features], fake: Sequence[Features]) -> torch.Tensor:
    """Mean over nets of ``E[relu(1 - D(real))] + E[relu(1 + D(fake))]``."""
    terms = [F.relu(1.0 - r[-1]).mean() + F.relu(1.0 + f[-1]).mean() for r, f in zip(real, fake)]
    return torch.stack(terms).mean()


def generator_hinge_loss(fake: Sequence[Features]) -> torch.Tensor:
    """Mean over nets of ``-E[D(fake)]``."""
    return torch.stack([-f[-1].mean() for f in fake]).mean()


def feature_matching_loss(real: Sequence[Features], fake: Sequence[Features]) -> torch.Tensor:
    """L1 between real (held fixed) and generated feature maps, averaged over layers and nets.

    Score maps are left out: they are the adversarial term's business.
    """
    per_net = []
    for r, f in zip(real, fake):
        layers = [(a.detach() - b).abs().mean() for a, b in zip(r[:-1], f[:-1])]
        per_net.append(torch.stack(layers).mean())
    return torch.stack(per_net).mean()

"""The DDSP decoder: (f0, loudness) per frame -> harmonic amplitudes and noise magnitudes.

::

    f0 Hz ─► (midi - 60) / 24 ─┐
                                ├─► MLP ─► GRU ─► cat(·, inputs) ─► MLP ─► linear ─┬─ amplitude a
    loudness dB ─► (dB + 50) / 25 ┘                                                 ├─ distribution d_h (K)
                                                                                   └─ noise magnitudes (bands)

    harmonic amplitude h = a * d_h / sum(d over harmonics below Nyquist), 0 above it

Every layer but the GRU acts on one frame; the GRU's hidden state is the only memory and is
carried between calls (``hidden``, one row per stream) when streaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from tildekit.models.config import DDSPConfig
from tildekit.models.streaming import MAX_BATCH_SIZE, Stateful


def exp_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """2 sigmoid(x)^ln 10 + 1e-7: a positive gain over about 7 decades (the DDSP paper's scaling)."""
    return 2.0 * torch.sigmoid(x).pow(2.302585092994046) + 1e-7


def mlp(inputs: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, width), nn.LayerNorm(width), nn.LeakyReLU(0.2),
                         nn.Linear(width, width), nn.LayerNorm(width), nn.LeakyReLU(0.2))


class Decoder(Stateful):
    state_names = ("hidden",)

    def __init__(self, cfg: DDSPConfig, streaming: bool) -> None:
        super().__init__()
        self.n_harmonics = cfg.n_harmonics
        self.noise_bands = cfg.noise_bands
        self.nyquist = cfg.sample_rate / 2.0
        self.streaming = streaming
        width = cfg.hidden
        self.inputs = mlp(2, width)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.outputs = mlp(width + 2, width)
        self.head = nn.Linear(width, 1 + cfg.n_harmonics + cfg.noise_bands)
        with torch.no_grad():
            # the noise starts shut (exp_sigmoid(-5) ~ 1e-4): opened early, a decoder learns
            # to answer every input with noise before its harmonics follow the input
            self.head.bias[1 + cfg.n_harmonics:].fill_(-5.0)
        self.register_buffer("numbers", torch.arange(1, cfg.n_harmonics + 1, dtype=torch.float32),
                             persistent=False)
        # (midi - 60) / 24 = log2(f0) / 2 + 0.375 - log2(440) / 2 and (dB + 50) / 25, as one affine map
        self.register_buffer("scale", torch.tensor([0.5, 1.0 / 25.0]), persistent=False)
        self.register_buffer("shift", torch.tensor([0.375 - 0.5 * math.log2(440.0), 2.0]), persistent=False)
        self.register_buffer("hidden", torch.zeros(1, MAX_BATCH_SIZE, width), persistent=False)

    def forward(self, f0: torch.Tensor, loudness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f0 (B, F) Hz, loudness (B, F) dB -> amplitudes (B, K, F), noise magnitudes (B, bands, F)."""
        batch = f0.shape[0]
        scaled = torch.stack([torch.log2(f0.clamp_min(1.0)), loudness], -1) * self.scale + self.shift  # (B, F, 2)
        if self.streaming:
            start = self.hidden[:, :batch]
        else:
            start = torch.zeros(1, batch, self.hidden.shape[-1], dtype=f0.dtype, device=f0.device)
        memory, end = self.gru(self.inputs(scaled), start)
        if self.streaming:
            if self.functional:
                self.hidden = end.detach()
            else:
                start.copy_(end.detach())
        out = exp_sigmoid(self.head(self.outputs(torch.cat([memory, scaled], -1))))  # (B, F, 1 + K + bands)
        amplitude = out[..., :1]
        distribution = out[..., 1: 1 + self.n_harmonics]
        audible = (f0.unsqueeze(-1) * self.numbers < self.nyquist).to(distribution.dtype)
        distribution = distribution * audible
        distribution = distribution / distribution.sum(-1, keepdim=True).clamp_min(1e-7)
        harmonics = amplitude * distribution
        noise = out[..., 1 + self.n_harmonics:]
        return harmonics.transpose(1, 2), noise.transpose(1, 2)

    def reset_state(self) -> None:
        self.hidden.zero_()


def decoder_flops_per_frame(cfg: DDSPConfig) -> int:
    """Multiply-adds x 2 of the decoder's matrix products for one frame (GRU: 3 gates, in and hidden)."""
    w = cfg.hidden
    linear = 2 * w + w * w + (w + 2) * w + w * w + w * (1 + cfg.n_harmonics + cfg.noise_bands)
    gru = 3 * (w * w + w * w)
    elementwise = 40 * w + 30 * (cfg.n_harmonics + cfg.noise_bands)  # norms, activations, gates
    return 2 * (linear + gru) + elementwise


"""ExportCore: the streaming model every exporter wraps (nn~, Neutone, ONNX).

It holds the streaming autoencoder (weight norm folded, gradients off) and the latent
projection learned from the run's latent statistics:

::

    encode:  audio ─► encoder ─► z (L dims) ─► P (z - mean) ─► first K principal dims
    decode:  K dims ─► append the dropped dims at their fill values ─► Pᵀ p + mean ─► decoder ─► audio
    forward: encode ─► × latent_scale + latent_bias ─► decode

``P`` rows are the principal axes ordered by explained variance, so ``latent 0`` is the most
important dimension; ``K`` (``keep``) is the exported latent size. Host wrappers add their
own method names and attribute plumbing; none of them repeats this arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from tildekit.models.autoencoder import AutoEncoder, remove_weight_norm


class ExportCore(nn.Module):
    def __init__(self, model: AutoEncoder, latent_mean: torch.Tensor | None = None,
                 components: torch.Tensor | None = None, keep: int | None = None,
                 fill: torch.Tensor | None = None) -> None:
        super().__init__()
        if not model.streaming:
            raise ValueError("ExportCore needs a model built with streaming=True")
        model = model.eval()
        remove_weight_norm(model)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.model = model
        full = model.latent_size
        if latent_mean is None:
            latent_mean = torch.zeros(full)
        if components is None:
            components = torch.eye(full)
        keep = full if keep is None else keep
        if not 1 <= keep <= full:
            raise ValueError(f"keep must be in 1..{full}, got {keep}")
        if fill is None:
            fill = torch.zeros(full)
        components = components.float()
        # z = Pᵀ p + mean; the dropped dims contribute a constant
        constant = components[keep:].t() @ fill[keep:].float() + latent_mean.float()
        self.register_buffer("latent_mean", latent_mean.float().reshape(full, 1))
        self.register_buffer("project", components[:keep].contiguous())  # (K, L)
        self.register_buffer("unproject", components[:keep].t().contiguous())  # (L, K)
        self.register_buffer("fill_constant", constant.reshape(full, 1))
        self.register_buffer("latent_bias", torch.zeros(keep))
        self.register_buffer("latent_scale", torch.ones(keep))
        self.temperature: float = 0.0
        self.sample_rate: int = model.sample_rate
        self.channels: int = model.channels
        self.compression: int = model.compression
        self.latent_size: int = keep
        self.full_latent_size: int = full
        self.encode_delay: int = model.encode_delay
        self.decode_delay: int = model.decode_delay
        self.delay: int = model.delay
        self.encoder_frames_delay: int = model.encode_delay // model.compression

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, K, T / compression), ordered by importance."""
        z = self.model.encode(x, self.temperature)
        return torch.matmul(self.project, z - self.latent_mean)

    def decode_from(self, p: torch.Tensor, input_delay: int) -> torch.Tensor:
        z = torch.matmul(self.unproject, p) + self.fill_constant
        return self.model.decode(z, input_delay)

    def decode(self, p: torch.Tensor) -> torch.Tensor:
        """(B, K, F) -> (B, C, F * compression)."""
        return self.decode_from(p, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.encode(x)
        p = p * self.latent_scale.unsqueeze(-1) + self.latent_bias.unsqueeze(-1)
        return self.decode_from(p, self.encoder_frames_delay)

    def reset_state(self) -> None:
        self.model.reset_state()


def untrained_core(profile: str, seed: int = 0) -> ExportCore:
    """The streaming core of ``profile`` with freshly initialised weights (benchmarks, speed tests).

    The weights are drawn in the whole-signal build and loaded into the streaming one, as a
    trained run's are, so both builds of the same seed compute the same thing.
    """
    from tildekit.models.autoencoder import build_model
    from tildekit.models.config import load_profile

    torch.manual_seed(seed)
    cfg = load_profile(profile).model
    whole = build_model(cfg, False).eval()
    streaming = build_model(cfg, True)
    streaming.load_state_dict(whole.state_dict())
    return ExportCore(streaming)

"""The variational autoencoder: encoder, posterior sampling, decoder, and their delays.

Streaming is a constructor argument: ``AutoEncoder(cfg, streaming=True)`` builds cached
layers whose consecutive buffers reproduce the whole-signal output ``delay`` samples late;
``streaming=False`` builds the training model. Both have the same ``state_dict`` keys.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from tildekit.models.blocks import LEAKY_SLOPE, Residual
from tildekit.models.config import ModelConfig
from tildekit.models.decoder import Decoder
from tildekit.models.encoder import Encoder
from tildekit.models.noise import NoiseTable
from tildekit.models.pqmf import PQMFAnalysis, PQMFSynthesis
from tildekit.models.streaming import Layers, Stateful

# The posterior starts narrow: scale softplus(raw - 4) = 0.018 where the encoder's raw output is
# 0, not softplus(0) = 0.69. No layer has a bias, so the posterior mean scales with the input's
# level, and a unit-wide posterior buried every quiet sound's mean in sampling noise: the decoder
# learnt to ignore the latent's detail (the `small` model of tests/test_quality.py after 300 steps:
# a loud white-noise burst came out 16 dB too quiet, log-STFT 3.93 against the 4 kHz low-pass
# reference's 2.19; with this offset and the profile's rate 3e-3, 2.06).
POSTERIOR_SCALE_OFFSET = 4.0


class AutoEncoder(Stateful):
    def __init__(self, cfg: ModelConfig, streaming: bool) -> None:
        super().__init__()
        # No conv has a bias: every activation maps 0 to 0, so zero in gives zero out.
        # Silence then plays as silence from step 0 (biases made a constant hum and a DC offset
        # that 300 steps did not train away, and a latent for silence far from the origin).
        layers = Layers(streaming, bias=False)
        self.encoder = Encoder(cfg, layers)
        self.decoder = Decoder(cfg, layers)
        self.posterior_noise = NoiseTable(cfg.latent_size, self.encoder.delay, streaming, "normal", seed=2)
        self.scale_offset = POSTERIOR_SCALE_OFFSET
        self.streaming = streaming
        self.sample_rate = cfg.sample_rate
        self.channels = cfg.channels
        self.compression = cfg.compression
        self.latent_size = cfg.latent_size
        self.encode_delay = self.encoder.delay * cfg.compression  # samples
        self.decode_delay = self.decoder.delay  # samples
        self.delay = self.encode_delay + self.decode_delay  # forward(), samples
        self.receptive_field = self.encoder.span + self.decoder.span  # samples
        initialise_weights(self)
        if cfg.weight_norm:
            apply_weight_norm(self)

    def encode_params(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, C, T) -> posterior mean and scale, each (B, L, T / compression)."""
        mean, raw_scale = self.encoder(x).chunk(2, 1)
        return mean, F.softplus(raw_scale - self.scale_offset) + 1e-4

    def sample(self, mean: torch.Tensor, scale: torch.Tensor, temperature: float) -> torch.Tensor:
        if self.training:
            if temperature == 0.0:
                return mean
            noise = torch.randn_like(mean)
        else:
            # Always read (and advance) the noise stream, so the noise at a given frame does not
            # depend on the temperature history; temperature 0 still returns the mean exactly.
            noise = self.posterior_noise(mean.shape[0], mean.shape[-1], 0)
        return mean + scale * noise * temperature

    def encode(self, x: torch.Tensor, temperature: float = 0.0) -> torch.Tensor:
        mean, scale = self.encode_params(x)
        return self.sample(mean, scale, temperature)

    def decode(self, z: torch.Tensor, input_delay: int = 0) -> torch.Tensor:
        """(B, L, F) -> (B, C, F * compression). ``input_delay``: latent frames ``z`` is late by."""
        return self.decoder(z, input_delay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x, 0.0), self.encoder.delay if self.streaming else 0)

    def reset_state(self) -> None:
        self.encoder.reset_state()
        self.decoder.reset_state()
        self.posterior_noise.reset_state()


def _learned_convs(model: nn.Module) -> list[nn.Module]:
    fixed = set()
    for module in model.modules():
        if isinstance(module, (PQMFAnalysis, PQMFSynthesis)):
            fixed.add(id(module.conv))
    return [m for m in model.modules()
            if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)) and id(m) not in fixed]


OUTPUT_LAYER_GAIN = 0.05
RESIDUAL_BRANCH_GAIN = 0.1


def initialise_weights(model: AutoEncoder) -> None:
    """He initialisation for the leaky ReLU slope (zero biases where a conv has one).

    PyTorch's default conv init shrinks the signal by about 1/sqrt(3) per layer, so after the
    encoder's 15-20 layers its output is the biases alone and the same latent comes out for
    silence and for music: the decoder then learns the average spectrum and ignores z. With
    variance-preserving weights the input reaches the latent at full strength from step 0.
    Transposed convs count their fan-in per output sample (kernel / stride taps of each input).
    """
    gain = nn.init.calculate_gain("leaky_relu", LEAKY_SLOPE)
    for conv in _learned_convs(model):
        kernel = conv.weight.shape[-1]
        if isinstance(conv, nn.ConvTranspose1d):
            fan_in = conv.in_channels * kernel / conv.stride[0]
        else:
            fan_in = conv.in_channels // conv.groups * kernel
        nn.init.normal_(conv.weight, 0.0, gain / math.sqrt(fan_in))
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    with torch.no_grad():
        # Each residual adds its branch to its input: at full gain the variance doubles per
        # block (a random `causal` model peaked at 60). Branches start small, blocks near identity.
        for module in model.modules():
            if isinstance(module, Residual):
                module.branch.layers[-1].weight.mul_(RESIDUAL_BRANCH_GAIN)
        # The decoder starts quiet but responsive (its output layer scaled down): a loud random
        # first output makes the first steps shrink everything, the latent's influence first.
        model.decoder.net.layers[-1].weight.mul_(OUTPUT_LAYER_GAIN)


def apply_weight_norm(model: nn.Module) -> None:
    for conv in _learned_convs(model):
        # dim=1 for transposed convs: their weight is (in, out, k) and norms go per output
        weight_norm(conv, dim=1 if isinstance(conv, nn.ConvTranspose1d) else 0)


def remove_weight_norm(model: nn.Module) -> None:
    """Fold weight-norm parametrizations into plain weights (what exports run)."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def build_model(cfg: ModelConfig, streaming: bool) -> AutoEncoder:
    return AutoEncoder(cfg, streaming)


class EarlierLayout(ValueError):
    """Weights of a model layout this version no longer builds."""


def load_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Strict ``load_state_dict``; ValueError naming the cause when ``state`` is from another layout."""
    expected = model.state_dict()
    stale = [key for key in state if key.endswith(".bias") and key not in expected]
    if stale:
        raise EarlierLayout(f"written by an earlier tildekit whose convolutions had biases "
                            f"({len(stale)} bias tensors, e.g. '{stale[0]}'); retrain with this version")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None

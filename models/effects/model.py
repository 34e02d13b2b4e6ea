"""EffectModel: audio -> audio with knobs, a TCN or GRU core, FiLM or concat conditioning.

::

    knob values (float attributes, one per knob, in the card's units and ranges)
      └─ scale to [-1, 1] ─► [film: MLP ─► (gamma, beta) per site | concat: as is]
           └─ smoother (one-pole per sample, state across calls) ─► cond (B, D, T)
    x (B, 1, T) ─► core (TCN | GRU) with cond ─► y (B, 1, T)        delay 0 (causal)

``streaming`` is a constructor argument, as for the autoencoder: the streaming build keeps
the TCN's conv caches and the GRU's hidden state across calls; both builds have the same
``state_dict`` keys. Knob values and the smoother's state are non-persistent buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from tildekit.models.config import EffectConfig
from tildekit.models.effects.conditioning import FilmGenerator, Smoother
from tildekit.models.effects.gru import GRUCore
from tildekit.models.effects.reference import KnobRange
from tildekit.models.effects.tcn import TCNCore
from tildekit.models.streaming import reset_state


class EffectModel(nn.Module):
    def __init__(self, cfg: EffectConfig, knobs: Sequence[KnobRange], streaming: bool = False) -> None:
        super().__init__()
        if not knobs:
            raise ValueError("an effect model needs at least one knob")
        self.sample_rate = cfg.sample_rate
        self.cfg = cfg  # Python-side (a dataclass TorchScript ignores): rebuild the other build
        self.knobs = tuple(knobs)
        self.streaming = streaming
        self.knob_names = [k.name for k in knobs]
        self.knob_ranges = [(float(k.minimum), float(k.maximum)) for k in knobs]
        self.register_buffer("knob_values", torch.tensor([float(k.default) for k in knobs]), persistent=False)
        self.register_buffer("knob_low", torch.tensor([float(k.minimum) for k in knobs]), persistent=False)
        self.register_buffer("knob_span", torch.tensor([float(k.maximum - k.minimum) for k in knobs]),
                             persistent=False)
        film = cfg.conditioning == "film"
        self.film = film
        core: nn.Module
        if cfg.core == "tcn":
            core = TCNCore(cfg.channels, cfg.kernel_size, list(cfg.dilations), len(knobs), film, streaming)
            self.receptive_field = core.receptive_field
        else:
            core = GRUCore(cfg.channels, len(knobs), film, streaming)
            self.receptive_field = 0
        self.core = core
        size = int(core.film_size) if film else len(knobs)
        self.generator = FilmGenerator(len(knobs), cfg.film_hidden, size) if film else None
        self.smoother = Smoother(size, cfg.smoothing_ms, cfg.sample_rate)
        self.delay = 0

    # ---- knobs

    @torch.jit.export
    def set_knob(self, index: int, value: float) -> None:
        """Set knob ``index`` (clamped to its range); the model glides to it (smoothing_ms)."""
        low, high = self.knob_ranges[index]
        self.knob_values[index] = min(max(value, low), high)

    @torch.jit.export
    def get_knob(self, index: int) -> float:
        return float(self.knob_values[index])

    def unit(self, values: torch.Tensor) -> torch.Tensor:
        """Knob values in their units (..., K) -> [-1, 1]."""
        return 2.0 * (values - self.knob_low) / self.knob_span - 1.0

    def condition(self, values: torch.Tensor) -> torch.Tensor:
        """(B, K) knob values in their units -> (B, D) conditioning vector."""
        unit = self.unit(values)
        generator = self.generator
        if generator is not None:
            return generator(unit)
        return unit

    # ---- audio

    def process(self, x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) audio with constant (B, K) knob values (training: no smoothing)."""
        return self.core(x, self.condition(values).unsqueeze(-1))

    def process_conditioned(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) audio with a (B, D, T) conditioning signal (what forward computes)."""
        return self.core(x, cond)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) -> (B, 1, T) at the knob attributes' values, smoothed across calls."""
        values = self.knob_values.unsqueeze(0).expand(x.shape[0], -1)
        cond = self.smoother(self.condition(values), x.shape[-1])
        return self.core(x, cond)

    @torch.jit.export
    def reset(self) -> None:
        """Zero the streaming state: conv caches or GRU state, and the knob smoother."""
        self.smoother.reset_state()
        self.core.reset_state()


def build_effect_model(cfg: EffectConfig, knobs: Sequence[KnobRange], streaming: bool = False) -> EffectModel:
    model = EffectModel(cfg, knobs, streaming)
    reset_state(model)
    return model

"""Every model family the export targets must take, each as a tiny random model and its card.

One entry per family: tests/test_targets.py runs every target against each of them. A family
that a target refuses on purpose is listed in ``REFUSED`` with the refusal's wording.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from tildekit.export.exportable import Exportable, StreamingExport
from tildekit.models.contract.card import AttributeSpec, MethodSpec, ModelCard


def tiny_autoencoder() -> tuple[Exportable, ModelCard]:
    from tildekit.export.core import ExportCore
    from tildekit.export.model_card import card_from_core, exportable
    from tildekit.models.autoencoder import build_model
    from tildekit.models.config import load_profile

    torch.manual_seed(0)
    cfg = load_profile("small", ["model.capacity=4", "model.max_channels=16", "model.latent_size=4"]).model
    core = ExportCore(build_model(cfg, True))
    return exportable(core), card_from_core(core, "tinyae", None, "small", 0)


GAIN_HOP = 64


class GainModel(nn.Module):
    """A family that is not the autoencoder: ``forward`` (1, 1, 1, 1) is a causal two-tap filter
    ``gain * (x[t] + smooth * x[t-1])`` carrying one sample of state per call; ``level``
    (1, 1, 1, HOP) is the mean absolute value of each frame of HOP samples."""

    def __init__(self) -> None:
        super().__init__()
        self.gain: float = 1.0
        self.smooth: float = 0.5
        self.hop: int = GAIN_HOP
        self.last = torch.zeros(1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.last.size(0) != x.size(0):
            self.last = torch.zeros(x.size(0), 1, 1)
        previous = torch.cat([self.last, x[..., :-1]], -1)
        self.last = x[..., -1:].clone()  # the host may reuse the input buffer
        return self.gain * (x + self.smooth * previous)

    @torch.jit.export
    def level(self, x: Tensor) -> Tensor:
        frames = x.reshape(x.size(0), 1, x.size(-1) // self.hop, self.hop)
        return frames.abs().mean(-1)

    @torch.jit.export
    def reset_state(self) -> None:
        self.last = torch.zeros(1, 1, 1)


def tiny_gain() -> tuple[Exportable, ModelCard]:
    from tildekit.export.model_card import card_from_exportable

    audio_in, audio_out = ["audio in"], ["audio out"]
    methods = {"forward": MethodSpec(1, 1, 1, 1, audio_in, audio_out, 0),
               "level": MethodSpec(1, 1, 1, GAIN_HOP, audio_in, ["level"], 0)}
    attributes: list[AttributeSpec] = [
        AttributeSpec("gain", ["float"], [1.0], 0.0, 2.0, "output gain"),
        AttributeSpec("smooth", ["float"], [0.5], 0.0, 1.0, "weight of the previous sample"),
    ]
    model = StreamingExport("gain", GainModel(), methods, attributes, 48000, 1, 0)
    return model, card_from_exportable(model, "tinygain")


# a DDSP small enough for a fast test: 16-wide GRU, 20 harmonics, 64-sample frames
TINY_DDSP = ["model.hidden=16", "model.n_harmonics=20", "model.noise_bands=17", "model.hop=64",
             "model.loudness_window=256"]


def tiny_ddsp() -> tuple[Exportable, ModelCard]:
    from tildekit.export import ddsp_export
    from tildekit.models.config import load_profile
    from tildekit.models.ddsp.model import DDSP

    torch.manual_seed(0)
    model = ddsp_export.exportable(DDSP(load_profile("ddsp", TINY_DDSP).model, streaming=True))
    return model, ddsp_export.card(model, "tinyddsp", "ddsp", 0)


# an effect model small enough for a fast test: 8-channel TCN of three blocks, FiLM knobs
TINY_EFFECT = ["model.channels=8", "model.kernel_size=3", "model.dilations=[1, 2, 4]"]


def tiny_effect() -> tuple[Exportable, ModelCard]:
    from tildekit.export import effect_export
    from tildekit.models.config import EffectConfig, load_profile
    from tildekit.models.effects.model import build_effect_model
    from tildekit.models.effects.reference import OVERDRIVE

    torch.manual_seed(0)
    cfg = load_profile("effect-tcn", TINY_EFFECT).model
    assert isinstance(cfg, EffectConfig)
    model = effect_export.exportable(build_effect_model(cfg, OVERDRIVE.knobs, streaming=True))
    return model, effect_export.card(model, "tinyeffect", "effect-tcn", 0)


FAMILIES: dict[str, Callable[[], tuple[Exportable, ModelCard]]] = {
    "autoencoder": tiny_autoencoder,
    "ddsp": tiny_ddsp,
    "effect": tiny_effect,
    "gain": tiny_gain,
}

# (family, target) -> the words of the target's refusal: a family the target does not take yet.
REFUSED: dict[tuple[str, str], str] = {
    ("gain", "onnx"): "ONNX export of gain models is not available yet",
}

"""The effect family as the export targets see it (export/exportable.py, docs/effects.md).

:func:`exportable` wraps a streaming :class:`~tildekit.models.effects.model.EffectModel` once in
:class:`EffectKnobs`: one method, ``forward`` (audio to audio, 1 in / 1 out, ratio 1, delay 0),
and one plain float attribute per knob, named after it, which ``forward`` hands to the model on
every call (the model's smoother then glides to it, so a knob move does not click). nn~ gets
every knob as an attribute; Neutone FX has four knobs and gets the first four (the card's
``extra.neutone_left_out`` and the Neutone export's warning name the others); ONNX traces
:class:`KnobInputs`, the same adapter with every knob a scalar input of the graph.

The adapter's knob attributes and the line that hands them over are generated per model:
TorchScript reads and writes module attributes by name only.
"""

from __future__ import annotations

import linecache
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from tildekit.errors import TildekitError
from tildekit.export.exportable import StreamingExport, prepare_streaming
from tildekit.export.model_card import card_from_exportable
from tildekit.export.onnx_runtime import INPUT, OUTPUT
from tildekit.models.contract.attributes import RESET
from tildekit.models.contract.card import AttributeSpec, MethodSpec, ModelCard
from tildekit.models.contract.names import identifier_problem, shown, text_problem
from tildekit.models.effects.model import EffectModel
from tildekit.models.effects.reference import KnobRange

FAMILY = "effect"


class EffectKnobs(nn.Module):
    """``forward(x)``: the model at the knob attributes' values; ``reset_state()`` clears the
    model's caches, recurrent state and knob smoother. Built by :func:`knob_module`."""

    __jit_unused_properties__ = ["sample_rate", "channels"]  # for the exporters' checks, not scripted

    def __init__(self, model: EffectModel) -> None:
        super().__init__()
        self.model = model

    @property
    def sample_rate(self) -> int:
        return int(self.model.sample_rate)

    @property
    def channels(self) -> int:
        return 1

    def forward(self, x: Tensor) -> Tensor:
        self.push_knobs()
        return self.model(x)

    def push_knobs(self) -> None:  # generated per model (_knob_push)
        raise NotImplementedError

    @torch.jit.export
    def reset_state(self) -> None:
        self.model.reset()


class KnobInputs(EffectKnobs):
    """What the ONNX exporter traces (export/target_onnx.py): the exporter sets each knob
    attribute to a graph input (a scalar tensor, export/onnx_export.StateGraph), and the model's
    knob buffer is reassigned from them, clamped to the knobs' ranges, not written in place."""

    def push_knobs(self) -> None:
        model = self.model
        values = torch.stack([torch.as_tensor(getattr(self, name), dtype=torch.float32)
                              for name in model.knob_names])
        low, high = (torch.tensor(ends, dtype=torch.float32) for ends in zip(*model.knob_ranges))
        model.knob_values = torch.minimum(torch.maximum(values, low), high)


def knob_graph(module: nn.Module) -> KnobInputs:
    """The graph form of an :class:`EffectKnobs` adapter, on the same model and knob values."""
    if not isinstance(module, EffectKnobs):
        raise TildekitError(f"an effect export's module is an EffectKnobs adapter, not {type(module).__name__}")
    model: Any = module.model
    graph = KnobInputs(model)
    for name in model.knob_names:
        setattr(graph, name, getattr(module, name))
    return graph


_PUSH_TEMPLATE = '''
class KnobPush:
    def push_knobs(self) -> None:
        self.model.knob_values.copy_(torch.tensor([{values}]))
'''


def _knob_push(names: list[str]) -> type:
    """A mixin whose ``push_knobs`` copies the float attributes ``names`` into the model's knobs."""
    source = _PUSH_TEMPLATE.format(values=", ".join(f"self.{name}" for name in names))
    filename = f"<tildekit-effect-knobs-{'-'.join(names)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"torch": torch}
    exec(compile(source, filename, "exec"), namespace)
    return namespace["KnobPush"]


MAX_UNIT = 16  # characters of a knob's unit ("dB", "Hz", "ms", "semitones")


def check_knobs(knobs: Sequence[KnobRange]) -> None:
    """Knobs come from a pair set's index (through the checkpoint). Each name becomes a module
    attribute and nn~ method names (``get_NAME`` / ``set_NAME``), so it must be an identifier the
    adapter does not use; each range must be finite and not empty, its unit short plain text."""
    names = [k.name for k in knobs]
    # ONNX names the audio input and output x and y; each knob is an input named after it
    taken = set(dir(KnobInputs)) | {"model", "training", RESET, INPUT, OUTPUT}
    for knob in knobs:
        name = knob.name
        problem = identifier_problem(name)
        if problem:
            raise TildekitError(f"knob name {shown(name)} {problem}: rename the knob in the pair set's "
                                f"pairs.json and train again")
        if name in taken or name.startswith("_"):
            raise TildekitError(f"knob name {shown(name)} is taken by the export's own methods and "
                                f"attributes: rename the knob in the pair set's pairs.json and train again")
        numbers = (knob.minimum, knob.maximum, knob.default)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in numbers) \
                or not knob.minimum < knob.maximum or not knob.minimum <= knob.default <= knob.maximum:
            raise TildekitError(f"knob {name}: range {shown(knob.minimum)}..{shown(knob.maximum)} with default "
                                f"{shown(knob.default)} is not a finite range holding its default: fix the "
                                f"pair set's pairs.json and train again")
        problem = text_problem(knob.unit, MAX_UNIT)
        if problem:
            raise TildekitError(f"knob {name}: its unit {shown(knob.unit)} {problem}: fix the pair set's "
                                f"pairs.json and train again")
    if len(set(names)) != len(names):
        raise TildekitError(f"knob names {', '.join(names)} repeat a name: each knob needs its own")


def knob_settings(model: EffectModel) -> list[float]:
    """The model's knob values, each the knob's default as written when it holds that (the
    buffer is float32: 0.9 reads back as 0.8999999761...)."""
    values = []
    for index, knob in enumerate(model.knobs):
        value = model.get_knob(index)
        values.append(float(knob.default) if value == float(np.float32(knob.default)) else value)
    return values


def knob_module(model: EffectModel) -> EffectKnobs:
    """The adapter of ``model``, its knob attributes at the model's current knob values."""
    names = list(model.knob_names)
    check_knobs(model.knobs)
    cls = type(f"EffectKnobs_{len(names)}", (_knob_push(names), EffectKnobs), {})
    module = cls(model)
    for name, value in zip(names, knob_settings(model)):
        setattr(module, name, value)
    return module


def knob_description(name: str, unit: str, low: float, high: float) -> str:
    return f"{name}{f' ({unit})' if unit else ''}, {low:g} to {high:g}"


def attribute_specs(model: EffectModel) -> list[AttributeSpec]:
    """One float attribute per knob, its range and unit from the pair set's knob table; the
    model's current knob value is the file's default."""
    specs = []
    for knob, value in zip(model.knobs, knob_settings(model)):
        low, high = float(knob.minimum), float(knob.maximum)
        default = float(value) if low <= value <= high else float(knob.default)
        specs.append(AttributeSpec(knob.name, ["float"], [default], low, high,
                                   knob_description(knob.name, knob.unit, low, high)))
    return specs


def method_table() -> dict[str, MethodSpec]:
    return {"forward": MethodSpec(1, 1, 1, 1, ["audio in"], ["audio out"], 0)}


def exportable(model: EffectModel) -> StreamingExport:
    """The effect family as the export targets see it (prepares ``model`` in place)."""
    model = prepare_streaming(model, EffectModel, "EffectModel(cfg, knobs, streaming=True)", reset="reset")
    if model.delay != 0:
        raise TildekitError(f"an effect model must be causal (delay 0); this one reports {model.delay}")
    return StreamingExport(family=FAMILY, module=knob_module(model), methods=method_table(),
                           attributes=attribute_specs(model), sample_rate=int(model.sample_rate),
                           channels=1, delay=0)


def card(export: StreamingExport, name: str, profile_name: str = "", step: int = 0,
         extra: dict[str, Any] | None = None) -> ModelCard:
    """The model card of an effect export (export/model_card.card_from_exportable); its extra
    names the knobs Neutone FX plays and those it leaves out (export/neutone.knob_attributes)."""
    from tildekit.export.neutone import knob_attributes

    model: Any = export.module.model
    cfg = model.cfg
    facts = {"core": str(cfg.core), "conditioning": str(cfg.conditioning),
             "receptive_field": int(model.receptive_field), "smoothing_ms": float(cfg.smoothing_ms),
             "knob_units": {k.name: k.unit for k in model.knobs}}
    described = card_from_exportable(export, name, profile_name, step, {**facts, **(extra or {})})
    on_knobs, left = knob_attributes(described)
    return replace(described, extra={**described.extra, "neutone_knobs": [a.name for a in on_knobs],
                                     "neutone_left_out": left}).checked()

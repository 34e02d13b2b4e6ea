"""Export a tildekit model to ONNX: one graph per method, streaming state as explicit tensors.

ONNX graphs hold no hidden state (docs/contracts.md §3), so each streaming layer's cache becomes a
graph input and its updated value a graph output (file format: :mod:`onnx_runtime`)::

    x, temperature, ..., state_in.0 .. state_in.N-1 ─► ExportCore.METHOD ─► y, state_out.0 .. N-1

How the graph is obtained without restating the model's arithmetic: the stateful layers have a
``functional`` mode in which they *reassign* their state attribute instead of writing into it.
:class:`StateGraph` sets each state attribute to a graph input, runs the method (of ExportCore,
or of another family's streaming module, given the method's card entry) and returns the
reassigned attributes; the TorchScript-based exporter traces that.

- Which states a method uses is found by a dry run: the attributes it reassigned.
- ``temperature`` is a python float in ExportCore; here it is set to a tensor input and the
  trace is taken with a non-zero example value, so the graph keeps the general path
  ``mean + scale * noise * temperature`` (which equals ``mean`` exactly at temperature 0).

The traced graph's shape arithmetic around the cached paddings is then rewritten into plain
negative-index slices (:func:`simplify_slices`). Every file is checked (:func:`check_onnx`:
onnx.checker, onnxruntime, shapes, and equality with the TorchScript-scripted ExportCore on the
same buffers) before it is moved into place.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn

from tildekit.errors import TildekitError
from tildekit.export.card_io import set_onnx_card
from tildekit.export.core import ExportCore
from tildekit.export.onnx_runtime import (
    ATTRIBUTE_INPUTS,
    BATCH,
    INPUT,
    META_BATCH,
    META_BUFFER,
    META_METHOD,
    META_OPSET,
    META_STATE,
    META_STREAMING,
    OUTPUT,
    STATE_IN,
    StateSpec,
    graph_attributes,
    states_to_json,
)
from tildekit.models.autoencoder import build_model, remove_weight_norm
from tildekit.models.config import ModelConfig
from tildekit.models.contract.attributes import LATENT_BIAS, LATENT_SCALE, TEMPERATURE
from tildekit.models.contract.card import MethodSpec, ModelCard
from tildekit.models.contract.hosts import DEFAULT_BUFFER
from tildekit.models.streaming import MAX_BATCH_SIZE, Stateful, set_functional, set_gemm, stateful_layers

if TYPE_CHECKING:  # onnx is imported where a graph is built
    import onnx

OPSET = 17  # widely supported (onnxruntime >= 1.14, i.e. also older Raspberry Pi wheels)
TRACE_TEMPERATURE = 0.5  # any non-zero value: keeps the noise path in the graph


@dataclass(frozen=True)
class StateSlot:
    """A state attribute of one layer, as the exporter feeds it."""

    layer: Stateful
    attribute: str
    path: str  # e.g. model.decoder.noise.counter
    shape: tuple[int, ...]  # with MAX_BATCH_SIZE at ``batch_axis``
    batch_axis: int | None  # the axis of the streams (batch rows), None: shared by all
    dtype: torch.dtype

    def sizes(self, batch: int | str) -> list:
        return [batch if axis == self.batch_axis else size for axis, size in enumerate(self.shape)]

    def zeros(self, batch: int) -> torch.Tensor:
        return torch.zeros(self.sizes(batch), dtype=self.dtype)

    def spec(self, index: int) -> StateSpec:
        return StateSpec(f"{STATE_IN}{index}", self.sizes(BATCH), str(self.dtype).replace("torch.", ""), self.path)


def all_state_slots(core: nn.Module, batch_axes: dict[str, int | None] | None = None) -> list[StateSlot]:
    """Every state of ``core``'s stateful layers; ``batch_axes`` (by path) as :func:`probe_batch_axes`
    finds them, else a guess: the first axis of MAX_BATCH_SIZE of a state with two axes or more."""
    paths = {id(m): p for p, m in core.named_modules()}
    slots = []
    for layer in stateful_layers(core):
        for attribute in layer.state_names:
            value = getattr(layer, attribute)
            path = f"{paths[id(layer)]}.{attribute}"
            # states hold MAX_BATCH_SIZE streams on one axis (cached paddings (B, C, L), a GRU's
            # hidden state (1, B, H)); counters are shared by all streams
            axes = [axis for axis, size in enumerate(value.shape) if size == MAX_BATCH_SIZE]
            batch_axis = axes[0] if value.dim() >= 2 and axes else None
            if batch_axes is not None and path in batch_axes:
                batch_axis = batch_axes[path]
            slots.append(StateSlot(layer, attribute, path, tuple(value.shape), batch_axis, value.dtype))
    return slots


def probe_batch_axes(graph: StateGraph, x: torch.Tensor, attributes: Sequence[torch.Tensor]
                     ) -> dict[str, int | None]:
    """The batch axis of each state the method reassigns: where a call on ``x`` (a batch other
    than MAX_BATCH_SIZE) leaves as many rows as ``x`` has from the MAX_BATCH_SIZE rows it was
    fed. A guess from sizes alone fails when another axis also has MAX_BATCH_SIZE entries (the
    cache of a causal conv whose ``(k - 1) d`` is 64, a state of 64 channels)."""
    fed = [getattr(slot.layer, slot.attribute).clone() for slot in graph.slots]
    with torch.no_grad():
        new = graph(x, *attributes, *fed)[1:]
    axes: dict[str, int | None] = {}
    for slot, before, after in zip(graph.slots, fed, new):
        if after is before or after.dim() != before.dim():
            continue
        changed = [axis for axis in range(before.dim()) if before.shape[axis] != after.shape[axis]]
        if changed == [] or (len(changed) == 1 and after.shape[changed[0]] == x.shape[0]):
            axes[slot.path] = changed[0] if changed else None
    return axes


def attribute_inputs(core: nn.Module, method: str, card: ModelCard | None = None) -> tuple[str, ...]:
    """The attributes a method's graph takes as inputs: ``card``'s (onnx_runtime.graph_attributes),
    or without a card ExportCore's; other families' attributes are read from the module and
    fixed in the graph."""
    if card is not None:
        return graph_attributes(card, method)
    return ATTRIBUTE_INPUTS.get(method, ()) if isinstance(core, ExportCore) else ()


def method_io(core: nn.Module, method: str, spec: MethodSpec | None = None) -> tuple[int, int]:
    """(input channels, input ratio) of a method: from its card entry, else ExportCore's."""
    if spec is not None:
        return spec.in_channels, spec.in_ratio
    if not isinstance(core, ExportCore):
        raise TildekitError(f"{type(core).__name__}.{method}: the ONNX exporter needs the method's card entry")
    return (core.latent_size, core.compression) if method == "decode" else (core.channels, 1)


class StateGraph(nn.Module):
    """``forward(x, *attributes, *states) -> (y, *new_states)`` for one method of a streaming module."""

    def __init__(self, core: nn.Module, method: str, slots: Sequence[StateSlot], card: ModelCard | None = None
                 ) -> None:
        super().__init__()
        self.core = core
        self.method = method
        self.attribute_names = attribute_inputs(core, method, card)
        self.slots = list(slots)  # their layers are already submodules of core

    def forward(self, x: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        count = len(self.attribute_names)
        # temperature replaces ExportCore's float, latent_bias / latent_scale its buffers; each
        # knob input an effect adapter's float attribute (export/effect_export.KnobInputs)
        for name, value in zip(self.attribute_names, inputs[:count]):
            setattr(self.core, name, value)
        for slot, state in zip(self.slots, inputs[count:]):
            setattr(slot.layer, slot.attribute, state)
        y = getattr(self.core, self.method)(x)
        return (y, *[getattr(slot.layer, slot.attribute) for slot in self.slots])


def attribute_examples(core: nn.Module, method: str, card: ModelCard | None = None) -> list[torch.Tensor]:
    names = attribute_inputs(core, method, card)
    if not names:
        return []
    if not isinstance(core, ExportCore):  # knobs: each at its default
        assert card is not None
        return [torch.tensor(float(card.attribute(name).default[0])) for name in names]
    values = {TEMPERATURE: torch.tensor(TRACE_TEMPERATURE),
              LATENT_BIAS: torch.zeros(core.latent_size),
              LATENT_SCALE: torch.ones(core.latent_size)}
    return [values[name] for name in names]


def example_input(core: nn.Module, method: str, batch: int, samples: int, spec: MethodSpec | None = None
                  ) -> torch.Tensor:
    channels, ratio = method_io(core, method, spec)
    return torch.randn(batch, channels, samples // ratio)


def state_graph(core: nn.Module, method: str, streaming: bool, samples: int, spec: MethodSpec | None = None,
                card: ModelCard | None = None) -> tuple[StateGraph, list[StateSlot]]:
    """A private copy of ``core`` wrapped for ``method``, with the state slots the method uses."""
    work = copy.deepcopy(core).eval()
    native_convolutions(work)
    if not streaming:
        return StateGraph(work, method, [], card), []
    set_functional(work, True)
    attributes = attribute_examples(work, method, card)
    batch_axes = probe_batch_axes(StateGraph(work, method, all_state_slots(work), card),
                                  example_input(work, method, 3, samples, spec), attributes)
    slots = all_state_slots(work, batch_axes)
    batch = 2
    fed = [slot.zeros(batch) for slot in slots]
    graph = StateGraph(work, method, slots, card)
    with torch.no_grad():
        graph(example_input(work, method, batch, samples, spec), *attributes, *fed)
    # a method's state is what it reassigned; the rest belongs to other methods
    used = [slot for slot, tensor in zip(slots, fed) if getattr(slot.layer, slot.attribute) is not tensor]
    return StateGraph(work, method, used, card), used


def native_convolutions(model: nn.Module) -> None:
    """Export every conv as one ONNX ``Conv`` node. The im2col-GEMM form works around PyTorch's
    slow dilated conv; onnxruntime's Conv needs no such help (same speed on `raspberry` at
    buffer 2048, one thread: GEMM/Conv time 1.01) and the graph stays one node per layer."""
    set_gemm(model, False)


def whole_signal_core(core: ExportCore, config: ModelConfig) -> ExportCore:
    """``core``'s weights and latent projection on the whole-signal (non-streaming) build.

    ExportCore refuses a non-streaming model (hosts stream); its arithmetic does not depend on
    the build, so the whole build is swapped in on a copy.
    """
    whole = build_model(config, False).eval()
    remove_weight_norm(whole)
    whole.load_state_dict(core.model.state_dict())
    for parameter in whole.parameters():
        parameter.requires_grad_(False)
    result = copy.deepcopy(core)
    result.model = whole
    return result


@dataclass(frozen=True)
class GraphShape:
    """Which axes of a graph are fixed. ``buffer``: samples per call (traced; recorded when fixed)."""

    buffer: int = DEFAULT_BUFFER
    dynamic_time: bool = True
    batch: int | None = None  # None: dynamic batch

    def frames(self, core: nn.Module, method: str, spec: MethodSpec | None = None) -> int:
        """Input frames per call at ``buffer`` samples."""
        return self.buffer // method_io(core, method, spec)[1]


def export_graph(core: nn.Module, method: str, streaming: bool, shape: GraphShape = GraphShape(),
                 spec: MethodSpec | None = None, card: ModelCard | None = None) -> tuple[bytes, list[StateSpec]]:
    """The ONNX bytes of one method and the specs of its state inputs.

    ``core``: ExportCore, or another family's streaming module with ``spec``, the method's card
    entry (its input channels and ratio), and for a knob family its ``card`` (the knob inputs)."""
    graph, slots = state_graph(core, method, streaming, shape.buffer, spec, card)
    # a dynamic batch is traced with 2, not 1: a traced size of 1 could be taken for a broadcast
    batch = shape.batch or 2
    args = (example_input(core, method, batch, shape.buffer, spec), *attribute_examples(core, method, card),
            *[slot.zeros(batch) for slot in slots])
    specs = [slot.spec(i) for i, slot in enumerate(slots)]
    input_names = [INPUT, *attribute_inputs(core, method, card), *[s.name for s in specs]]
    output_names = [OUTPUT, *[s.output_name for s in specs]]
    dynamic_axes: dict[str, dict[int, str]] = {}
    batch_axis = {0: "batch"} if shape.batch is None else {}
    if shape.dynamic_time:
        dynamic_axes = {INPUT: {**batch_axis, 2: "time"}, OUTPUT: {**batch_axis, 2: "time_out"}}
    elif batch_axis:
        dynamic_axes = {INPUT: batch_axis, OUTPUT: batch_axis}
    for slot, state in zip(slots, specs):
        if batch_axis and slot.batch_axis is not None:
            dynamic_axes[state.name] = dynamic_axes[state.output_name] = {slot.batch_axis: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the tracer warns about the python branch on temperature and the torch.onnx deprecation
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, args, buffer, dynamo=False, opset_version=OPSET, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True)
    return simplify_slices(buffer.getvalue()), specs


# ------------------------------------------------------------------- slicing without shape arithmetic
#
# The cached paddings slice with ``x[..., x.shape[-1] - padding:]`` and ``pad[:batch]``. Traced,
# each becomes Shape -> Gather -> Sub -> Unsqueeze -> Slice, and with a dynamic axis onnxruntime
# cannot fold those chains: they made its streaming graphs up to 3x slower. The same slices
# written with negative indices (``x[..., -padding:]``) need no shape, and ``pad[:batch]`` of a
# state that has ``batch`` rows by the file contract is the state itself. Every rewritten file
# still has to match the TorchScript on the same buffers (check_onnx) before it is written.

def simplify_slices(data: bytes) -> bytes:
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(data)
    graph = proto.graph
    producers = {out: node for node in graph.node for out in node.output}
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    state_inputs = {i.name for i in graph.input if i.name.startswith(STATE_IN)}
    renamed: dict[str, str] = {}  # slice output -> the state it passes through
    dropped = set()
    for node in graph.node:
        if node.op_type != "Slice" or len(node.input) < 4 or len(node.input) > 5:
            continue
        axes = constants.get(node.input[3])
        steps = constants.get(node.input[4]) if len(node.input) == 5 else np.ones(1)
        if axes is None or steps is None or axes.size != 1 or steps.tolist() != [1]:
            continue
        axis = int(axes.reshape(-1)[0])
        for position in (1, 2):  # starts, ends
            found = _size_minus(node.input[position], producers, constants)
            if found is not None and found[0] == node.input[0] and found[1] == axis and found[2] > 0:
                name = f"{node.name or node.output[0]}_negative_{position}"
                graph.initializer.append(numpy_helper.from_array(np.array([-found[2]], np.int64), name))
                node.input[position] = name
        batch_rows = _size_minus(node.input[2], producers, constants)
        starts = constants.get(node.input[1])
        if (axis == 0 and node.input[0] in state_inputs and starts is not None and starts.tolist() == [0]
                and batch_rows is not None and batch_rows[1:] == (0, 0)):
            renamed[node.output[0]] = node.input[0]
            dropped.add(id(node))
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    kept = [n for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(_live_nodes(kept, {o.name for o in graph.output}))
    used = {name for node in graph.node for name in node.input}
    initializers = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    return proto.SerializeToString()


def _size_minus(name: str, producers: dict, constants: dict) -> tuple[str, int, int] | None:
    """``(t, axis, c)`` when ``name`` is ``Unsqueeze(t.shape[axis] - c, [0])`` (c = 0 without Sub)."""
    node = producers.get(name)
    if node is None or node.op_type != "Unsqueeze" or len(node.input) != 2:
        return None
    axes = constants.get(node.input[1])
    if axes is None or axes.reshape(-1).tolist() != [0]:
        return None
    inner, c = producers.get(node.input[0]), 0
    if inner is not None and inner.op_type == "Sub":
        value = constants.get(inner.input[1])
        if value is None or value.size != 1:
            return None
        c, inner = int(value.reshape(-1)[0]), producers.get(inner.input[0])
    if inner is None or inner.op_type != "Gather":
        return None
    index = constants.get(inner.input[1])
    shape = producers.get(inner.input[0])
    if index is None or index.size != 1 or shape is None or shape.op_type != "Shape" or shape.attribute:
        return None
    return shape.input[0], int(index.reshape(-1)[0]), c


def _live_nodes(nodes: list, outputs: set[str]) -> list:
    """``nodes`` (topologically sorted) without those no graph output depends on."""
    needed, live = set(outputs), []
    for node in reversed(nodes):
        if any(out in needed for out in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    return live[::-1]


def build_onnx(core: nn.Module, card: ModelCard, method: str, streaming: bool = True,
               shape: GraphShape = GraphShape()) -> tuple[onnx.ModelProto, list[StateSpec]]:
    """One method's model proto, metadata included (``core`` is the whole-signal core when not streaming)."""
    import onnx

    spec = card.methods[method]
    data, specs = export_graph(core, method, streaming, shape, spec, card)
    proto = onnx.load_from_string(data)
    set_onnx_card(proto, card)
    meta = {META_METHOD: method, META_STATE: states_to_json(specs), META_OPSET: str(OPSET),
            META_STREAMING: "true" if streaming else "false"}
    if not shape.dynamic_time:
        meta[META_BUFFER] = str(shape.frames(core, method, spec))
    if shape.batch is not None:
        meta[META_BATCH] = str(shape.batch)
    for key, value in meta.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    proto.doc_string = f"tildekit {card.name} {method} ({'streaming' if streaming else 'whole signal'})"
    return proto, specs

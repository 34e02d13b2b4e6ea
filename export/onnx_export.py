"""Export a tildekit model to ONNX: one graph per method, streaming state as explicit tensors.

ONNX graphs hold no hidden state (docs/contracts.md §3), so each streaming layer's cache becomes a
graph input and its updated value a graph output (file format: :mod:`onnx_runtime`)::

    x, temperature, ..., state_in.0 .. state_in.N-1 ─► ExportCore.METHOD ─► y, state_out.0 .. N-1

How the graph is obtained without restating the model's arithmetic: the stateful layers have a
``functional`` mode in which they *reassign* their state attribute instead of writing into it.
:class:`StateGraph` sets each state attribute to a graph input, runs the ExportCore method
and returns the reassigned attributes; the TorchScript-based exporter traces that.

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

import contextlib
import copy
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn

from tildekit.errors import TildekitError
from tildekit.export.card_io import set_onnx_card
from tildekit.export.check_result import CheckResult
from tildekit.export.core import ExportCore
from tildekit.export.onnx_check import (
    TOLERANCE,
    OnnxCallRunner,
    Record,
    call_quantum,
    check_batches,
    check_signal,
)
from tildekit.export.onnx_check import (
    check_onnx as check_onnx_contract,
)
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
    OnnxInfo,
    StateSpec,
    method_file_name,
    state_file_name,
    states_to_json,
)
from tildekit.models.autoencoder import build_model, remove_weight_norm
from tildekit.models.config import ModelConfig
from tildekit.models.contract.attributes import LATENT_BIAS, LATENT_SCALE, METHODS, TEMPERATURE
from tildekit.models.contract.card import ModelCard
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
    shape: tuple[int, ...]  # without the batch dimension when ``batched``
    batched: bool
    dtype: torch.dtype

    def zeros(self, batch: int) -> torch.Tensor:
        return torch.zeros((batch, *self.shape) if self.batched else self.shape, dtype=self.dtype)

    def spec(self, index: int) -> StateSpec:
        shape: list[int | str] = ([BATCH] if self.batched else []) + list(self.shape)
        return StateSpec(f"{STATE_IN}{index}", shape, str(self.dtype).replace("torch.", ""), self.path)


def all_state_slots(core: nn.Module) -> list[StateSlot]:
    paths = {id(m): p for p, m in core.named_modules()}
    slots = []
    for layer in stateful_layers(core):
        for attribute in layer.state_names:
            value = getattr(layer, attribute)
            # cached paddings hold MAX_BATCH_SIZE rows (B, C, L); counters are shared by all rows
            batched = value.dim() == 3 and value.shape[0] == MAX_BATCH_SIZE
            shape = tuple(value.shape[1:]) if batched else tuple(value.shape)
            slots.append(StateSlot(layer, attribute, f"{paths[id(layer)]}.{attribute}", shape, batched, value.dtype))
    return slots


class StateGraph(nn.Module):
    """``forward(x, *attributes, *states) -> (y, *new_states)`` for one ExportCore method."""

    def __init__(self, core: ExportCore, method: str, slots: Sequence[StateSlot]) -> None:
        super().__init__()
        self.core = core
        self.method = method
        self.attribute_names = ATTRIBUTE_INPUTS[method]
        self.slots = list(slots)  # their layers are already submodules of core

    def forward(self, x: torch.Tensor, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        count = len(self.attribute_names)
        # temperature replaces ExportCore's float, latent_bias / latent_scale its buffers
        for name, value in zip(self.attribute_names, inputs[:count]):
            setattr(self.core, name, value)
        for slot, state in zip(self.slots, inputs[count:]):
            setattr(slot.layer, slot.attribute, state)
        y = getattr(self.core, self.method)(x)
        return (y, *[getattr(slot.layer, slot.attribute) for slot in self.slots])


def attribute_examples(core: ExportCore, method: str) -> list[torch.Tensor]:
    values = {TEMPERATURE: torch.tensor(TRACE_TEMPERATURE),
              LATENT_BIAS: torch.zeros(core.latent_size),
              LATENT_SCALE: torch.ones(core.latent_size)}
    return [values[name] for name in ATTRIBUTE_INPUTS[method]]


def example_input(core: ExportCore, method: str, batch: int, samples: int) -> torch.Tensor:
    if method == "decode":
        return torch.randn(batch, core.latent_size, samples // core.compression)
    return torch.randn(batch, core.channels, samples)


def state_graph(core: ExportCore, method: str, streaming: bool, samples: int) -> tuple[StateGraph, list[StateSlot]]:
    """A private copy of ``core`` wrapped for ``method``, with the state slots the method uses."""
    work = copy.deepcopy(core).eval()
    native_convolutions(work)
    if not streaming:
        return StateGraph(work, method, []), []
    set_functional(work, True)
    slots = all_state_slots(work)
    batch = 2
    fed = [slot.zeros(batch) for slot in slots]
    graph = StateGraph(work, method, slots)
    with torch.no_grad():
        graph(example_input(work, method, batch, samples), *attribute_examples(work, method), *fed)
    # a method's state is what it reassigned; the rest belongs to other methods
    used = [slot for slot, tensor in zip(slots, fed) if getattr(slot.layer, slot.attribute) is not tensor]
    return StateGraph(work, method, used), used


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

    def frames(self, core: ExportCore, method: str) -> int:
        """Input frames per call at ``buffer`` samples."""
        return self.buffer // core.compression if method == "decode" else self.buffer


def export_graph(core: ExportCore, method: str, streaming: bool,
                 shape: GraphShape = GraphShape()) -> tuple[bytes, list[StateSpec]]:
    """The ONNX bytes of one method and the specs of its state inputs."""
    graph, slots = state_graph(core, method, streaming, shape.buffer)
    # a dynamic batch is traced with 2, not 1: a traced size of 1 could be taken for a broadcast
    batch = shape.batch or 2
    args = (example_input(core, method, batch, shape.buffer), *attribute_examples(core, method),
            *[slot.zeros(batch) for slot in slots])
    specs = [slot.spec(i) for i, slot in enumerate(slots)]
    input_names = [INPUT, *ATTRIBUTE_INPUTS[method], *[s.name for s in specs]]
    output_names = [OUTPUT, *[s.output_name for s in specs]]
    dynamic_axes: dict[str, dict[int, str]] = {}
    batch_axis = {0: "batch"} if shape.batch is None else {}
    if shape.dynamic_time:
        dynamic_axes = {INPUT: {**batch_axis, 2: "time"}, OUTPUT: {**batch_axis, 2: "time_out"}}
    elif batch_axis:
        dynamic_axes = {INPUT: batch_axis, OUTPUT: batch_axis}
    for spec in specs:
        if batch_axis and spec.shape[0] == BATCH:
            dynamic_axes[spec.name] = dynamic_axes[spec.output_name] = batch_axis
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


def build_onnx(core: ExportCore, card: ModelCard, method: str, streaming: bool = True,
               shape: GraphShape = GraphShape()) -> tuple[onnx.ModelProto, list[StateSpec]]:
    """One method's model proto, metadata included (``core`` is the whole-signal core when not streaming)."""
    import onnx

    data, specs = export_graph(core, method, streaming, shape)
    proto = onnx.load_from_string(data)
    set_onnx_card(proto, card)
    meta = {META_METHOD: method, META_STATE: states_to_json(specs), META_OPSET: str(OPSET),
            META_STREAMING: "true" if streaming else "false"}
    if not shape.dynamic_time:
        meta[META_BUFFER] = str(shape.frames(core, method))
    if shape.batch is not None:
        meta[META_BATCH] = str(shape.batch)
    for key, value in meta.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    proto.doc_string = f"tildekit {card.name} {method} ({'streaming' if streaming else 'whole signal'})"
    return proto, specs


def validate_request(core: ExportCore, card: ModelCard, shape: GraphShape) -> None:
    if shape.buffer < core.compression or shape.buffer % core.compression:
        raise TildekitError(f"--buffer {shape.buffer} must be a positive multiple of the model's compression "
                            f"({core.compression} samples)")
    if shape.batch is not None and shape.batch < 1:
        raise TildekitError(f"batch must be >= 1 (or None for a dynamic batch), got {shape.batch}")
    mismatches = [f"{field} card={getattr(card, field)} model={getattr(core, field)}"
                  for field in ("sample_rate", "channels", "compression", "latent_size")
                  if getattr(card, field) != getattr(core, field)]
    if mismatches:
        raise TildekitError(f"the model card does not describe this model ({'; '.join(mismatches)}): "
                            f"build the card from the same core")


def export_onnx(core: ExportCore, card: ModelCard, out_dir: str | Path, name: str, buffer: int = DEFAULT_BUFFER,
                streaming: bool = True, dynamic_time: bool = False, batch: int | None = None,
                model_config: ModelConfig | None = None, methods: Sequence[str] | None = None) -> list[Path]:
    """Write ``NAME.onnx`` (forward), ``NAME.encode.onnx``, ``NAME.decode.onnx`` (+ state ``.npz``).

    Streaming graphs take ``buffer`` samples (or their latent frames) per call, any batch:
    onnxruntime runs a fixed time axis ~15% faster (benchmarks/onnx_vs_torchscript.py).
    ``dynamic_time=True`` accepts any multiple of the compression instead; ``batch`` fixes the
    batch too (faster still; the engine runs one voice).
    ``streaming=False`` exports the whole-signal model (needs ``model_config`` to build it):
    dynamic batch and time, no state. Every file is checked before it is moved into place; on
    failure nothing is written. Returns the written paths (models and initial states).
    """
    shape = GraphShape(buffer, dynamic_time, batch) if streaming else GraphShape(buffer)
    validate_request(core, card, shape)
    with single_torch_thread():
        return _export_onnx(core, card, Path(out_dir), name, shape, streaming, model_config, methods)


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """Buffer-sized work is fastest on one thread, and a busy machine makes more threads far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _export_onnx(core: ExportCore, card: ModelCard, out_dir: Path, name: str, shape: GraphShape,
                 streaming: bool, model_config: ModelConfig | None, methods: Sequence[str] | None) -> list[Path]:
    import onnx

    methods = [m for m in (methods or METHODS) if m in card.methods]
    if not methods:
        raise TildekitError(f"the model card lists none of the methods {', '.join(METHODS)}")
    if streaming:
        source = core
        with warnings.catch_warnings():  # torch 2.13 marks torch.jit.script deprecated; nn~ still needs it
            warnings.simplefilter("ignore", DeprecationWarning)
            reference = torch.jit.script(CoreMethods(core))  # what nn~ runs: the TorchScript of the same core
    else:
        if model_config is None:
            raise TildekitError("a whole-signal ONNX export needs the model config (the run's profile)")
        source = whole_signal_core(core, model_config)
        reference = CoreMethods(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    pending: list[tuple[Path, Path]] = []  # (temporary, final)
    try:
        for method in methods:
            proto, specs = build_onnx(source, card, method, streaming, shape)
            final = out_dir / method_file_name(name, method)
            temporary = final.with_name(f".{final.stem}.{os.getpid()}.partial.onnx")
            pending.append((temporary, final))
            onnx.save(proto, str(temporary))
            results = check_onnx(temporary, reference=reference, buffer=shape.buffer)
            failed = [r for r in results if not r.passed]
            if failed:
                raise TildekitError(f"ONNX export of {method!r} failed its check: "
                                    + "; ".join(f"{r.item}: {r.reason}" for r in failed))
            if streaming:
                final_state = out_dir / state_file_name(name, method)
                temporary_state = final_state.with_name(f".{final_state.stem}.{os.getpid()}.partial.npz")
                pending.append((temporary_state, final_state))
                with open(temporary_state, "wb") as handle:
                    np.savez(handle, **{s.name: s.zeros(shape.batch or 1) for s in specs})
        for temporary, final in pending:
            os.replace(temporary, final)
        return [final for _, final in pending]
    finally:
        for temporary, _ in pending:
            temporary.unlink(missing_ok=True)


class CoreMethods(nn.Module):
    """ExportCore's methods as TorchScript entry points (what the nn~ export runs), on a copy."""

    def __init__(self, core: ExportCore) -> None:
        super().__init__()
        self.core = copy.deepcopy(core).eval()
        set_functional(self.core, False)
        self.core.reset_state()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.core(x)

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.core.encode(x)

    @torch.jit.export
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.core.decode(x)

    @torch.jit.export
    def reset_state(self) -> None:
        self.core.reset_state()


# ---------------------------------------------------------------------------------------- checks

def check_onnx(path: str | Path, reference: CoreMethods | torch.jit.ScriptModule | None = None,
               buffer: int | None = None) -> list[CheckResult]:
    """Check a tildekit ONNX file (:func:`tildekit.export.onnx_check.check_onnx`); with
    ``reference`` (``torch.jit.script(CoreMethods(core))``, or ``CoreMethods(whole_signal_core(...))``
    for a whole-signal file) also compare its output on the same buffers.

    ``buffer``: samples per call for the comparison (default: the file's fixed buffer, else 4
    latent frames' worth).
    """
    if reference is None:
        return check_onnx_contract(path)

    def compare(runner: OnnxCallRunner, info: OnnxInfo, record: Record) -> None:
        samples = buffer
        if samples is None:
            per_frame = info.card.compression if info.method == "decode" else 1
            samples = info.buffer * per_frame if info.buffer is not None else 4 * info.card.compression
        _check_reference(runner, info, reference, samples, record)

    return check_onnx_contract(path, compare)


def _check_reference(runner: OnnxCallRunner, info: OnnxInfo, reference, samples: int, record) -> None:
    card, method = info.card, info.method
    rng = np.random.default_rng(1)
    temperature = 0.5 if TEMPERATURE in ATTRIBUTE_INPUTS[method] else 0.0
    bias = rng.normal(0, 0.3, card.latent_size).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, card.latent_size).astype(np.float32)
    attrs = runner.attributes(temperature, bias, scale)
    step = samples // card.compression if method == "decode" else samples
    q = call_quantum(info)
    # streaming: mixed buffer sizes when the time axis is dynamic; whole signal: one call
    sizes = [step] * 3 if info.buffer is not None else [step, q, 3 * q, step]
    if not info.streaming:
        sizes = [sum(sizes)]
    set_torch_attributes(reference.core, temperature, bias, scale)
    for batch in check_batches(info):
        x = check_signal(info, batch, sum(sizes), seed=batch)
        reference.reset_state()
        state = runner.zeros(batch)
        worst, start = 0.0, 0
        for size in sizes:
            chunk = x[..., start: start + size]
            start += size
            y, state = runner.run(chunk, state, attrs)
            with torch.no_grad():
                expected = getattr(reference, method)(torch.from_numpy(chunk.astype(np.float32))).numpy()
            if y.shape != expected.shape:
                record(f"matches torch (batch {batch})", False, f"shape {y.shape} vs torch {expected.shape}")
                break
            worst = max(worst, float(np.max(np.abs(y - expected))))
        else:
            what = "TorchScript" if info.streaming else "whole-signal torch model"
            record(f"matches {what} (batch {batch})", worst <= TOLERANCE,
                   f"max |ONNX - torch| {worst:.2e} > {TOLERANCE} over buffers {sizes}")
    reference.reset_state()


def set_torch_attributes(core, temperature: float, bias: np.ndarray, scale: np.ndarray) -> None:
    """Set ExportCore's attributes (scripted or not) as the ONNX inputs carry them."""
    core.temperature = float(temperature)
    with torch.no_grad():
        core.latent_bias.copy_(torch.from_numpy(bias))
        core.latent_scale.copy_(torch.from_numpy(scale))

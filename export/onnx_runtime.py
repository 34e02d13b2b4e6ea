"""Run a tildekit ONNX export with onnxruntime, one buffer at a time (no torch needed).

The file format (docs/contracts.md §3) is defined here, the reader's side, so that the exporter and
every runtime agree on it:

- one graph per method (``NAME.onnx`` = forward, ``NAME.encode.onnx``, ``NAME.decode.onnx``);
- inputs: ``x`` (batch, channels, time) float32 (time fixed to the export buffer unless the
  file was exported with a dynamic time axis), then the attributes the method uses
  (autoencoders: ``temperature`` scalar; ``latent_bias``, ``latent_scale`` of K floats; effects:
  one scalar float per knob, named after it, in the card's order; other families have their
  attributes fixed in the graph at their exported values), then the
  streaming state ``state_in.0 .. state_in.N-1`` (the batch on any one axis of a state);
- outputs: ``y``, then ``state_out.0 ..`` in the same order: feed them back as the next
  call's ``state_in``. The initial state is zeros (also shipped as ``NAME.METHOD.state.npz``);
- metadata properties: the model card (``tildekit.card``), ``tildekit.method``,
  ``tildekit.state`` (JSON list of ``{name, shape, dtype, layer}``, ``"batch"`` standing for
  the batch size), ``tildekit.opset``, ``tildekit.streaming`` and, when the graph's time axis
  is fixed, ``tildekit.buffer`` (input length per call, in input frames); when the batch is
  fixed, ``tildekit.batch``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tildekit.errors import TildekitError
from tildekit.models.contract.attributes import LATENT_BIAS, LATENT_SCALE, RESET, TEMPERATURE
from tildekit.models.contract.card import CARD_ONNX_KEY, DEFAULT_FAMILY, CardError, ModelCard
from tildekit.models.contract.names import shown
from tildekit.models.contract.oscmap import attribute_range

if TYPE_CHECKING:  # imported when a session is made: `tildekit --help` stays fast
    import onnxruntime

META_METHOD = "tildekit.method"
META_STATE = "tildekit.state"
META_OPSET = "tildekit.opset"
META_STREAMING = "tildekit.streaming"
META_BUFFER = "tildekit.buffer"
META_BATCH = "tildekit.batch"

INPUT = "x"
OUTPUT = "y"
STATE_IN = "state_in."
STATE_OUT = "state_out."
BATCH = "batch"  # placeholder in state shapes

# graph inputs carrying settable attributes, per method, in input order
ATTRIBUTE_INPUTS: dict[str, tuple[str, ...]] = {
    "forward": (TEMPERATURE, LATENT_BIAS, LATENT_SCALE),
    "encode": (TEMPERATURE,),
    "decode": (),
}
# families whose attributes of one float with a range (knobs) are scalar inputs of the graphs
# of the methods that read them: an effect's knobs, DDSP's pitch shift, loudness offset and
# gains (its features graph reads none, and ONNX keeps no unused input)
KNOB_METHODS: dict[str, tuple[str, ...]] = {"effect": ("forward",), "ddsp": ("forward", "synth")}


def graph_attributes(card: ModelCard, method: str) -> tuple[str, ...]:
    """The attribute inputs of ``card``'s ``method`` graph, in input order."""
    if card.family == DEFAULT_FAMILY:
        return ATTRIBUTE_INPUTS.get(method, ())
    return knob_inputs(card, method)


def knob_inputs(card: ModelCard, method: str | None = None) -> tuple[str, ...]:
    """The knobs ``method``'s graph takes as inputs, named after them (``None``: those of any
    of the model's graphs): a knob family's attributes."""
    methods = KNOB_METHODS.get(card.family, ())
    if not methods or (method is not None and method not in methods):
        return ()
    return tuple(a.name for a in card.attributes if a.name != RESET and a.types == ["float"]
                 and a.minimum is not None and a.maximum is not None)


def graph_name_problem(name: str) -> str | None:
    """Why an attribute named ``name`` cannot be a graph input: the audio and state use the name."""
    if name in (INPUT, OUTPUT) or name.startswith((STATE_IN, STATE_OUT)):
        return f"is the name of the graph's audio or state ({INPUT}, {OUTPUT}, {STATE_IN}N, {STATE_OUT}N)"
    return None


def method_file_name(name: str, method: str) -> str:
    """``NAME.onnx`` for forward (what a user opens first), ``NAME.METHOD.onnx`` otherwise."""
    return f"{name}.onnx" if method == "forward" else f"{name}.{method}.onnx"


def state_file_name(name: str, method: str) -> str:
    return f"{name}.{method}.state.npz"


@dataclass(frozen=True)
class StateSpec:
    """One streaming state tensor: graph input ``name``, output ``name`` with ``in`` -> ``out``."""

    name: str  # state_in.<i>
    shape: list[int | str]  # BATCH where the batch size goes
    dtype: str  # numpy dtype name: float32 | int64
    layer: str = ""  # module path and attribute in the torch model (for debugging)

    @property
    def output_name(self) -> str:
        return STATE_OUT + self.name[len(STATE_IN):]

    def zeros(self, batch: int) -> np.ndarray:
        shape = [batch if d == BATCH else int(d) for d in self.shape]
        return np.zeros(shape, dtype=self.dtype)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "layer": self.layer}


def states_to_json(states: Sequence[StateSpec]) -> str:
    return json.dumps([s.to_dict() for s in states])


def states_from_json(text: str) -> list[StateSpec]:
    return [StateSpec(d["name"], list(d["shape"]), d["dtype"], d.get("layer", "")) for d in json.loads(text)]


@dataclass(frozen=True)
class OnnxInfo:
    """What the metadata of a tildekit ONNX file says."""

    card: ModelCard
    method: str
    states: list[StateSpec]
    opset: int
    streaming: bool
    buffer: int | None  # fixed input length (frames), None when the time axis is dynamic
    batch: int | None  # fixed batch size, None when dynamic

    @classmethod
    def from_metadata(cls, meta: dict[str, str], origin: str) -> OnnxInfo:
        missing = [k for k in (CARD_ONNX_KEY, META_METHOD, META_STATE, META_OPSET, META_STREAMING)
                   if k not in meta]
        if missing:
            raise TildekitError(
                f"{origin} lacks the tildekit metadata {', '.join(missing)}: it was not written by "
                f"`tildekit export --format onnx` (or by an older version); re-export it")
        try:
            card = ModelCard.from_json(meta[CARD_ONNX_KEY])
            states = states_from_json(meta[META_STATE])
            buffer = int(meta[META_BUFFER]) if meta.get(META_BUFFER) else None
            batch = int(meta[META_BATCH]) if meta.get(META_BATCH) else None
            info = cls(card, meta[META_METHOD], states, int(meta[META_OPSET]),
                       meta[META_STREAMING] == "true", buffer, batch)
        except (CardError, ValueError, KeyError, TypeError) as exc:
            raise TildekitError(f"{origin}: malformed tildekit metadata ({exc}); re-export it") from None
        if info.method not in card.methods:
            raise TildekitError(f"{origin}: its method {info.method!r} is not in its model card "
                                f"({', '.join(card.methods)}); re-export it")
        return info


def make_session(path: str | Path | bytes, threads: int = 1) -> onnxruntime.InferenceSession:
    """A CPU session on ``threads`` intra-op threads, every graph optimization on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class OnnxStreamer:
    """A streaming ONNX model with its state kept between calls.

    ``process`` takes ``(batch, in_channels, frames)`` float32 (or ``(in_channels, frames)``
    for batch 1) where ``frames`` is any multiple of the graph's quantum (the fixed buffer
    when the file has one: longer inputs are run as consecutive buffers), and returns
    ``(batch, out_channels, frames * in_ratio / out_ratio)``.
    """

    def __init__(self, path: str | Path, batch: int = 1, threads: int = 1) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise TildekitError(f"{self.path} does not exist: pass an .onnx file written by `tildekit export`")
        if batch < 1:
            raise TildekitError(f"batch must be >= 1, got {batch}")
        try:
            self.session = make_session(self.path, threads)
        except Exception as exc:  # onnxruntime raises its own exception types
            detail = " ".join(str(exc).split())[:200]
            raise TildekitError(f"{self.path}: onnxruntime cannot load it ({detail}): re-export it with "
                                f"`tildekit export`") from None
        self.info = OnnxInfo.from_metadata(self.session.get_modelmeta().custom_metadata_map, str(self.path))
        if self.info.batch is not None and batch != self.info.batch:
            raise TildekitError(f"{self.path} was exported for batch {self.info.batch}, not {batch}: "
                                f"use batch={self.info.batch} or re-export with a dynamic batch")
        self.batch = batch
        self.spec = self.info.card.methods[self.info.method]
        graph_inputs = {i.name for i in self.session.get_inputs()}
        # attributes are model-wide as in nn~: a method that does not use one accepts and ignores it
        defaults = {TEMPERATURE: [0.0], LATENT_BIAS: [0.0] * self.card.latent_size,
                    LATENT_SCALE: [1.0] * self.card.latent_size}  # neutral, if the card omits one
        defaults.update({a.name: a.default for a in self.card.attributes if a.name in defaults})
        self.knobs = {a.name: a for a in self.card.attributes if a.name in knob_inputs(self.card)}
        for name in self.knobs:  # the card is read from the file: its knob names are checked here too
            problem = graph_name_problem(name)
            if problem or (name not in graph_inputs and name in knob_inputs(self.card, self.method)):
                raise TildekitError(f"{self.path.name}: its knob {shown(name)} "
                                    f"{problem or 'is not an input of its graph'}: re-export it")
        defaults.update({name: knob.default for name, knob in self.knobs.items()})
        self.attributes: dict[str, np.ndarray] = {name: self._attribute_array(name, value)
                                                  for name, value in defaults.items()}
        self.fed_attributes = [name for name in graph_attributes(self.card, self.method)
                               if name in graph_inputs]
        self.output_names = [OUTPUT] + [s.output_name for s in self.info.states]
        self.state: dict[str, np.ndarray] = {}
        self.reset()

    @property
    def card(self) -> ModelCard:
        return self.info.card

    @property
    def method(self) -> str:
        return self.info.method

    @property
    def quantum(self) -> int:
        """Input frames per call must be a multiple of this."""
        if self.info.buffer is not None:
            return self.info.buffer
        # audio in: whole latent frames; latents in: any number of frames
        return self.card.compression if self.spec.in_ratio == 1 else 1

    def reset(self) -> None:
        """Back to the initial (zero) state."""
        self.state = {s.name: s.zeros(self.batch) for s in self.info.states}

    def set_attribute(self, name: str, values: Sequence[float] | float | bool) -> None:
        """Set ``temperature`` / ``latent_bias`` / ``latent_scale`` or a knob (within its range);
        ``reset`` (true) clears the state."""
        if name == RESET:
            flag = values[0] if isinstance(values, (list, tuple)) else values
            if flag:
                self.reset()
            return
        if name not in self.attributes:
            usable = ", ".join(sorted(self.attributes) + [RESET])
            raise TildekitError(f"{self.path.name}: no attribute {name!r} (use one of: {usable})")
        self.attributes[name] = self._attribute_array(name, values)

    def _attribute_array(self, name: str, values: Sequence[float] | float) -> np.ndarray:
        knob = self.knobs.get(name)
        if knob is not None:  # checked before float32 rounding: a range's ends stay inside it
            exact = np.asarray(values, dtype=np.float64).reshape(-1)
            value = float(exact[0]) if exact.size == 1 else math.nan
            low, high = attribute_range(knob)  # the one rule OSC messages are checked by
            if not low <= value <= high:  # NaN included
                raise TildekitError(f"{name} takes 1 value from {low:g} to {high:g}, got "
                                    f"{', '.join(f'{v:g}' for v in exact.tolist()) or 'none'}")
            return exact.astype(np.float32).reshape(())
        flat = np.asarray(values, dtype=np.float32).reshape(-1)
        if name == TEMPERATURE:
            if flat.size != 1:
                raise TildekitError(f"temperature takes 1 value, got {flat.size}")
            return flat.reshape(())
        size = self.card.latent_size
        if flat.size != size:
            raise TildekitError(f"{name} takes {size} values (one per latent dimension), got {flat.size}")
        return flat

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        squeeze = x.ndim == 2
        if squeeze:
            x = x[None]
        channels = self.spec.in_channels
        if x.ndim != 3 or x.shape[0] != self.batch or x.shape[1] != channels:
            raise TildekitError(
                f"{self.path.name} ({self.method}) takes (batch={self.batch}, channels={channels}, frames), "
                f"got shape {tuple(x.shape)}")
        frames = x.shape[-1]
        if frames == 0 or frames % self.quantum:
            why = (f"it was exported for buffers of {self.info.buffer} frames: use a multiple, or re-export with "
                   f"`tildekit export` --buffer set to your buffer") if self.info.buffer else "whole latent frames"
            raise TildekitError(f"{self.path.name} ({self.method}) takes a multiple of {self.quantum} frames per "
                                f"call, got {frames} ({why})")
        step = self.info.buffer or frames
        outputs = [self._run(np.ascontiguousarray(x[..., i: i + step])) for i in range(0, frames, step)]
        y = outputs[0] if len(outputs) == 1 else np.concatenate(outputs, -1)
        return y[0] if squeeze else y

    def _run(self, x: np.ndarray) -> np.ndarray:
        feeds = {INPUT: x, **{name: self.attributes[name] for name in self.fed_attributes}, **self.state}
        results = self.session.run(self.output_names, feeds)
        for spec, value in zip(self.info.states, results[1:]):
            self.state[spec.name] = value
        return results[0]


def read_initial_state(path: str | Path) -> dict[str, np.ndarray]:
    """The zero state shipped beside a model (batch 1, or the file's fixed batch), keyed by input name."""
    with np.load(path) as data:
        return {k: data[k] for k in data.files}

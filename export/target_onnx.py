"""The ONNX target: one graph per method (``NAME.onnx``, ``NAME.METHOD.onnx``) with its initial
streaming state (``.npz``), built by export/onnx_export.py and checked with ONNX Runtime against
the TorchScript of the same module (export/onnx_reference.py).

It takes the families whose streaming module traces in functional mode (every state reassigned,
not written in place; docs/contracts.md §3): the autoencoder's ExportCore, DDSP and effects
(their knobs as graph inputs, export/effect_export.KnobInputs)."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from tildekit.errors import TildekitError
from tildekit.export.check_result import CheckResult
from tildekit.export.core import ExportCore
from tildekit.export.ddsp_export import FAMILY as DDSP_FAMILY
from tildekit.export.ddsp_export import METHOD_LABELS as DDSP_METHODS
from tildekit.export.effect_export import FAMILY as EFFECT_FAMILY
from tildekit.export.effect_export import knob_graph
from tildekit.export.exportable import Exportable, require_matches_card
from tildekit.export.onnx_export import GraphShape, build_onnx, whole_signal_core
from tildekit.export.onnx_reference import check_onnx, reference_methods
from tildekit.export.onnx_runtime import graph_name_problem, knob_inputs, method_file_name, state_file_name
from tildekit.export.target import Target, write_checked
from tildekit.models.config import ModelConfig
from tildekit.models.contract.attributes import METHODS
from tildekit.models.contract.card import ModelCard
from tildekit.models.contract.hosts import DEFAULT_BUFFER
from tildekit.models.contract.names import shown

# family -> its methods; a family's module must trace in functional mode (see the module docstring)
FAMILY_METHODS: dict[str, tuple[str, ...]] = {"autoencoder": METHODS, DDSP_FAMILY: tuple(DDSP_METHODS),
                                               EFFECT_FAMILY: ("forward",)}
# family -> the module its graphs trace, when not the one nn~ scripts (the reference)
GRAPH_MODULES: dict[str, Callable[[torch.nn.Module], torch.nn.Module]] = {EFFECT_FAMILY: knob_graph}


class OnnxTarget(Target):
    """Graphs with a time axis fixed to ``buffer`` samples (the fastest in ONNX Runtime)."""

    name = "onnx"

    def files(self, model_name: str) -> list[str]:
        methods = dict.fromkeys(m for family in FAMILY_METHODS.values() for m in family)
        return [f(model_name, m) for m in methods for f in (method_file_name, state_file_name)]

    def takes(self, family: str) -> bool:  # other families' streaming state is not traced yet
        return family in FAMILY_METHODS

    def write(self, model: Exportable, card: ModelCard, folder: Path, quick: bool = False) -> list[Path]:
        if not self.takes(model.family) or (model.family == "autoencoder") != isinstance(model.module, ExportCore):
            raise TildekitError(unavailable(card.name, model.family))
        return export_onnx(model.module, card, folder, card.name, buffer=self.buffer, quick=quick)

    def check(self, paths: Sequence[Path], card: ModelCard | None = None, quick: bool = False) -> list[CheckResult]:
        from tildekit.export.check import check_file

        return [r for path in paths if path.suffix == ".onnx" for r in check_file(path, quick=quick)]


def validate_request(core: torch.nn.Module, card: ModelCard, shape: GraphShape) -> None:
    if shape.buffer < card.compression or shape.buffer % card.compression:
        raise TildekitError(f"--buffer {shape.buffer} must be a positive multiple of the model's compression "
                            f"({card.compression} samples)")
    if shape.batch is not None and shape.batch < 1:
        raise TildekitError(f"batch must be >= 1 (or None for a dynamic batch), got {shape.batch}")
    if isinstance(core, ExportCore):
        require_matches_card(core, card)
    else:  # another family's module: its frame counts are traced, so its graphs take a fixed buffer
        require_matches_card(core, card, fields=("sample_rate", "channels"), methods=("forward",))
        for name in knob_inputs(card):
            problem = graph_name_problem(name)
            if problem:
                raise TildekitError(f"{card.name}: its knob {shown(name)} {problem}: rename the knob and train again")
        if shape.dynamic_time:
            raise TildekitError(f"{card.name}: a {card.family} ONNX graph takes a fixed buffer: leave the time "
                                f"axis fixed (--buffer sets it)")


def export_onnx(core: torch.nn.Module, card: ModelCard, out_dir: str | Path, name: str, buffer: int = DEFAULT_BUFFER,
                streaming: bool = True, dynamic_time: bool = False, batch: int | None = None,
                model_config: ModelConfig | None = None, methods: Sequence[str] | None = None,
                quick: bool = False) -> list[Path]:
    """Write ``NAME.onnx`` (forward) and ``NAME.METHOD.onnx`` for the card's other methods (+ state ``.npz``).

    ``core``: the autoencoder's ExportCore, or another taken family's streaming module
    (:class:`OnnxTarget`).

    Streaming graphs take ``buffer`` samples (or their latent frames) per call, any batch:
    onnxruntime runs a fixed time axis ~15% faster (benchmarks/onnx_vs_torchscript.py).
    ``dynamic_time=True`` accepts any multiple of the compression instead; ``batch`` fixes the
    batch too (faster still; the engine runs one voice).
    ``streaming=False`` exports the whole-signal model (needs ``model_config`` to build it):
    dynamic batch and time, no state. Every file is checked before it is moved into place; on
    failure nothing is written. Returns the written paths (models and initial states).
    ``quick``: the structural checks and one batch of the comparison with TorchScript.
    """
    shape = GraphShape(buffer, dynamic_time, batch) if streaming else GraphShape(buffer)
    validate_request(core, card, shape)
    with single_torch_thread():
        return _export_onnx(core, card, Path(out_dir), name, shape, streaming, model_config, methods, quick)


@contextlib.contextmanager
def single_torch_thread() -> Iterator[None]:
    """Buffer-sized work is fastest on one thread, and a busy machine makes more threads far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _export_onnx(core: torch.nn.Module, card: ModelCard, out_dir: Path, name: str, shape: GraphShape, streaming: bool,
                 model_config: ModelConfig | None, methods: Sequence[str] | None, quick: bool) -> list[Path]:
    import onnx

    methods = [m for m in (methods or list(card.methods)) if m in card.methods]
    if not methods:
        raise TildekitError(f"the model card lists none of the methods {', '.join(card.methods)}")
    reference: Any  # the scripted core streaming, the plain whole-signal one otherwise
    if streaming:
        source = GRAPH_MODULES.get(card.family, lambda module: module)(core)
        with warnings.catch_warnings():  # torch 2.13 marks torch.jit.script deprecated; nn~ still needs it
            warnings.simplefilter("ignore", DeprecationWarning)
            reference = torch.jit.script(reference_methods(core))  # what nn~ runs: the TorchScript of the same core
    else:
        if not isinstance(core, ExportCore):
            raise TildekitError(f"{name}: a whole-signal ONNX export is available for autoencoders only")
        if model_config is None:
            raise TildekitError("a whole-signal ONNX export needs the model config (the run's profile)")
        source = whole_signal_core(core, model_config)
        reference = reference_methods(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    finals: list[Path] = []
    writers: list[Callable[[Path], None]] = []
    graphs: dict[Path, str] = {}  # final graph file -> its method
    for method in methods:
        proto, specs = build_onnx(source, card, method, streaming, shape)
        finals.append(out_dir / method_file_name(name, method))
        graphs[finals[-1]] = method
        writers.append(functools.partial(_save_proto, onnx, proto))
        if streaming:
            finals.append(out_dir / state_file_name(name, method))
            writers.append(functools.partial(_save_state, {s.name: s.zeros(shape.batch or 1) for s in specs}))

    def save(temporaries: list[Path]) -> None:
        for write, temporary in zip(writers, temporaries):
            write(temporary)

    def check(temporaries: list[Path]) -> list[CheckResult]:
        return [CheckResult(f"{graphs[final]}: {r.item}", r.passed, r.reason)
                for final, temporary in zip(finals, temporaries) if final in graphs
                for r in check_onnx(temporary, reference=reference, buffer=shape.buffer, quick=quick)]

    return write_checked(finals, save, check, f"ONNX export of {name}")


def _save_proto(onnx: Any, proto: Any, path: Path) -> None:
    onnx.save(proto, str(path))


def _save_state(states: dict[str, np.ndarray], path: Path) -> None:
    with open(path, "wb") as handle:  # a handle: np.savez would append .npz to the temporary name
        np.savez(handle, **cast(dict[str, Any], states))


def unavailable(name: str, family: str) -> str:
    """The one line refusing a family whose stateful module is not traced to ONNX yet."""
    return (f"{name}: ONNX export of {family} models is not available yet (its streaming state is "
            f"not traced); use --target nn or neutone")

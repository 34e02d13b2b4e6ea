"""The torch reference of an ONNX export: the exported module's methods as TorchScript entry
points (ExportCore's through :class:`CoreMethods`), and the check that an ONNX file gives the
same samples on the same buffers."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from tildekit.export.check_result import CheckResult
from tildekit.export.core import ExportCore
from tildekit.export.onnx_check import (
    TOLERANCE,
    OnnxCallRunner,
    Record,
    call_quantum,
    check_batches,
    check_signal,
    knob_settings,
)
from tildekit.export.onnx_check import (
    check_onnx as check_onnx_contract,
)
from tildekit.export.onnx_runtime import OnnxInfo, graph_attributes, knob_inputs
from tildekit.models.contract.attributes import TEMPERATURE
from tildekit.models.streaming import reset_state, set_functional

KNOB_MOVES = 5  # buffers compared when a graph takes knobs: one knob setting each


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


def reference_methods(core: nn.Module) -> nn.Module:
    """A private copy of ``core`` with its methods as entry points, in-place state, fresh state."""
    if isinstance(core, ExportCore):
        return CoreMethods(core)
    module = copy.deepcopy(core).eval()
    set_functional(module, False)
    reset_state(module)
    return module


def check_onnx(path: str | Path, reference: CoreMethods | torch.jit.ScriptModule | None = None,
               buffer: int | None = None, quick: bool = False) -> list[CheckResult]:
    """Check a tildekit ONNX file (:func:`tildekit.export.onnx_check.check_onnx`); with
    ``reference`` (``torch.jit.script(CoreMethods(core))``, or ``CoreMethods(whole_signal_core(...))``
    for a whole-signal file) also compare its output on the same buffers.

    ``buffer``: samples per call for the comparison (default: the file's fixed buffer, else 4
    latent frames' worth). ``quick``: one batch size, no split check.
    """
    if reference is None:
        return check_onnx_contract(path, quick=quick)

    def compare(runner: OnnxCallRunner, info: OnnxInfo, record: Record) -> None:
        samples = buffer
        if samples is None:
            per_frame = info.card.methods[info.method].in_ratio
            samples = info.buffer * per_frame if info.buffer is not None else 4 * info.card.compression
        _check_reference(runner, info, reference, samples, record, quick)

    return check_onnx_contract(path, compare, quick)


def _check_reference(runner: OnnxCallRunner, info: OnnxInfo, reference, samples: int, record,
                     quick: bool = False) -> None:
    card, method = info.card, info.method
    rng = np.random.default_rng(1)
    temperature = 0.5 if TEMPERATURE in graph_attributes(card, method) else 0.0
    bias = rng.normal(0, 0.3, card.latent_size).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, card.latent_size).astype(np.float32)
    attrs = runner.attributes(temperature, bias, scale)  # those the graph takes as inputs
    step = samples // card.methods[method].in_ratio
    q = call_quantum(info)
    # streaming: mixed buffer sizes when the time axis is dynamic; whole signal: one call
    sizes = [step] * 3 if info.buffer is not None else [step, q, 3 * q, step]
    if not info.streaming:
        sizes = [sum(sizes)]
    settings: list[dict[str, float]] = [{}] * len(sizes)
    if knob_inputs(card, method):  # knobs move between buffers: defaults, all up, all down, random
        sizes += [step] * (KNOB_MOVES - len(sizes)) if info.streaming else []
        settings = knob_settings(info, len(sizes), seed=1)
    if TEMPERATURE in attrs:
        set_torch_attributes(reference.core, temperature, bias, scale)
    for batch in check_batches(info)[:1] if quick else check_batches(info):
        x = check_signal(info, batch, sum(sizes), seed=batch)
        reference.reset_state()
        state = runner.zeros(batch)
        worst, start = 0.0, 0
        for size, setting in zip(sizes, settings):
            chunk = x[..., start: start + size]
            start += size
            for name, value in setting.items():
                setattr(reference, name, value)
            y, state = runner.run(chunk, state, runner.attributes(temperature, bias, scale, knobs=setting))
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
    for name, value in settings[0].items():  # the reference back at its defaults
        setattr(reference, name, value)


def set_torch_attributes(core, temperature: float, bias: np.ndarray, scale: np.ndarray) -> None:
    """Set ExportCore's attributes (scripted or not) as the ONNX inputs carry them."""
    core.temperature = float(temperature)
    with torch.no_grad():
        core.latent_bias.copy_(torch.from_numpy(bias))
        core.latent_scale.copy_(torch.from_numpy(scale))

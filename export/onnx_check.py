"""Checks of a tildekit ONNX file with onnx and ONNX Runtime alone: no torch, so the runtime
install (engine, OSC, patches) can check the files it serves (``tildekit check NAME.onnx``).

The exporter runs the same checks and adds its comparison with the torch model through the
``compare`` hook (:func:`tildekit.export.onnx_reference.check_onnx`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tildekit.errors import TildekitError
from tildekit.export.check_result import CheckResult
from tildekit.export.onnx_runtime import INPUT, OUTPUT, OnnxInfo, graph_attributes, knob_inputs, make_session
from tildekit.models.contract.attributes import LATENT_BIAS, LATENT_SCALE, TEMPERATURE

TOLERANCE = 1e-4  # max |difference| between consecutive calls and one call (and vs TorchScript)
CHECK_BATCHES = (1, 2)

Record = Callable[[str, bool, str], bool]  # (item, passed, reason) -> passed
Compare = Callable[["OnnxCallRunner", OnnxInfo, Record], None]


def check_onnx(path: str | Path, compare: Compare | None = None, quick: bool = False) -> list[CheckResult]:
    """Check a tildekit ONNX file with onnx.checker and ONNX Runtime: metadata, signature, output
    shapes, state carried between calls (not when ``quick``). ``compare(runner, info, record)``
    runs last, when all of these passed (the exporter compares with the torch model there).
    """
    import onnx

    path = Path(path)
    results: list[CheckResult] = []

    def record(item: str, passed: bool, reason: str = "") -> bool:
        results.append(CheckResult(item, passed, "" if passed else reason))
        return passed

    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto, full_check=True)
        record("onnx.checker", True)
    except Exception as exc:  # the checker has several exception types
        record("onnx.checker", False, _one_line(exc))
        return results
    try:
        info = OnnxInfo.from_metadata({p.key: p.value for p in proto.metadata_props}, str(path))
    except TildekitError as exc:
        record("metadata", False, str(exc))
        return results
    opsets = {o.domain: o.version for o in proto.opset_import}
    if not record("metadata", opsets.get("", opsets.get("ai.onnx")) == info.opset and info.method in info.card.methods,
                  f"recorded opset {info.opset} vs graph {opsets}, method {info.method!r}"):
        return results
    try:
        session = make_session(proto.SerializeToString())
        record("onnxruntime loads", True)
    except Exception as exc:
        record("onnxruntime loads", False, _one_line(exc))
        return results
    if not _check_signature(session, info, record):
        return results
    runner = OnnxCallRunner(session, info)
    if not _check_shapes(runner, info, record):
        return results
    if info.streaming and info.buffer is None and not quick:
        _check_split(runner, info, record)
    if compare is not None:
        compare(runner, info, record)
    return results


class OnnxCallRunner:
    """Feeds a session the way OnnxStreamer does, from an explicit state (checks need both)."""

    def __init__(self, session, info: OnnxInfo) -> None:
        self.session, self.info = session, info
        self.outputs = [OUTPUT] + [s.output_name for s in info.states]

    def zeros(self, batch: int) -> dict[str, np.ndarray]:
        return {s.name: s.zeros(batch) for s in self.info.states}

    def attributes(self, temperature: float = 0.0, bias: np.ndarray | None = None,
                   scale: np.ndarray | None = None, knobs: dict[str, float] | None = None) -> dict[str, np.ndarray]:
        """The graph's attribute inputs: these values, knobs at ``knobs`` or their defaults."""
        k = self.info.card.latent_size
        values = {TEMPERATURE: np.array(temperature, np.float32),
                  LATENT_BIAS: np.zeros(k, np.float32) if bias is None else bias.astype(np.float32),
                  LATENT_SCALE: np.ones(k, np.float32) if scale is None else scale.astype(np.float32)}
        setting = {**knob_settings(self.info)[0], **(knobs or {})}
        values.update({name: np.array(value, np.float32) for name, value in setting.items()})
        names = {i.name for i in self.session.get_inputs()}
        return {k: v for k, v in values.items() if k in names}

    def run(self, x: np.ndarray, state: dict[str, np.ndarray], attributes: dict[str, np.ndarray]
            ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        out = self.session.run(self.outputs, {INPUT: x.astype(np.float32), **attributes, **state})
        return out[0], {s.name: v for s, v in zip(self.info.states, out[1:])}


def check_batches(info: OnnxInfo) -> tuple[int, ...]:
    return CHECK_BATCHES if info.batch is None else (info.batch,)


def knob_settings(info: OnnxInfo, count: int = 1, seed: int = 0) -> list[dict[str, float]]:
    """``count`` settings of the graph's knob inputs: the defaults, every knob at its maximum,
    at its minimum, then random settings within the ranges."""
    knobs = [a for a in info.card.attributes if a.name in knob_inputs(info.card, info.method)]
    rng = np.random.default_rng(seed)
    settings = []
    for i in range(count):
        setting = {}
        for knob in knobs:
            low, high = knob.minimum, knob.maximum
            if i == 0 or low is None or high is None:
                setting[knob.name] = float(knob.default[0])
            else:
                setting[knob.name] = float(high if i == 1 else low if i == 2 else rng.uniform(low, high))
        settings.append(setting)
    return settings


def call_quantum(info: OnnxInfo) -> int:
    if info.buffer is not None:
        return info.buffer
    return info.card.compression if info.method != "decode" else 1


def check_signal(info: OnnxInfo, batch: int, frames: int, seed: int = 0) -> np.ndarray:
    """Generated input: sines plus a little noise for audio, smooth random walks for frame-rate
    inputs (latents, controls)."""
    rng = np.random.default_rng(seed)
    spec = info.card.methods[info.method]
    if spec.in_ratio > 1:
        return np.cumsum(rng.standard_normal((batch, spec.in_channels, frames)), -1) * 0.3
    t = np.arange(frames) / info.card.sample_rate
    freqs = 110.0 * (1 + np.arange(batch * spec.in_channels)).reshape(batch, spec.in_channels, 1)
    return 0.5 * np.sin(2 * math.pi * freqs * t) + 0.05 * rng.standard_normal((batch, spec.in_channels, frames))


def _check_signature(session, info: OnnxInfo, record) -> bool:
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    expected_in = [INPUT, *graph_attributes(info.card, info.method), *[s.name for s in info.states]]
    expected_out = [OUTPUT, *[s.output_name for s in info.states]]
    channels = session.get_inputs()[0].shape[1] if inputs else None
    spec = info.card.methods[info.method]
    ok = inputs == expected_in and outputs == expected_out and channels == spec.in_channels
    return record("inputs and outputs", ok,
                  f"inputs {inputs} (expected {expected_in}), outputs {outputs}, x channels {channels} "
                  f"(card: {spec.in_channels})")


def _check_shapes(runner: OnnxCallRunner, info: OnnxInfo, record) -> bool:
    spec = info.card.methods[info.method]
    frames = call_quantum(info)
    for batch in check_batches(info):
        state = runner.zeros(batch)
        y, new_state = runner.run(check_signal(info, batch, frames), state, runner.attributes())
        expected = (batch, spec.out_channels, frames * spec.in_ratio // spec.out_ratio)
        wrong_states = [k for k, v in new_state.items() if v.shape != state[k].shape or v.dtype != state[k].dtype]
        if y.shape != expected or wrong_states or not np.isfinite(y).all():
            return record("output shapes", False,
                          f"batch {batch}: y {y.shape} (expected {expected}), finite={np.isfinite(y).all()}, "
                          f"states with a wrong shape or type: {wrong_states}")
    return record("output shapes", True)


def _check_split(runner: OnnxCallRunner, info: OnnxInfo, record) -> bool:
    """Two consecutive calls give the samples of one call of both buffers (the state carries)."""
    q = call_quantum(info)
    batch = check_batches(info)[-1]
    x = check_signal(info, batch, 3 * q)
    attrs = runner.attributes(0.5)
    whole, _ = runner.run(x, runner.zeros(batch), attrs)
    first, state = runner.run(x[..., :q], runner.zeros(batch), attrs)
    second, _ = runner.run(x[..., q:], state, attrs)
    error = float(np.max(np.abs(np.concatenate([first, second], -1) - whole)))
    return record("state carries over", error <= TOLERANCE,
                  f"1+2 buffers vs one call of 3: max |difference| {error:.2e} > {TOLERANCE}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]

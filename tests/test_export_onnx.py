"""ONNX export: streaming graphs with explicit state, run with the real onnxruntime.

A tiny model (``small`` profile, capacity 8, random weights); generated signals only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import numpy as np
import onnx
import pytest
import torch

from tildekit.errors import TildekitError
from tildekit.export.card_io import read_card
from tildekit.export.core import ExportCore
from tildekit.export.model_card import card_from_core
from tildekit.export.onnx_export import CoreMethods, check_onnx, export_onnx
from tildekit.export.onnx_runtime import (
    META_BATCH,
    META_BUFFER,
    META_METHOD,
    META_OPSET,
    META_STATE,
    META_STREAMING,
    OnnxStreamer,
    read_initial_state,
)
from tildekit.models.autoencoder import build_model
from tildekit.models.config import load_profile

TOLERANCE = 1e-4
BUFFER = 512  # samples; the small profile compresses by 128


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def built():
    torch.manual_seed(0)
    cfg = load_profile("small", ["model.capacity=8"]).model
    whole = build_model(cfg, False).eval()
    streaming = build_model(cfg, True)
    streaming.load_state_dict(whole.state_dict())
    core = ExportCore(streaming)
    return cfg, whole, core, card_from_core(core, "tiny", None, "small", 0)


@pytest.fixture(scope="module")
def exported(built, tmp_path_factory):
    _, _, core, card = built
    out = tmp_path_factory.mktemp("onnx")
    paths = export_onnx(core, card, out, "tiny", buffer=BUFFER, dynamic_time=True)
    return out, paths


@pytest.fixture(scope="module")
def scripted(built):
    with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit.script; nn~ still runs it
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(CoreMethods(built[2]))


def audio(batch: int, samples: int, sample_rate: int = 16000) -> np.ndarray:
    """A chirp per batch row plus a little noise."""
    t = np.arange(samples) / sample_rate
    rows = [0.5 * np.sin(2 * math.pi * (100 * (row + 1) * t + 2000 * t * t)) for row in range(batch)]
    noise = 0.02 * np.random.default_rng(batch).standard_normal((batch, 1, samples))
    return (np.stack(rows)[:, None, :] + noise).astype(np.float32)


def latents(batch: int, size: int, frames: int) -> np.ndarray:
    walk = np.cumsum(np.random.default_rng(7).standard_normal((batch, size, frames)), -1)
    return (0.3 * walk).astype(np.float32)


def method_input(card, method: str, batch: int, samples: int) -> np.ndarray:
    if method == "decode":
        return latents(batch, card.latent_size, samples // card.compression)
    return audio(batch, samples, card.sample_rate)


def test_export_writes_each_method_and_its_initial_state(exported):
    out, paths = exported
    names = sorted(p.name for p in paths)
    assert names == sorted(["tiny.onnx", "tiny.encode.onnx", "tiny.decode.onnx", "tiny.forward.state.npz",
                            "tiny.encode.state.npz", "tiny.decode.state.npz"])
    assert sorted(p.name for p in out.iterdir()) == names  # no temporary left behind


@pytest.mark.parametrize("file, method", [("tiny.onnx", "forward"), ("tiny.encode.onnx", "encode"),
                                          ("tiny.decode.onnx", "decode")])
def test_checker_metadata_and_card_round_trip(exported, built, file, method):
    out, _ = exported
    card = built[3]
    proto = onnx.load(str(out / file))
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[META_METHOD] == method
    assert meta[META_STREAMING] == "true"
    assert int(meta[META_OPSET]) == next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    assert META_BUFFER not in meta and META_BATCH not in meta  # dynamic batch and time
    assert read_card(out / file) == card
    states = json.loads(meta[META_STATE])
    assert states, "a streaming graph has state"
    graph_inputs = [i.name for i in proto.graph.input]
    graph_outputs = [o.name for o in proto.graph.output]
    assert graph_inputs[0] == "x" and graph_outputs[0] == "y"
    assert graph_inputs[-len(states):] == [s["name"] for s in states]
    assert graph_outputs[1:] == [s["name"].replace("state_in.", "state_out.") for s in states]
    assert ("temperature" in graph_inputs) == (method != "decode")
    assert ("latent_bias" in graph_inputs) == (method == "forward")
    initial = read_initial_state(out / f"tiny.{method}.state.npz")
    assert list(initial) == [s["name"] for s in states]
    for spec in states:
        value = initial[spec["name"]]
        assert list(value.shape) == [1 if d == "batch" else d for d in spec["shape"]]
        assert value.dtype == np.dtype(spec["dtype"]) and not value.any()
    # the decoder's noise counter is int64 state, shared by the batch rows
    if method != "encode":
        assert any(s["dtype"] == "int64" and s["shape"] == [1] for s in states)


def test_cached_padding_slices_need_no_shape_arithmetic(exported):
    """``x[..., x.shape[-1] - p:]`` is exported as ``x[..., -p:]``; ``state[:batch]`` as the state."""
    out, _ = exported
    graph = onnx.load(str(out / "tiny.onnx")).graph
    producers = {o: n for n in graph.node for o in n.output}
    states = {i.name for i in graph.input if i.name.startswith("state_in.")}

    def shape_of(name: str, depth: int = 0) -> set[str]:
        """Tensors whose Shape ``name`` is computed from (a few steps up)."""
        node = producers.get(name)
        if node is None or depth > 4:
            return set()
        if node.op_type == "Shape":
            return {node.input[0]}
        return set().union(*[shape_of(i, depth + 1) for i in node.input if i]) if node.input else set()

    constants = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    constants.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
                      for n in graph.node if n.op_type == "Constant" and n.attribute[0].name == "value"})
    slices = [n for n in graph.node if n.op_type == "Slice"]
    on_time = [n for n in slices if constants[n.input[3]].tolist() in ([2], [-1])]
    assert on_time
    assert not [n.name for n in slices if n.input[0] in states]
    assert not [n.name for n in on_time if n.input[0] in shape_of(n.input[1]) | shape_of(n.input[2])]


@pytest.mark.parametrize("method, temperature", [("forward", 0.7), ("encode", 0.7), ("decode", 0.0),
                                                 ("forward", 0.0), ("encode", 0.0)])
@pytest.mark.parametrize("batch", [1, 2])
def test_streaming_matches_torchscript(exported, built, scripted, method, temperature, batch):
    out, _ = exported
    card = built[3]
    file = "tiny.onnx" if method == "forward" else f"tiny.{method}.onnx"
    streamer = OnnxStreamer(out / file, batch=batch)
    scripted.reset_state()
    rng = np.random.default_rng(3)
    bias = rng.normal(0, 0.3, card.latent_size).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, card.latent_size).astype(np.float32)
    scripted.core.temperature = temperature
    scripted.core.latent_bias.copy_(torch.from_numpy(bias))
    scripted.core.latent_scale.copy_(torch.from_numpy(scale))
    if method != "decode":
        streamer.set_attribute("temperature", [temperature])
    if method == "forward":
        streamer.set_attribute("latent_bias", bias.tolist())
        streamer.set_attribute("latent_scale", scale.tolist())
    buffers = [512, 128, 1024, 256, 512]  # samples, each a multiple of the compression
    x = method_input(card, method, batch, sum(buffers))
    per_sample = card.compression if method == "decode" else 1
    start = 0
    try:
        for size in buffers:
            chunk = x[..., start: start + size // per_sample]
            start += size // per_sample
            y = streamer.process(chunk)
            with torch.no_grad():
                expected = getattr(scripted, method)(torch.from_numpy(chunk)).numpy()
            assert y.shape == expected.shape
            assert np.max(np.abs(y - expected)) <= TOLERANCE, (method, batch, size)
    finally:
        scripted.core.temperature = 0.0
        scripted.core.latent_bias.zero_()
        scripted.core.latent_scale.fill_(1.0)
        scripted.reset_state()


def test_state_persists_across_calls_and_reset_zeroes_it(exported, built):
    out, _ = exported
    card = built[3]
    x = audio(1, 4 * BUFFER, card.sample_rate)
    streamer = OnnxStreamer(out / "tiny.onnx")
    in_buffers = np.concatenate([streamer.process(x[..., i: i + BUFFER]) for i in range(0, x.shape[-1], BUFFER)], -1)
    streamer.reset()
    assert all(not value.any() for value in streamer.state.values())
    at_once = streamer.process(x)
    assert np.max(np.abs(in_buffers - at_once)) <= TOLERANCE
    # the same buffer twice gives different output: the second call sees the first's tail
    streamer.reset()
    first = streamer.process(x[..., BUFFER: 2 * BUFFER])
    second = streamer.process(x[..., BUFFER: 2 * BUFFER])
    assert np.max(np.abs(first - second)) > 1e-3
    streamer.set_attribute("reset", [True])
    assert np.array_equal(streamer.process(x[..., BUFFER: 2 * BUFFER]), first)
    assert streamer.card == card
    # (channels, frames) for batch 1
    assert streamer.process(x[0, :, :BUFFER]).shape == (1, BUFFER)


@pytest.mark.parametrize("file", ["tiny.onnx", "tiny.encode.onnx", "tiny.decode.onnx"])
def test_check_onnx_passes_on_exports(exported, file):
    out, _ = exported
    results = check_onnx(out / file)
    assert results and all(r.passed for r in results), results
    items = {r.item for r in results}
    assert {"onnx.checker", "onnxruntime loads", "output shapes", "state carries over"} <= items


def test_check_file_dispatches_onnx(exported):
    from tildekit.export.check import check_file

    out, _ = exported
    results = check_file(out / "tiny.decode.onnx")
    assert results and all(r.passed for r in results), results


def test_check_onnx_reports_a_corrupt_file(exported, tmp_path):
    out, _ = exported
    broken = tmp_path / "broken.onnx"
    broken.write_bytes((out / "tiny.onnx").read_bytes()[:5000])
    results = check_onnx(broken)
    assert results[0].item == "onnx.checker" and not results[0].passed and results[0].reason


def test_fixed_shape_export_matches_dynamic(exported, built, tmp_path):
    out, _ = exported
    _, _, core, card = built
    paths = export_onnx(core, card, tmp_path, "fixed", buffer=256, batch=2, methods=["forward"])  # fixed time: default
    assert [p.name for p in paths] == ["fixed.onnx", "fixed.forward.state.npz"]
    proto = onnx.load(str(paths[0]))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[META_BUFFER] == "256" and meta[META_BATCH] == "2"
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 1, 256]
    fixed = OnnxStreamer(paths[0], batch=2)
    dynamic = OnnxStreamer(out / "tiny.onnx", batch=2)
    x = audio(2, 1024, card.sample_rate)
    assert np.max(np.abs(fixed.process(x) - dynamic.process(x))) <= TOLERANCE  # 4 fixed buffers
    with pytest.raises(TildekitError, match="multiple of 256"):
        fixed.process(x[..., :128])
    with pytest.raises(TildekitError, match="batch 2"):
        OnnxStreamer(paths[0], batch=1)


def test_whole_signal_export_matches_torch_model(built, tmp_path):
    cfg, whole, core, card = built
    paths = export_onnx(core, card, tmp_path, "whole", streaming=False, model_config=cfg)
    assert sorted(p.name for p in paths) == ["whole.decode.onnx", "whole.encode.onnx", "whole.onnx"]
    meta = {p.key: p.value for p in onnx.load(str(paths[0])).metadata_props}
    assert meta[META_STREAMING] == "false" and json.loads(meta[META_STATE]) == []
    x = audio(2, 2048, card.sample_rate)
    runner = OnnxStreamer(tmp_path / "whole.onnx", batch=2)
    with torch.no_grad():
        expected = whole(torch.from_numpy(x)).numpy()  # the training model, weight norm and all
        expected_z = whole.encode(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(runner.process(x) - expected)) <= TOLERANCE
    encoder = OnnxStreamer(tmp_path / "whole.encode.onnx", batch=2)
    assert np.max(np.abs(encoder.process(x) - expected_z)) <= TOLERANCE
    with pytest.raises(TildekitError, match="model config"):
        export_onnx(core, card, tmp_path, "nope", streaming=False)


def test_bad_requests_fail_with_a_clear_message(exported, built, tmp_path):
    out, _ = exported
    _, _, core, card = built
    with pytest.raises(TildekitError, match="multiple of the model's compression"):
        export_onnx(core, card, tmp_path, "bad", buffer=100)
    wrong_card = dataclasses.replace(card, latent_size=3)
    with pytest.raises(TildekitError, match="latent_size"):
        export_onnx(core, wrong_card, tmp_path, "bad")
    assert not list(tmp_path.iterdir())
    streamer = OnnxStreamer(out / "tiny.encode.onnx")
    with pytest.raises(TildekitError, match="channels=1"):
        streamer.process(np.zeros((1, 2, 128), np.float32))
    with pytest.raises(TildekitError, match="multiple of 128"):
        streamer.process(np.zeros((1, 1, 100), np.float32))
    with pytest.raises(TildekitError, match="latent_bias takes 8 values"):
        streamer.set_attribute("latent_bias", [0.0])
    streamer.set_attribute("latent_scale", [2.0] * 8)  # model-wide, as in nn~: encode ignores it
    with pytest.raises(TildekitError, match="no attribute 'gain'"):
        streamer.set_attribute("gain", [1.0])
    with pytest.raises(TildekitError, match="1 value"):
        streamer.set_attribute("temperature", [0.1, 0.2])
    with pytest.raises(TildekitError, match="does not exist"):
        OnnxStreamer(tmp_path / "missing.onnx")

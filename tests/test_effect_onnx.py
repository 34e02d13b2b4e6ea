"""The effect family as ONNX: a forward graph at a fixed buffer with each knob a scalar input and
the TCN caches, GRU state and knob smoother as explicit state. It computes what the trained model
computes, follows knob moves as the nn~ file does, passes `tildekit check`, plays in the engine
with knobs over OSC (real UDP on 127.0.0.1) and goes into a Pi bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from tests.test_effect_export import SETTING, TINY, _dry, play_with_knobs_over_osc
from tests.test_effects import BUFFERS
from tildekit.cli import main as cli
from tildekit.errors import TildekitError
from tildekit.export import effect_export
from tildekit.export.card_io import read_card, set_onnx_card
from tildekit.export.check import nn_set
from tildekit.export.nn_load import load_like_nn
from tildekit.export.onnx_runtime import META_BUFFER, OnnxStreamer
from tildekit.export.targets import export_core, export_run
from tildekit.models.config import EffectConfig, load_profile
from tildekit.models.effects.model import build_effect_model
from tildekit.models.effects.pairs import render_pairs
from tildekit.models.effects.reference import OVERDRIVE, KnobRange
from tildekit.models.effects.train import load_effect_run, train_effect

pytestmark = [pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]

STEPS = 30
GRAPH_BUFFERS = [64, 1024]  # the fixed buffers of the graphs exported in the fast run (slow: every BUFFERS)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny overdrive model (TCN, FiLM) trained a few dozen steps."""
    root = tmp_path_factory.mktemp("fxonnx")
    render_pairs(OVERDRIVE, 8, 0.25, seed=5).save(root / "pairs")
    torch.manual_seed(0)
    train_effect(root / "pairs", root / "run", load_profile("effect-tcn", TINY), steps=STEPS, progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def exported(run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The run as nn~ and ONNX files, the ONNX graph at each of GRAPH_BUFFERS: buffer -> folder."""
    folders = {}
    for buffer in GRAPH_BUFFERS:
        folders[buffer] = tmp_path_factory.mktemp(f"graph{buffer}")
        card, paths = export_run(run, ["nn", "onnx"], folders[buffer], name="fx", buffer=buffer, quick=True)
        assert sorted(p.name for p in paths) == ["fx.forward.state.npz", "fx.onnx", "fx.ts"]
    return folders


def _whole(run: Path, x: torch.Tensor, setting: dict[str, float]) -> np.ndarray:
    model = load_effect_run(run, streaming=False)
    with torch.no_grad():
        return model.process(x, torch.tensor([[setting[k] for k in model.knob_names]])).numpy()


def _onnx_stream(path: Path, x: np.ndarray, buffer: int, setting: dict[str, float]) -> np.ndarray:
    streamer = OnnxStreamer(path)
    for name, value in setting.items():
        streamer.set_attribute(name, value)
    return np.concatenate([streamer.process(x[..., i:i + buffer]) for i in range(0, x.shape[-1], buffer)], -1)


def _worst_onnx_difference(run: Path, folders: dict[int, Path]) -> float:
    """Over every graph, each played at its own buffer and at 16384 samples (a host buffer that
    is a multiple of the graph's runs as consecutive calls of the graph's buffer)."""
    x = _dry()
    reference = _whole(run, x, SETTING)
    assert float(np.abs(reference - _whole(run, x, {k.name: k.default for k in OVERDRIVE.knobs})).max()) > 1e-3
    worst = 0.0
    for graph, folder in folders.items():
        for buffer in sorted({graph, BUFFERS[-1]}):
            y = _onnx_stream(folder / "fx.onnx", x.numpy(), buffer, SETTING)
            worst = max(worst, float(np.abs(y - reference).max()))
    return worst


def test_the_onnx_file_computes_what_the_trained_model_computes(run, exported) -> None:
    """Graphs of 64 and 1024 samples (every buffer from 64 to 16384: the slow test below)."""
    assert _worst_onnx_difference(run, exported) <= 1e-5


@pytest.mark.slow
def test_graphs_at_every_buffer_compute_what_the_trained_model_computes(run, tmp_path: Path) -> None:
    folders = {}
    for buffer in BUFFERS:
        folders[buffer] = tmp_path / str(buffer)
        export_run(run, ["onnx"], folders[buffer], name="fx", buffer=buffer, quick=True)
    assert _worst_onnx_difference(run, folders) <= 1e-5


def test_the_graph_takes_each_knob_as_an_input_and_carries_the_smoother(exported) -> None:
    folder = exported[1024]
    card = read_card(folder / "fx.onnx")
    assert card == read_card(folder / "fx.ts")  # the same card embedded in both
    streamer = OnnxStreamer(folder / "fx.onnx")
    inputs = [(i.name, i.shape, i.type) for i in streamer.session.get_inputs()]
    assert inputs[:4] == [("x", ["batch", 1, 1024], "tensor(float)"), ("gain", [], "tensor(float)"),
                          ("tone", [], "tensor(float)"), ("level", [], "tensor(float)")]
    layers = [s.layer for s in streamer.info.states]
    assert layers == [f"model.core.blocks.{i}.conv.past" for i in range(5)] + [
        "model.smoother.value", "model.smoother.primed"]
    # a conv whose cache is 64 frames (kernel 3, dilation 32 would be too): the batch is axis 1
    assert [s.shape for s in streamer.info.states[:5]] == [["batch", 2 * d, 8] for d in (1, 2, 4, 8, 16)]
    proto = onnx.load(str(folder / "fx.onnx"))
    assert {p.key: p.value for p in proto.metadata_props}[META_BUFFER] == "1024"
    # each causal conv is one Conv node (its im2col windows would trace to a slice per frame)
    assert [n.op_type for n in proto.graph.node].count("Conv") == 5 and len(proto.graph.node) < 1000


def _play(call, x: np.ndarray, buffer: int, moves: dict[int, dict[str, float]]) -> np.ndarray:
    outputs = []
    for start in range(0, x.shape[-1], buffer):
        for name, value in moves.get(start, {}).items():
            call.set(name, value)
        outputs.append(call(x[..., start:start + buffer]))
    return np.concatenate(outputs, -1)


class _NnFile:
    def __init__(self, path: Path) -> None:
        self.module = load_like_nn(path)

    def set(self, name: str, value: float) -> None:
        assert nn_set(self.module, name, [value]) == 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module.forward(torch.from_numpy(x)).numpy()


class _OnnxFile:
    def __init__(self, path: Path) -> None:
        self.streamer = OnnxStreamer(path)

    def set(self, name: str, value: float) -> None:
        self.streamer.set_attribute(name, value)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.streamer.process(x)


def _knob_moves(knobs, buffer: int, count: int, seed: int) -> dict[int, dict[str, float]]:
    """A knob setting every other buffer: each knob anywhere in its range, sometimes at an end."""
    rng = np.random.default_rng(seed)
    moves = {}
    for i in range(count):
        values = {k.name: float(rng.choice([k.minimum, k.maximum, rng.uniform(k.minimum, k.maximum)]))
                  for k in knobs}
        moves[2 * i * buffer] = values
    return moves


def test_knob_moves_between_buffers_match_the_nn_file(exported) -> None:
    x = _dry().numpy()[..., :16384]
    for graph, folder in exported.items():
        buffer = max(graph, 512)
        moves = _knob_moves(OVERDRIVE.knobs, buffer, 8, seed=graph)
        nn_out = _play(_NnFile(folder / "fx.ts"), x, buffer, moves)
        onnx_out = _play(_OnnxFile(folder / "fx.onnx"), x, buffer, moves)
        still = _play(_OnnxFile(folder / "fx.onnx"), x, buffer, {})
        assert float(np.abs(onnx_out - still).max()) > 1e-3  # the moves change the sound
        assert float(np.abs(onnx_out - nn_out).max()) <= 1e-5


@pytest.mark.parametrize("core", ["gru-film", "tcn-concat"])
def test_other_cores_follow_knob_moves_as_the_nn_file_does(core: str, tmp_path: Path) -> None:
    """The GRU's hidden state (FiLM) and the concat TCN, random weights, knobs moved every other buffer."""
    from tests.test_effects import randomise_knob_paths

    name, conditioning = core.split("-")
    profile = "effect-gru" if name == "gru" else "effect-tcn"
    tiny = ["model.channels=8"] + ([] if name == "gru" else ["model.kernel_size=3", "model.dilations=[1, 2, 4]"])
    cfg = load_profile(profile, [*tiny, f"model.conditioning={conditioning}"]).model
    assert isinstance(cfg, EffectConfig)
    torch.manual_seed(1)
    model = build_effect_model(cfg, OVERDRIVE.knobs, streaming=True)
    randomise_knob_paths(model, seed=1)
    export = effect_export.exportable(model)
    export_core(export, effect_export.card(export, "fx", profile), ["nn", "onnx"], tmp_path, buffer=256,
                quick=True)
    if name == "gru":  # ONNX Runtime runs the recurrence as one node
        assert "GRU" in [n.op_type for n in onnx.load(str(tmp_path / "fx.onnx")).graph.node]
    x = _dry().numpy()[..., :8192]
    moves = _knob_moves(OVERDRIVE.knobs, 256, 8, seed=4)
    onnx_out = _play(_OnnxFile(tmp_path / "fx.onnx"), x, 256, moves)
    assert float(np.abs(onnx_out - _play(_OnnxFile(tmp_path / "fx.onnx"), x, 256, {})).max()) > 1e-3
    assert float(np.abs(onnx_out - _play(_NnFile(tmp_path / "fx.ts"), x, 256, moves)).max()) <= 1e-5


def test_tildekit_export_onnx_and_check_an_effect_run(run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    exported = CliRunner().invoke(cli, ["export", str(run), "--target", "onnx", "--out", str(out), "--name", "od",
                                        "--buffer", "512"])
    assert exported.exit_code == 0, exported.output
    assert sorted(p.name for p in out.iterdir()) == ["od.forward.state.npz", "od.onnx"]
    checked = CliRunner().invoke(cli, ["check", str(out / "od.onnx")])
    assert checked.exit_code == 0 and "FAIL" not in checked.output, checked.output
    assert "inputs and outputs" in checked.output


@pytest.mark.slow
def test_tildekit_export_all_and_check_an_effect_run(run, tmp_path: Path) -> None:
    """Every target with the full checks (every host buffer and rate for nn~ and Neutone)."""
    out = tmp_path / "out"
    exported = CliRunner().invoke(cli, ["export", str(run), "--target", "all", "--out", str(out), "--name", "od",
                                        "--buffer", "512"])
    assert exported.exit_code == 0, exported.output
    assert sorted(p.name for p in out.iterdir()) == ["od.forward.state.npz", "od.nm", "od.onnx", "od.ts"]
    for name in ("od.ts", "od.nm", "od.onnx"):
        checked = CliRunner().invoke(cli, ["check", str(out / name)])
        assert checked.exit_code == 0 and "FAIL" not in checked.output, checked.output


def test_knob_values_are_checked_by_the_onnx_runtime(exported) -> None:
    streamer = OnnxStreamer(exported[1024] / "fx.onnx")
    streamer.set_attribute("gain", 36.0)  # a range's end is inside it
    for value, words in ((36.5, "gain takes 1 value from 0 to 36"), (float("nan"), "got nan"),
                         ([1.0, 2.0], "got 1, 2")):
        with pytest.raises(TildekitError, match=words) as refused:
            streamer.set_attribute("gain", value)
        assert "\n" not in str(refused.value)
    with pytest.raises(TildekitError, match="no attribute 'drive'"):
        streamer.set_attribute("drive", 1.0)


@pytest.mark.parametrize("name", ["x", "y"])
def test_knobs_named_like_the_graph_audio_are_refused_in_one_line(name: str) -> None:
    cfg = load_profile("effect-tcn", TINY).model
    assert isinstance(cfg, EffectConfig)
    model = build_effect_model(cfg, (KnobRange(name, 0.0, 1.0, 0.5),), streaming=True)
    with pytest.raises(TildekitError, match="is taken by the export's own") as refused:
        effect_export.exportable(model)
    assert "\n" not in str(refused.value)


def test_a_file_whose_card_renames_a_knob_to_the_audio_input_is_refused(exported, tmp_path: Path) -> None:
    """The card inside an .onnx file is untrusted: a knob named x would feed the audio input."""
    import dataclasses

    card = read_card(exported[1024] / "fx.onnx")
    hostile = dataclasses.replace(card, attributes=[dataclasses.replace(a, name="x") if a.name == "gain" else a
                                                    for a in card.attributes])
    proto = onnx.load(str(exported[1024] / "fx.onnx"))
    set_onnx_card(proto, hostile)
    onnx.save(proto, str(tmp_path / "fx.onnx"))
    with pytest.raises(TildekitError, match="its knob 'x' is the name of the graph's audio") as refused:
        OnnxStreamer(tmp_path / "fx.onnx")
    assert "\n" not in str(refused.value)


def test_the_engine_plays_the_onnx_file_with_knobs_from_osc_over_udp(run, exported) -> None:
    """Knobs sent as OSC to the headless engine (real socket on 127.0.0.1) running the .onnx file
    play what the trained model computes at that setting."""
    from tildekit.scripting.runner import OnnxRunner, open_runner

    x = _dry()[..., :16384]
    reference = _whole(run, x, SETTING)[0]
    assert np.abs(reference).max() < 0.9  # under the engine's 0 dBFS ceiling: the limiter leaves the samples alone
    runner = open_runner(exported[1024] / "fx.onnx")
    assert isinstance(runner, OnnxRunner)
    engine, played = play_with_knobs_over_osc(runner, 1024, x)
    assert engine.stats.applied == len(SETTING) and engine.stats.bad_value == 0
    assert np.max(np.abs(played - reference)) <= 1e-5


def test_the_pi_bundle_takes_an_effect_onnx_file(exported, tmp_path: Path) -> None:
    from tildekit.patches.write import write_patches
    from tildekit.scripting.bundle import make_bundle

    out = tmp_path / "fx-pi"
    make_bundle(exported[1024] / "fx.onnx", out, write_patches=write_patches)
    files = {p.name for p in out.iterdir()}
    assert {"fx.onnx", "fx.forward.state.npz", "fx.ts", "start.sh", "README.md", "fx-forward.pd"} <= files
    assert "fx.onnx" in (out / "start.sh").read_text()


@pytest.mark.slow
def test_the_pi_bundle_takes_an_effect_run_dir(run, tmp_path: Path) -> None:
    from tildekit.scripting.bundle import make_bundle

    lines: list[str] = []
    out = tmp_path / "run-pi"
    make_bundle(run, out, progress=lines.append)
    graphs = list(out.glob("*.onnx"))
    assert len(graphs) == 1 and read_card(graphs[0]).family == "effect"
    assert graphs[0].with_name(graphs[0].name.replace(".onnx", ".forward.state.npz")).is_file()
    assert any("'effect-raspberry' profile is sized for a Pi 4" in line for line in lines)  # trained on effect-tcn

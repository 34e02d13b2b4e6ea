"""The effect family through the export layer: a trained run to nn~ and Neutone FX files that
compute what the model computes, knobs as attributes (nn~) and knobs (Neutone, four at most),
no click on a knob move, and the one-line refusals."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.test_effects import BUFFERS, randomise_knob_paths
from tildekit.cli import main as cli
from tildekit.errors import TildekitError
from tildekit.export import effect_export
from tildekit.export.card_io import read_card
from tildekit.export.check import nn_set
from tildekit.export.neutone_queue import N_PARAMS
from tildekit.export.nn_load import load_like_nn
from tildekit.export.targets import export_core, export_run
from tildekit.models.config import EffectConfig, load_profile
from tildekit.models.contract.card import ModelCard
from tildekit.models.effects.model import build_effect_model
from tildekit.models.effects.pairs import render_pairs
from tildekit.models.effects.reference import OVERDRIVE, KnobRange
from tildekit.models.effects.train import load_effect_run, train_effect

pytestmark = [pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]  # as a host's audio thread runs it

RATE = 48000
TINY = ["model.channels=8", "model.kernel_size=3", "model.dilations=[1, 2, 4, 8, 16]",
        "train.batch_size=4", "train.window=2048", "train.warmup=256", "train.stft_scales=[128, 512, 2048]",
        "train.validate_every=1000", "train.checkpoint_every=1000", "train.validation_fraction=0.25"]
STEPS = 30
SETTING = {"gain": 30.0, "tone": 2000.0, "level": -3.0}  # not the defaults: the attributes must reach the model
LENGTH = 32768
FAST_BUFFERS = [64, 1024, 16384]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ModelCard]:
    """A tiny overdrive model trained a few dozen steps, exported to nn~ and Neutone (quick check)."""
    root = tmp_path_factory.mktemp("fx")
    render_pairs(OVERDRIVE, 8, 0.25, seed=5).save(root / "pairs")
    torch.manual_seed(0)
    train_effect(root / "pairs", root / "run", load_profile("effect-tcn", TINY), steps=STEPS, progress=False)
    card, paths = export_run(root / "run", ["nn", "neutone"], root / "out", name="fx", quick=True)
    assert sorted(p.name for p in paths) == ["fx.nm", "fx.ts"]
    return root / "run", root / "out", card


def _dry() -> torch.Tensor:
    return torch.from_numpy(render_pairs(OVERDRIVE, 1, LENGTH / RATE, seed=3).dry).reshape(1, 1, -1) * 4


def _stream(call: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, buffer: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([call(x[..., i:i + buffer]) for i in range(0, x.shape[-1], buffer)], -1)


def play_with_knobs_over_osc(runner: Any, buffer: int, x: torch.Tensor) -> tuple[Any, np.ndarray]:
    """SETTING sent as OSC (real socket on 127.0.0.1) to a headless engine playing ``runner``,
    then ``x`` played through it once every message has arrived."""
    import socket

    from tests.test_engine import osc, wait_for
    from tildekit.scripting.engine import Engine

    with Engine(runner, "127.0.0.1", 0, buffer=buffer, ceiling_db=0.0) as engine:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for name, value in SETTING.items():
                sender.sendto(osc(f"/tildekit/fx/attr/{name}", value), engine.osc_address)
            assert wait_for(lambda: engine.stats.received == len(SETTING), seconds=20.0)
        played = engine.run_array(x[0].numpy())
    return engine, played


def _unit(card: ModelCard, name: str, value: float) -> float:
    spec = card.attribute(name)
    assert spec.minimum is not None and spec.maximum is not None
    return (value - spec.minimum) / (spec.maximum - spec.minimum)


def _neutone_params(card: ModelCard, setting: dict[str, float], buffer: int) -> torch.Tensor:
    rows = [_unit(card, name, setting[name]) for name in card.extra["neutone_knobs"]]
    rows += [0.0] * (N_PARAMS - len(rows))
    return torch.tensor(rows).reshape(N_PARAMS, 1).expand(N_PARAMS, buffer).contiguous()


def _hosts(run: Path, out: Path, card: ModelCard, setting: dict[str, float]
           ) -> dict[str, Callable[[int], Callable[[torch.Tensor], torch.Tensor]]]:
    """Per host, a factory: buffer size -> one call per buffer, from a fresh state at ``setting``."""
    before: Any = effect_export.exportable(load_effect_run(run, streaming=True)).module  # not exported
    nn_file = load_like_nn(out / "fx.ts")
    neutone = torch.jit.load(str(out / "fx.nm")).eval()

    def eager(buffer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        before.reset_state()
        for name, value in setting.items():
            setattr(before, name, value)
        return before

    def nn_tilde(buffer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        assert nn_set(nn_file, "reset", [True]) == 0
        for name, value in setting.items():
            assert nn_set(nn_file, name, [value]) == 0
        return nn_file.forward

    def plugin(buffer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        neutone.set_daw_sample_rate_and_buffer_size(card.sample_rate, buffer)
        neutone.reset()
        params = _neutone_params(card, setting, buffer)
        return lambda x: neutone.forward(x[0], params)[None]

    return {"before export": eager, "nn~ file": nn_tilde, "Neutone file": plugin}


def _worst_difference(trained: tuple[Path, Path, ModelCard], buffers: list[int]) -> dict[str, float]:
    run, out, card = trained
    x = _dry()
    whole = load_effect_run(run, streaming=False)
    with torch.no_grad():
        reference = whole.process(x, torch.tensor([[SETTING[k] for k in whole.knob_names]]))
        default = whole.process(x, torch.tensor([[k.default for k in whole.knobs]]))
    assert float((reference - default).abs().max()) > 1e-3  # the setting changes the sound
    worst = {}
    for host, make in _hosts(run, out, card, SETTING).items():
        worst[host] = max(float((_stream(make(b), x, b) - reference).abs().max()) for b in buffers)
    return worst


def test_exported_files_compute_what_the_trained_model_computes(trained) -> None:
    worst = _worst_difference(trained, FAST_BUFFERS)
    assert max(worst.values()) <= 1e-5, worst


@pytest.mark.slow
def test_exported_files_compute_what_the_trained_model_computes_at_every_buffer(trained) -> None:
    worst = _worst_difference(trained, BUFFERS)
    assert max(worst.values()) <= 1e-5, worst


def test_the_card_describes_every_knob(trained) -> None:
    _, out, card = trained
    assert card == read_card(out / "fx.ts") == read_card(out / "fx.nm")
    assert card.family == "effect" and card.delay == 0 and card.latent_size == 0
    assert list(card.methods) == ["forward"] and card.methods["forward"].params == [1, 1, 1, 1]
    for knob in OVERDRIVE.knobs:
        spec = card.attribute(knob.name)
        assert (spec.types, spec.default, spec.minimum, spec.maximum) == (
            ["float"], [knob.default], knob.minimum, knob.maximum)
        assert spec.description == f"{knob.name} ({knob.unit}), {knob.minimum:g} to {knob.maximum:g}"
    assert card.extra["knob_units"] == {"gain": "dB", "tone": "Hz", "level": "dB"}
    assert card.extra["neutone_knobs"] == ["gain", "tone", "level"] and card.extra["neutone_left_out"] == []
    assert card.extra["receptive_field"] == 1 + 2 * 31
    module = load_like_nn(out / "fx.ts")
    assert module.get_methods() == ["forward"]
    assert module.get_attributes()[:3] == ["gain", "tone", "level"]


@pytest.mark.slow
def test_tildekit_info_describes_an_effect_run(trained) -> None:
    run, _, _ = trained
    result = CliRunner().invoke(cli, ["info", str(run)])
    assert result.exit_code == 0, result.output
    assert "(family effect)" in result.output and f"step:              {STEPS}" in result.output
    assert "TCN of 8 channels" in result.output and "gain 0..36 dB (default 18)" in result.output


def test_latent_options_refuse_an_effect_run_in_one_line(trained, tmp_path: Path) -> None:
    run, _, _ = trained
    refused = CliRunner().invoke(cli, ["export", str(run), "--out", str(tmp_path / "o"), "--latent-dims", "2"])
    assert refused.exit_code != 0 and len(refused.output.strip().splitlines()) == 1, refused.output
    assert "is an effect run, which has none" in refused.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# --------------------------------------------------------------------------- knobs

def _tiny_cfg() -> EffectConfig:
    cfg = load_profile("effect-tcn", TINY).model
    assert isinstance(cfg, EffectConfig)
    return cfg


FIVE_KNOBS = (*OVERDRIVE.knobs, KnobRange("mix", 0.0, 1.0, 1.0), KnobRange("bias", -1.0, 1.0, 0.0))


@pytest.fixture(scope="module")
def five_knobs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelCard]:
    """A random model with five knobs whose knob paths matter, exported to nn~ and Neutone."""
    torch.manual_seed(2)  # a seed whose gain path is steep (the click test needs a change >> the sound's steps)
    cfg = _tiny_cfg()
    model = build_effect_model(cfg, FIVE_KNOBS, streaming=True)
    randomise_knob_paths(model, seed=2)
    export = effect_export.exportable(model)
    card = effect_export.card(export, "five", "effect-tcn")
    out = tmp_path_factory.mktemp("five")
    with pytest.warns(UserWarning, match="leaves bias at their defaults") as caught:
        export_core(export, card, ["nn", "neutone"], out, quick=True)
    assert [str(w.message) for w in caught if "Neutone" in str(w.message)] == [
        "five: Neutone FX has 4 knobs: the .nm file plays gain, tone, level, mix and leaves bias at their "
        "defaults (nn~ and OSC reach every attribute)"]
    return out, card


def test_neutone_plays_the_first_four_knobs_and_the_card_names_the_others(five_knobs) -> None:
    out, card = five_knobs
    assert card.extra["neutone_knobs"] == ["gain", "tone", "level", "mix"]
    assert card.extra["neutone_left_out"] == ["bias"]
    assert load_like_nn(out / "five.ts").get_attributes()[:5] == ["gain", "tone", "level", "mix", "bias"]
    neutone = torch.jit.load(str(out / "five.nm"))
    names = [p["name"] for p in neutone.w2w_base.get_neutone_parameters_metadata().values()]
    assert names == ["gain", "tone", "level", "mix"]
    assert "not on a knob (Neutone has four): bias" in neutone.to_metadata()["technical_description"]


def _sine(seconds: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(seconds * RATE)) / RATE
    return (0.3 * torch.sin(2 * math.pi * 110 * t)).reshape(1, 1, -1)


def _max_jump(y: torch.Tensor) -> float:
    return float(y[0, 0].diff().abs().max())


@pytest.mark.parametrize("host", ["nn~", "Neutone"])
def test_a_knob_move_through_the_exported_file_does_not_click(five_knobs, host: str) -> None:
    """gain from its minimum to its maximum between two buffers: the output glides (the model's
    smoother); its largest sample-to-sample step stays near the steady sound's, far below the
    change of the output (which a jump to the new setting would put in one step)."""
    out, card = five_knobs
    low = {k.name: k.default for k in FIVE_KNOBS} | {"gain": FIVE_KNOBS[0].minimum}
    high = low | {"gain": FIVE_KNOBS[0].maximum}
    buffer, step = 480, 9600
    x = _sine()

    def play(settings: dict[int, dict[str, float]]) -> torch.Tensor:
        if host == "nn~":
            module = load_like_nn(out / "five.ts")
        else:
            module = torch.jit.load(str(out / "five.nm")).eval()
            module.set_daw_sample_rate_and_buffer_size(card.sample_rate, buffer)
            module.reset()
        outputs, params = [], None
        with torch.inference_mode():
            for start in range(0, x.shape[-1], buffer):
                if start in settings:
                    if host == "nn~":
                        for name, value in settings[start].items():
                            assert nn_set(module, name, [value]) == 0
                    else:
                        params = _neutone_params(card, settings[start], buffer)
                chunk = x[..., start:start + buffer]
                outputs.append(module.forward(chunk) if host == "nn~" else module.forward(chunk[0], params)[None])
        return torch.cat(outputs, -1)

    before, after, stepped = play({0: low}), play({0: high}), play({0: low, step: high})
    np.testing.assert_allclose(stepped[..., :step], before[..., :step], atol=1e-6)
    settled = max(_max_jump(before[..., 2000:]), _max_jump(after[..., 2000:]))
    around = _max_jump(stepped[..., step - buffer:step + 10 * buffer])
    change = float((after - before)[..., step:].abs().max())
    assert change > 5 * settled  # the knob matters: jumping to the new output would click
    assert around <= 1.25 * settled, (around, settled, change)  # the glide's steps: the steady sound's


def test_knobs_that_cannot_be_attributes_are_refused_in_one_line() -> None:
    cfg = _tiny_cfg()
    for name, words in (("forward", "is taken by the export's own methods"), ("reset", "is taken"), ("x", "is taken"),
                        ("2x", "must not start with a digit"), ("drive level", "may only use")):
        model = build_effect_model(cfg, (KnobRange(name, 0.0, 1.0, 0.5),), streaming=True)
        with pytest.raises(TildekitError, match=words) as refused:
            effect_export.exportable(model)
        assert "\n" not in str(refused.value) and "pairs.json" in str(refused.value)
    for knob, words in ((KnobRange("drive", 1.0, 1.0, 1.0), "not a finite range"),
                        (KnobRange("drive", 0.0, 1.0, 0.5, "d\nB"), "control or invisible character"),
                        (KnobRange("drive", 0.0, 1.0, 0.5, "x" * 40), "characters long")):
        with pytest.raises(TildekitError, match=words) as refused:
            effect_export.check_knobs([knob])
        assert "\n" not in str(refused.value)
    with pytest.raises(TildekitError, match="streaming"):
        effect_export.exportable(build_effect_model(cfg, OVERDRIVE.knobs, streaming=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # three knobs: no Neutone warning
        effect_export.card(effect_export.exportable(build_effect_model(cfg, OVERDRIVE.knobs, streaming=True)), "x")


# --------------------------------------------------------------------------- patches, OSC, engine


def test_patch_gives_each_knob_a_slider_that_sets_its_attribute(trained, tmp_path: Path) -> None:
    from tildekit.patches.build import forward_graph
    from tildekit.patches.spec import build_spec

    _, out, card = trained
    written = CliRunner().invoke(cli, ["patch", str(out / "fx.ts"), "--host", "both", "--out", str(tmp_path)])
    assert written.exit_code == 0, written.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fx-forward.maxpat", "fx-forward.pd", "fx-osc.maxpat",
                                                          "fx-osc.pd"]
    graph = forward_graph(build_spec(card, "fx.ts", "fx"), "pd")
    boxes = graph.boxes
    nn_box = next(i for i, b in enumerate(boxes) if b.text == "nn~ fx.ts forward 2048")
    following: dict[int, list[int]] = {}
    for cord in graph.cords:
        following.setdefault(cord.source, []).append(cord.sink)

    def reaches_nn(start: int, words: str) -> bool:
        """A cord path from ``start`` through the box saying ``words`` into the nn~ box."""
        seen, todo, passed = set(), [(start, False)], False
        while todo:
            node, through = todo.pop()
            through = through or boxes[node].text == words
            if node == nn_box and through:
                passed = True
            for sink in following.get(node, []):
                if (sink, through) not in seen:
                    seen.add((sink, through))
                    todo.append((sink, through))
        return passed

    for knob in OVERDRIVE.knobs:
        slider = [i for i, b in enumerate(boxes) if b.kind == "slider" and b.label == knob.name]
        assert len(slider) == 1  # the output gain's slider is labelled "output", not "gain"
        assert reaches_nn(slider[0], f"list prepend set {knob.name}")
        text = (tmp_path / "fx-forward.pd").read_text()
        assert f"hsl 128 15 {knob.minimum:g} {knob.maximum:g} 0 0 empty empty {knob.name} " in text
        assert f"tk-fx-attr-{knob.name} {knob.default:g}" in text  # the slider starts at the default


def test_pd_opens_the_effect_patches(trained, tmp_path: Path) -> None:
    from tests.test_patches import PD, _free_udp_port, _problems, _run_pd
    from tildekit.patches.write import write_patches

    if PD is None:
        pytest.skip("Pure Data (Debian package puredata) is not installed")
    _, out, card = trained
    written = write_patches(card, tmp_path, host="pd", osc_port=_free_udp_port())
    output = _run_pd(tmp_path, [p.name for p in written])
    assert _problems(output) == [], output
    assert "nn~ fx.ts forward 2048" in output  # attempted (nn~ itself is not installed here)


def test_osc_map_gives_each_knob_an_address_with_its_range(trained) -> None:
    from tildekit.models.contract.oscmap import BadValueError, Control, OscMap

    _, _, card = trained
    osc = OscMap(card)
    documented = {d.pattern: d for d in osc.documentation()}
    for knob in OVERDRIVE.knobs:
        address = f"/tildekit/fx/attr/{knob.name}"
        assert osc.attr(knob.name) == address and documented[address].types == "f"
        assert osc.parse(address, [knob.maximum]) == Control("attr", name=knob.name, values=(knob.maximum,))
        with pytest.raises(BadValueError):
            osc.parse(address, [knob.maximum + 1.0])
    assert not any("latent" in pattern for pattern in documented)


def test_the_engine_sets_knobs_from_osc_over_udp(trained) -> None:
    """Knobs sent as OSC to the headless engine (real socket on 127.0.0.1) play what the trained
    model computes at that setting."""
    from tildekit.scripting.runner import open_runner

    run, out, _ = trained
    x = _dry()[..., :16384]
    whole = load_effect_run(run, streaming=False)
    with torch.no_grad():
        reference = whole.process(x, torch.tensor([[SETTING[k] for k in whole.knob_names]]))[0].numpy()
    assert np.abs(reference).max() < 0.9  # under the engine's 0 dBFS ceiling: the limiter leaves the samples alone
    engine, played = play_with_knobs_over_osc(open_runner(out / "fx.ts"), 512, x)
    assert engine.stats.applied == len(SETTING) and engine.stats.bad_value == 0
    assert np.max(np.abs(played - reference)) <= 1e-5

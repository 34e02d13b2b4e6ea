"""nn~ models tildekit did not write: every tool works from the file's own nn~ methods.

The models are built here the way RAVE's exporter (through nn_tilde's Python module) lays them
out, with no tildekit card (tests/nn_convention.py); their delays are known by construction.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from tests import nn_convention as nnc
from tests.test_patches import _free_udp_port, _problems, _run_pd, needs_pd
from tildekit.cli import main
from tildekit.errors import TildekitError
from tildekit.export.bench import bench_file
from tildekit.export.card_io import MissingCardError, model_card, read_card
from tildekit.export.check import check_file
from tildekit.export.foreign_nn import derive_card
from tildekit.export.neutone_foreign import attribute_range, convert_to_neutone
from tildekit.models.contract.card import FOREIGN_NOTE, is_derived
from tildekit.models.contract.oscmap import OscMap
from tildekit.patches.write import write_patches
from tildekit.scripting.controller import ControlError, Controller
from tildekit.scripting.runner import open_runner

pytestmark = pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning")


@pytest.fixture(scope="module")
def files(tmp_path_factory, one_thread):
    folder = tmp_path_factory.mktemp("foreign")
    return {
        "rave": nnc.save(nnc.RaveLike(), folder / "ravelike.ts"),
        "noisy": nnc.save(nnc.RaveLike(stochastic=True), folder / "noisy.ts"),
        "bare": nnc.save(nnc.Bare(), folder / "bare.ts"),
    }


def delayed(x: np.ndarray, delay: int) -> np.ndarray:
    return np.concatenate([np.zeros(x.shape[:-1] + (delay,), x.dtype), x[..., :x.shape[-1] - delay]], -1)


# ------------------------------------------------------------------------------- the derived card


def test_card_is_read_from_the_files_methods_buffers_attributes_and_labels(files):
    with pytest.raises(MissingCardError):
        read_card(files["rave"])
    card = model_card(files["rave"])
    assert is_derived(card)
    assert {k: m.params for k, m in card.methods.items()} == {
        "encode": [1, 1, 8, 8], "decode": [8, 8, 1, 1], "forward": [1, 1, 1, 1]}
    assert card.methods["decode"].input_labels[0] == "(signal) Latent dimension 1"
    assert card.methods["forward"].output_labels == ["(signal) Channel 1"]
    assert (card.sample_rate, card.channels, card.latent_size, card.compression) == (44100, 1, 8, 8)
    assert card.extra["sample_rate_source"] == "attribute sr"
    attributes = {a.name: (a.types, a.default) for a in card.attributes}
    assert attributes == {"gain": (["float"], [1.0]), "offset": (["float"], [0.0]),
                          "learn_target": (["bool"], [False]),  # RAVE's getter returns a bare bool
                          "steps": (["int", "int"], [3, 4])}  # nn_tilde's returns a tuple


def test_fallback_discovery_without_get_methods_labels_or_rate(files):
    card = model_card(files["bare"])
    assert list(card.methods) == ["forward"] and card.methods["forward"].params == [2, 1, 2, 1]
    assert card.methods["forward"].input_labels == ["audio in 1", "audio in 2"]
    assert [(a.name, a.default) for a in card.attributes] == [("gain", [1.0])]
    assert card.latent_size == 0 and card.channels == 2
    assert card.extra["sample_rate_source"].startswith("assumed")


def test_impulse_delays_are_the_known_delays_of_the_stack(files):
    rave, noisy, bare = (model_card(files[k]) for k in ("rave", "noisy", "bare"))
    assert rave.delay == rave.methods["forward"].delay == nnc.FORWARD_DELAY
    assert rave.methods["decode"].delay == nnc.DECODE_LINE
    # encode's latent frames stamp their first sample: within one frame of the line's delay
    assert abs(rave.methods["encode"].delay - (nnc.CONV_DELAY + nnc.ENCODE_LINE)) < nnc.COMPRESSION
    assert noisy.delay == nnc.FORWARD_DELAY  # same seed, same draws: the noise cancels out
    assert bare.delay == nnc.BARE_DELAY
    assert noisy.extra["stochastic"] is True and rave.extra["stochastic"] is False


def test_files_that_are_not_nn_models_are_refused_clearly(tmp_path):
    path = nnc.save(nnc.NotNN(), tmp_path / "plain.ts")
    with pytest.raises(TildekitError, match="not an nn~ model"):
        derive_card(path)
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 2 and "not an nn~ model" in result.output
    assert not list(tmp_path.glob("*.nm")) and len(list(tmp_path.iterdir())) == 1


# ------------------------------------------------------------------------------- info, check, bench


def test_info_says_the_card_is_derived(files):
    result = CliRunner().invoke(main, ["info", str(files["rave"])])
    assert result.exit_code == 0, result.output
    assert FOREIGN_NOTE in result.output
    assert f"delay {nnc.FORWARD_DELAY} samples" in result.output and "learn_target" in result.output


@pytest.mark.parametrize("key", ["rave", "noisy", "bare"])
def test_check_passes_on_nn_convention_models(files, key):
    results = check_file(files[key])
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    assert FOREIGN_NOTE in results[0].reason
    streaming = [r for r in results if r.item.startswith("forward streaming")]
    assert streaming and (("stochastic" in streaming[0].reason) == (key == "noisy"))


@pytest.mark.parametrize("model, item", [(nnc.ShortForward, "forward output shape"),
                                         (nnc.RaisingRate, "set_sample_rate never raises")])
def test_check_fails_what_would_break_in_nn(tmp_path, model, item):
    path = nnc.save(model(), tmp_path / "broken.ts")
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 1
    failed = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert failed and any(item in line for line in failed), result.output


def test_bench_times_a_foreign_forward(files):
    report = bench_file(files["rave"], [2048], min_seconds=0.01)
    assert FOREIGN_NOTE in report.table()
    (row,) = report.rows
    assert row.torchscript_xrt > 0 and row.delay == nnc.FORWARD_DELAY + 4096 - 64 + 2048


# ------------------------------------------------------------------------------- patches in real Pd


@needs_pd
@pytest.mark.parametrize("key", ["rave", "bare"])
def test_pd_opens_the_patches_of_a_foreign_model(files, tmp_path, key):
    written = write_patches(files[key], tmp_path, host="pd", osc_port=_free_udp_port())
    names = sorted(p.name for p in written)
    expected = {"rave": ["ravelike-forward.pd", "ravelike-osc.pd", "ravelike-transfer.pd"],
                "bare": ["bare-forward.pd", "bare-osc.pd"]}[key]
    assert names == expected
    text = (tmp_path / names[0]).read_text()
    assert "nn~ model" in text and "forward" in text
    output = _run_pd(tmp_path, names)
    assert not _problems(output), output


# ------------------------------------------------------------------------------- OSC tools and serve


def test_osc_controller_validates_against_the_derived_address_space(files):
    with Controller.for_model(files["rave"], port=_free_udp_port()) as controller:
        assert controller.validate("latent/7", [0.5])[1] == (0.5,)
        assert controller.validate("attr/learn_target", [True])[1] == (True,)
        assert controller.validate("attr/steps", [1, 2])[1] == (1, 2)
        with pytest.raises(ControlError):
            controller.validate("latent/8", [0.5])  # 8 latent dims: 0..7
    with Controller.for_model(files["bare"], port=_free_udp_port()) as controller:
        with pytest.raises(ControlError, match="no latent space"):
            controller.validate("latent/0", [0.5])
        assert controller.validate("attr/gain", [0.5])[1] == (0.5,)


def test_runner_plays_latent_controls_through_encode_and_decode(files):
    runner = open_runner(files["rave"])
    osc = OscMap(runner.card)
    assert runner.latent_path
    x = (0.1 * np.random.default_rng(0).standard_normal((1, 4096))).astype(np.float32)
    plain = runner.process(x)
    assert np.array_equal(plain, delayed(x, nnc.FORWARD_DELAY))
    runner.reset()
    runner.apply(osc.parse(osc.latent(0), [0.5]))
    moved = runner.process(x) - plain
    # latent dim 0 holds the first sample of each 8-sample frame: only those samples move
    after = moved[0, nnc.FORWARD_DELAY + 8:]
    assert np.isclose(after.max(), 0.5, atol=1e-6) and np.count_nonzero(np.abs(after) > 0.25) == after.size // 8
    # a reset reloads the file (no reset attribute) and sets the attributes again
    runner.apply(osc.parse(osc.latent(0), [0.0]))
    runner.apply(osc.parse(osc.attr("gain"), [2.0]))
    runner.process(x)
    runner.reset()
    assert np.allclose(runner.process(x), 2 * delayed(x, nnc.FORWARD_DELAY), atol=1e-6)


def test_serve_file_mode_on_a_foreign_model(files, tmp_path):
    rate = 44100
    x = (0.2 * np.sin(2 * np.pi * 330 * np.arange(rate // 2) / rate)).astype(np.float32)
    sf.write(tmp_path / "in.wav", np.stack([x, -x], 1), rate, subtype="FLOAT")
    result = CliRunner().invoke(main, ["serve", str(files["bare"]), "--input", str(tmp_path / "in.wav"),
                                       "--output", str(tmp_path / "out.wav"), "--osc-port", "0",
                                       "--buffer", "1024"])
    assert result.exit_code == 0, result.output
    assert FOREIGN_NOTE in result.output
    y, got_rate = sf.read(tmp_path / "out.wav", dtype="float32")
    assert got_rate == rate
    assert np.allclose(y.T, delayed(np.stack([x, -x]), nnc.BARE_DELAY)[:, :y.shape[0]], atol=1e-6)


# ------------------------------------------------------------------------------- convert to Neutone


def _stream_root(model, audio: torch.Tensor, block: int, params: torch.Tensor | None = None) -> torch.Tensor:
    out = []
    for i in range(0, audio.shape[1], block):
        knobs = None if params is None else params[:, i:i + block]
        out.append(model.forward(audio[:, i:i + block], knobs))
    return torch.cat(out, 1)


def test_convert_latent_knobs_and_impulse_delay(files, tmp_path):
    done = convert_to_neutone(files["rave"], tmp_path, date_created=1.7e9)
    assert done.path == tmp_path / "ravelike.nm" and done.knob_mode == "latent"
    assert [k.name for k in done.knobs] == ["latent 1", "latent 2", "latent 3", "latent 4"]
    assert done.delay == nnc.FORWARD_DELAY
    results = check_file(done.path)
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    extra = {"metadata.json": ""}
    nm = torch.jit.load(str(done.path), _extra_files=extra)
    meta = json.loads(extra["metadata.json"])
    assert meta["native_sample_rates"] == [44100] and meta["model_type"] == "mono-mono"
    assert f"Delay {nnc.FORWARD_DELAY} samples" in meta["technical_description"]
    assert nm.w2w_base.calc_model_delay_samples() == nnc.FORWARD_DELAY
    # at the model's rate the plugin's forward is the model's forward, delayed by both delays
    nm.set_daw_sample_rate_and_buffer_size(44100, 512)
    nm.reset()
    delay = nm.calc_buffering_delay_samples() + nm.calc_model_delay_samples()
    assert delay == nnc.FORWARD_DELAY
    audio = 0.1 * torch.randn(1, 8192, generator=torch.Generator().manual_seed(3))
    neutral = nm.get_default_param_values().expand(4, 8192)
    out = _stream_root(nm, audio, 512, neutral)
    assert torch.allclose(out[:, delay:], audio[:, :-delay], atol=1e-6)
    # knob 1 at its top: latent dimension 0 (the first sample of each frame) moves up
    knobs = neutral.clone()
    knobs[0] = 1.0
    nm.reset()
    moved = _stream_root(nm, audio, 512, knobs) - out
    tail = moved[0, 2 * delay:]
    assert float(tail.max()) > 0.05 and int((tail.abs() > 1e-6).sum()) <= tail.numel() // 8 + 1


def test_convert_attribute_knobs_from_the_cli(files, tmp_path):
    result = CliRunner().invoke(main, ["convert", str(files["bare"]), "--target", "neutone",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--sample-rate" in result.output and not list(tmp_path.iterdir())
    result = CliRunner().invoke(main, ["convert", str(files["bare"]), "--out", str(tmp_path),
                                       "--sample-rate", "48000", "--name", "bare48"])
    assert result.exit_code == 0, result.output
    assert "knobs (attributes): gain" in result.output and "delay 100 samples" in result.output
    assert CliRunner().invoke(main, ["check", str(tmp_path / "bare48.nm")]).exit_code == 0
    nm = torch.jit.load(str(tmp_path / "bare48.nm"))
    assert nm.get_native_sample_rates() == [48000] and not nm.is_input_mono()
    assert nm.get_native_buffer_sizes() == []  # a ratio-1 model takes any buffer
    assert attribute_range(1.0) == (0.0, 2.0)
    nm.set_daw_sample_rate_and_buffer_size(48000, 256)
    nm.reset()
    audio = 0.1 * torch.randn(2, 2048, generator=torch.Generator().manual_seed(4))
    knobs = torch.zeros(4, 2048)
    knobs[0] = 1.0  # gain knob at its top: 2x
    out = _stream_root(nm, audio, 256, knobs)
    assert torch.allclose(out[:, nnc.BARE_DELAY:], 2 * audio[:, :-nnc.BARE_DELAY], atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--name", "../escape"], "plain file name"),
    (["--sample-rate", "192000"], "1..96000"),
])
def test_convert_refuses_bad_inputs_and_writes_nothing(files, tmp_path, args, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", str(files["rave"]), "--out", str(out), *args])
    assert result.exit_code == 2 and message in result.output
    assert not list(tmp_path.rglob("*.nm"))

"""The engine's resampling stage: host-rate files and buffers around a model at its own rate,
checked against the nn~ export's own resampler (the torch twin) on the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner

from tildekit.cli import main
from tildekit.errors import TildekitError
from tildekit.export.card_io import card_extra_files
from tildekit.scripting.engine import Engine
from tildekit.scripting.runner import open_runner

pytestmark = [pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]

HOST = 44100
BUFFER = 1024


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """tiny.ts, tiny.onnx and tiny.decode.onnx (dynamic length: any multiple of 128), one core."""
    import onnx

    from tildekit.export.core import ExportCore
    from tildekit.export.model_card import card_from_core
    from tildekit.export.nn_tilde import script_nn_tilde
    from tildekit.export.onnx_export import build_onnx
    from tildekit.models.autoencoder import build_model
    from tildekit.models.config import load_profile

    torch.manual_seed(0)
    cfg = load_profile("small", ["model.capacity=4", "model.max_channels=16", "model.latent_size=4"]).model
    whole = build_model(cfg, False).eval()
    streaming = build_model(cfg, True)
    streaming.load_state_dict(whole.state_dict())
    core = ExportCore(streaming)
    card = card_from_core(core, "tiny", None, "small", 0)
    folder = tmp_path_factory.mktemp("models")
    torch.jit.save(script_nn_tilde(core, card), str(folder / "tiny.ts"), _extra_files=card_extra_files(card))
    for method, name in (("forward", "tiny.onnx"), ("decode", "tiny.decode.onnx")):
        core.reset_state()
        proto, _ = build_onnx(core, card, method, streaming=True)
        onnx.save(proto, str(folder / name))
    return folder


def _signal(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    chirp = 0.4 * np.sin(2 * np.pi * (100 * t + 700 * t ** 2))
    return (chirp + 0.05 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)[None]


def _nn_tilde_at(path: Path, rate: int, x: np.ndarray, buffer: int) -> np.ndarray:
    """The same model through the nn~ export's own resampler (torch), as nn~ would call it."""
    model = torch.jit.load(str(path)).eval()
    assert model.set_host_sample_rate(rate) == 0
    with torch.inference_mode(), torch.jit.optimized_execution(False):
        y = [model.forward(torch.from_numpy(x[None, :, i:i + buffer])) for i in range(0, x.shape[1], buffer)]
    return torch.cat(y, -1)[0].numpy()


@pytest.mark.parametrize("model", ["tiny.ts", "tiny.onnx"])
def test_engine_at_a_host_rate_equals_the_nn_tilde_resampler(models: Path, model: str):
    x = _signal(1.0, HOST)[:, : 40 * BUFFER]
    with Engine(open_runner(models / model), "127.0.0.1", 0, buffer=BUFFER, host_rate=HOST) as engine:
        assert engine.stage is not None and engine.buffer_seconds == BUFFER / HOST
        y = engine.run_array(x)
        assert engine.delay == engine.runner.card.host_rate(HOST).delay("forward", BUFFER)  # the card's number
        if model.endswith(".ts"):  # the engine resamples itself: the file's own resampler stays off
            assert list(engine.runner.model.get_host_sample_rate()) == [engine.card.sample_rate]
    assert y.shape == x.shape and np.isfinite(y).all() and np.abs(y).max() > 0
    expected = _nn_tilde_at(models / "tiny.ts", HOST, x, BUFFER)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5 if model.endswith(".ts") else 1e-4)


def test_a_file_plays_at_its_own_rate(models: Path, tmp_path: Path):
    source = tmp_path / "in.wav"
    soundfile.write(source, _signal(1.0, HOST)[0], HOST, subtype="FLOAT")
    with Engine(open_runner(models / "tiny.onnx"), "127.0.0.1", 0, buffer=BUFFER) as engine:
        written = engine.run_file(source, tmp_path / "out.wav")
        assert engine.host_rate == HOST
    audio, rate = soundfile.read(written, dtype="float32")
    assert rate == HOST and audio.shape == (HOST,)
    with Engine(open_runner(models / "tiny.onnx"), "127.0.0.1", 0, buffer=BUFFER, host_rate=HOST) as engine:
        np.testing.assert_array_equal(engine.run_array(_signal(1.0, HOST)), audio[None])
    result = CliRunner().invoke(main, ["serve", str(models / "tiny.ts"), "--input", str(source), "--output",
                                       str(tmp_path / "cli.wav"), "--osc-port", "0", "--buffer", str(BUFFER)])
    assert result.exit_code == 0, result.output
    assert f"resampled from {HOST} Hz" in result.output
    assert soundfile.info(str(tmp_path / "cli.wav")).samplerate == HOST


def test_latent_generation_at_a_host_rate(models: Path, tmp_path: Path):
    for model in ("tiny.ts", "tiny.onnx"):
        with Engine(open_runner(models / model), "127.0.0.1", 0, buffer=BUFFER, host_rate=96000) as engine:
            first = engine.run_array(None, 30000)
            again = engine.run_array(None, 30000)
        assert first.shape == (1, 30000) and np.isfinite(first).all()
        np.testing.assert_array_equal(first, again)


def test_an_unusable_rate_is_a_one_line_error(models: Path):
    with pytest.raises(TildekitError, match="--rate 44101: .*standard sample rate"):
        Engine(open_runner(models / "tiny.ts"), "127.0.0.1", 0, buffer=BUFFER, host_rate=44101)
    result = CliRunner().invoke(main, ["serve", str(models / "tiny.ts"), "--silence", "1", "--output", "x.wav",
                                       "--rate", "44101", "--osc-port", "0"])
    assert result.exit_code == 2 and result.output.strip().count("\n") == 0, result.output

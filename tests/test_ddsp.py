"""The DDSP family: streaming equality, the pitch tracker, the synth, training and TorchScript."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tildekit.cli import main as cli
from tildekit.errors import TildekitError
from tildekit.export.card_io import read_card
from tildekit.models import synthetic
from tildekit.models.config import DDSPConfig, load_profile
from tildekit.models.ddsp.features import Features
from tildekit.models.ddsp.model import DDSP, flops_per_second, method_specs
from tildekit.models.ddsp.synth import Harmonic
from tildekit.models.ddsp.training import DDSPLoss, alignment, train_step
from tildekit.models.families import train
from tildekit.models.preprocess import preprocess
from tildekit.models.run import RunDir

SR = 16000
HOP = 64
TINY = DDSPConfig(sample_rate=SR, hop=HOP, n_harmonics=60, noise_bands=17, hidden=16, f0_min=60.0,
                  f0_max=1000.0, pitch_decimation=2, loudness_window=256)
BUFFERS = [HOP, 2 * HOP, 3 * HOP, 7 * HOP, 1024, 16384]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def make_audio(seconds: float = 2.048) -> torch.Tensor:
    """Notes with gaps, a glide and a noise burst: (2, 1, T), two different streams."""
    n = int(seconds * SR)
    track = np.zeros(n, np.float32)
    for i, (f, start) in enumerate([(220.0, 0.1), (330.0, 0.5), (147.0, 0.9)]):
        tone = synthetic.harmonic_tone(f, 0.35, SR, harmonics=12)
        s = int(start * SR)
        track[s:s + len(tone)] += tone * (0.6 if i % 2 else 0.3)
    glide = synthetic.chirp(200.0, 800.0, 0.5, SR)
    track[int(1.3 * SR):int(1.3 * SR) + len(glide)] += 0.4 * glide
    burst = synthetic.noise_burst(0.15, SR, seed=3)
    track[int(1.85 * SR):int(1.85 * SR) + len(burst)] += 0.3 * burst
    x = torch.from_numpy(track)
    return torch.stack([x, 0.5 * x.roll(4000)]).unsqueeze(1)


def run_buffers(model: DDSP, method: str, signal: torch.Tensor, buffer: int) -> torch.Tensor:
    step = buffer // HOP if method == "synth" else buffer
    model.reset_state()
    with torch.no_grad():
        return torch.cat([getattr(model, method)(signal[..., i:i + step])
                          for i in range(0, signal.shape[-1], step)], -1)


def streaming_errors(whole: DDSP) -> dict[tuple[str, int], float]:
    stream = DDSP(TINY, streaming=True)
    stream.load_state_dict(whole.state_dict())
    whole.eval()
    x = make_audio()
    with torch.no_grad():
        controls = whole.features(x)
    errors = {}
    for method, signal in [("forward", x), ("features", x), ("synth", controls)]:
        with torch.no_grad():
            reference = getattr(whole, method)(signal)
        for buffer in BUFFERS:
            out = run_buffers(stream, method, signal, buffer)
            assert out.shape == reference.shape
            scale = 1.0 if method != "features" else reference.abs().amax(-1, keepdim=True)
            errors[method, buffer] = float(((out - reference) / scale).abs().max())
    return errors


def train_briefly(model: DDSP, steps: int, lr: float = 3e-3) -> list[float]:
    x = make_audio()
    windows = x.unfold(-1, 8192, 4096).permute(0, 2, 1, 3).reshape(-1, 1, 8192)
    optimizer = torch.optim.Adam(model.parameters(), lr)
    loss = DDSPLoss([1024, 256, 64], alignment(model))
    model.train()
    return [train_step(model, optimizer, loss, windows) for _ in range(steps)]


@pytest.mark.parametrize("trained", [False, True], ids=["random", "trained"])
def test_every_method_streams_like_the_whole_signal(trained: bool):
    torch.manual_seed(1)
    whole = DDSP(TINY, streaming=False)
    if trained:
        train_briefly(whole, 8, lr=1e-2)
    errors = streaming_errors(whole)
    worst = max(errors.values())
    print(f"\nstreaming max error ({'trained' if trained else 'random'}): {worst:.2e}",
          {f"{m}@{b}": f"{e:.1e}" for (m, b), e in errors.items()})
    assert worst <= 1e-5, errors
    # the features are computed frame by frame in the same order in every split: bit-exact
    assert all(e == 0.0 for (m, _), e in errors.items() if m == "features"), errors


@pytest.mark.parametrize("trained", [False, True], ids=["random", "trained"])
def test_onnx_graphs_stream_like_the_whole_signal(trained: bool, tmp_path: Path):
    """Each method's ONNX graph, run by onnxruntime buffer by buffer with its state fed back,
    plays the whole-signal pass after the card's delay, at the attributes' exported values
    (the card's defaults) and after they are set to others (graph inputs of forward and synth)."""
    from tildekit.export import ddsp_export
    from tildekit.export.onnx_runtime import OnnxStreamer, method_file_name
    from tildekit.export.target_onnx import export_onnx

    torch.manual_seed(1)
    whole = DDSP(TINY, streaming=False)
    if trained:
        train_briefly(whole, 8, lr=1e-2)
    whole.eval()
    stream = DDSP(TINY, streaming=True)
    stream.load_state_dict(whole.state_dict())
    for model in (whole, stream):
        model.pitch_shift, model.noise_gain = 2.0, 0.5
    export = ddsp_export.exportable(stream)
    card = ddsp_export.card(export, "tiny", "test", 0)
    buffer = 4 * HOP
    export_onnx(stream, card, tmp_path, "tiny", buffer=buffer, quick=True)
    x = make_audio()
    with torch.no_grad():
        controls = whole.features(x)
    for method, signal in [("forward", x), ("features", x), ("synth", controls)]:
        spec = card.methods[method]
        with torch.no_grad():
            reference = getattr(whole, method)(signal).numpy()
        streamer = OnnxStreamer(tmp_path / method_file_name("tiny", method), batch=2)
        out = streamer.process(signal.numpy())
        assert out.shape == reference.shape
        lag = spec.delay // spec.out_ratio
        scale = np.abs(reference).max(-1, keepdims=True) if method == "features" else 1.0
        error = float(np.max(np.abs(out[..., lag:] - reference[..., : reference.shape[-1] - lag]) / scale))
        print(f"\n{method} ONNX vs whole signal ({'trained' if trained else 'random'}): {error:.2e}")
        assert error <= 1e-4, (method, error)
    # the attributes are inputs: set through the streamer, the graphs follow the model
    for model in (whole, stream):
        model.pitch_shift, model.loudness_offset, model.noise_gain = -5.0, 6.0, 2.0
    for method, signal in [("forward", x), ("synth", controls)]:
        with torch.no_grad():
            reference = getattr(whole, method)(signal).numpy()
        streamer = OnnxStreamer(tmp_path / method_file_name("tiny", method), batch=2)
        for name in ("pitch_shift", "loudness_offset", "noise_gain"):
            streamer.set_attribute(name, float(getattr(whole, name)))
        out = streamer.process(signal.numpy())
        assert float(np.max(np.abs(out - reference))) <= 1e-4, method
        with pytest.raises(TildekitError, match="pitch_shift takes 1 value from -24 to 24"):
            streamer.set_attribute("pitch_shift", 30.0)


def harmonic_tones(cfg: DDSPConfig, count: int, seed: int, seconds: float = 0.4,
                   snr_db: float = 30.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` tones of random f0 (log-uniform over the tracker's range), partials and phases."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = math.log(cfg.f0_min * 1.2), math.log(cfg.f0_max * 0.8)
    f0 = torch.exp(lo + (hi - lo) * torch.rand(count, generator=g, dtype=torch.float64))
    t = torch.arange(int(cfg.sample_rate * seconds), dtype=torch.float64) / cfg.sample_rate
    tones = []
    for f in f0:
        partials = int(min(30, (cfg.sample_rate / 2 - 1) // f))
        numbers = torch.arange(1, partials + 1, dtype=torch.float64)
        amplitudes = torch.rand(partials, generator=g, dtype=torch.float64) / numbers ** 0.7
        phases = 2 * math.pi * torch.rand(partials, generator=g, dtype=torch.float64)
        x = (amplitudes[:, None] * torch.sin(2 * math.pi * f * numbers[:, None] * t + phases[:, None])).sum(0)
        x = 0.5 * x / x.abs().max()
        x = x + torch.randn(len(t), generator=g, dtype=torch.float64) * x.pow(2).mean().sqrt() * 10 ** (-snr_db / 20)
        tones.append(x.float())
    return f0, torch.stack(tones).unsqueeze(1)


@pytest.mark.parametrize("profile", ["ddsp", "ddsp-raspberry"])
def test_pitch_tracker_accuracy_on_harmonic_tones(profile: str):
    cfg = load_profile(profile).model
    features = Features(cfg, streaming=False)
    f0, tones = harmonic_tones(cfg, 48, seed=5)
    with torch.no_grad():
        estimate = features(tones)[:, 0, features.context // cfg.hop + 1:]  # windows full of tone
    cents = 1200 * torch.log2(estimate.double() / f0[:, None])
    gross = float((cents.abs() > 1200 * math.log2(1.2)).double().mean())  # off by more than 20 %
    median = float(cents.abs().median())
    print(f"\n{profile}: gross pitch error {100 * gross:.2f} %, median |error| {median:.2f} cents "
          f"({estimate.numel()} frames, 30 dB SNR)")
    assert gross <= 0.02
    assert median <= 5.0


def test_features_loudness_reads_a_sine_level_and_silence():
    cfg = TINY
    features = Features(cfg, streaming=False)
    t = torch.arange(SR) / SR
    sine = 0.5 * torch.sin(2 * math.pi * 1000 * t)  # -9 dB of mean power, A-weighting 0 dB at 1 kHz
    with torch.no_grad():
        out = features(torch.stack([sine, torch.zeros(SR)]).unsqueeze(1))
    steady = out[0, 1, 10:]
    assert float((steady - 10 * math.log10(0.125)).abs().max()) < 0.5
    assert float(out[1, 1].max()) <= -100.0
    assert float((out[0, 0, 10:] / 1000 - 1).abs().max()) < 0.005


def test_harmonic_synth_plays_its_f0_without_aliasing():
    """440 Hz at 16 kHz with 60 harmonics of amplitude 1/h: only 18 are below Nyquist, and no other
    frequency (aliases of the 42 above would fall between the partials) carries energy."""
    harmonic = Harmonic(60, SR, HOP, streaming=False)
    frames = 2 * SR // HOP
    f0 = torch.full((1, frames), 440.0)
    amplitudes = (1.0 / torch.arange(1, 61)).view(1, 60, 1).expand(1, 60, frames).contiguous()
    with torch.no_grad():
        audio = harmonic(f0, amplitudes)[0, 0, SR:].double()  # the second second: steady
    spectrum = torch.fft.rfft(audio).abs().pow(2)  # 1 Hz bins, 440 Hz on a bin
    partials = torch.arange(440, SR // 2, 440)
    on = spectrum[partials].sum()
    off = spectrum.sum() - on
    print(f"\nenergy off the partials: {10 * math.log10(float(off / on)):.1f} dB")
    assert int(spectrum.argmax()) == 440
    assert len(partials) == 18
    assert float(off / on) < 1e-8
    levels = spectrum[partials].sqrt() / spectrum[440].sqrt()
    assert torch.allclose(levels, 1.0 / torch.arange(1, 19, dtype=torch.float64), rtol=1e-3)


def test_oscillator_phase_stays_exact_over_a_long_stream():
    harmonic = Harmonic(60, SR, HOP, streaming=True)
    amplitudes = torch.zeros(1, 60, 256)
    amplitudes[:, :3] = torch.tensor([0.5, 0.25, 0.125]).view(1, 3, 1)
    f0 = torch.full((1, 256), 441.7)
    with torch.no_grad():
        harmonic(f0, amplitudes)  # ramps from silence, then steady
        for _ in range(300):  # 300 buffers of 16384 samples: 5 minutes at 16 kHz
            last = harmonic(f0, amplitudes)
    n = torch.arange(300 * 16384, 301 * 16384, dtype=torch.float64)
    # the first block glides up from 0 Hz: it gains (hop + 1) / 2 samples' worth of phase
    f0_given = float(f0[0, 0])  # 441.7 as float32 holds: the model's input
    phase = 2 * math.pi * f0_given * (n + 1 - HOP / 2 + 0.5) / SR
    exact = sum(a * torch.sin(h * phase) for h, a in [(1, 0.5), (2, 0.25), (3, 0.125)])
    error = float((last[0, 0].double() - exact).abs().max())
    print(f"\nafter 5 minutes: max |error| {error:.1e}")
    assert error < 2e-4


def test_harmonic_synth_survives_a_non_finite_or_negative_f0():
    """The wavetable index comes from the phase: a NaN or infinite f0 must not index outside the
    tables (an exception in a host's audio thread), and the blocks before it stay clean."""
    harmonic = Harmonic(60, SR, HOP, streaming=True)
    f0 = torch.tensor([[220.0, 220.0, float("nan"), float("inf"), -50.0, 220.0]])
    amplitudes = torch.full((1, 60, 6), 0.01)
    with torch.no_grad():
        out = harmonic(f0, amplitudes)
        again = harmonic(f0, amplitudes)
    assert out.shape == again.shape == (1, 1, 6 * HOP)
    assert bool(torch.isfinite(out[..., : 2 * HOP]).all())


def test_attributes_shift_pitch_and_loudness_and_gate_the_parts():
    torch.manual_seed(0)
    model = DDSP(TINY, streaming=False).eval()
    with torch.no_grad():
        controls = model.features(make_audio())
        harmonic, noise = model.render(controls[:, 0] * 2.0, controls[:, 1] - 6.0)
        model.pitch_shift, model.loudness_offset = 12.0, -6.0
        model.harmonic_gain, model.noise_gain = 0.5, 2.0
        out = model.synth(controls)
    torch.testing.assert_close(out, 0.5 * harmonic + 2.0 * noise, rtol=1e-5, atol=1e-6)
    assert method_specs(model) == {"forward": (1, 1, 1, 1), "features": (1, 1, 2, HOP),
                                   "synth": (2, HOP, 1, 1)}


def test_short_training_lowers_the_loss():
    torch.manual_seed(2)
    losses = train_briefly(DDSP(TINY, streaming=False), 40)
    print(f"\ndistance: {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert min(losses[-5:]) < 0.8 * losses[0]


def test_scripted_streaming_model_equals_eager():
    torch.manual_seed(3)
    eager = DDSP(TINY, streaming=True).eval()
    scripted = torch.jit.script(copy.deepcopy(eager))
    x = make_audio()[..., :8192]
    with torch.no_grad():
        controls = DDSP(TINY, streaming=False).eval().features(x)
    for model in (eager, scripted):
        model.pitch_shift = 3.0
        model.noise_gain = 0.5
    for method, signal in [("forward", x), ("features", x), ("synth", controls)]:
        a = run_buffers(eager, method, signal, 3 * HOP)
        b = run_buffers(scripted, method, signal, 3 * HOP)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_shipped_profiles_and_their_cost():
    for name, budget in [("ddsp", None), ("ddsp-raspberry", 0.4e9)]:
        profile = load_profile(name)
        assert profile.family == "ddsp" and isinstance(profile.model, DDSPConfig)
        assert profile.model.n_harmonics >= 60
        assert 2048 % profile.model.hop == 0  # host buffers of powers of two are whole frames
        total = sum(flops_per_second(profile.model).values())
        print(f"\n{name}: {total / 1e9:.3f} GFLOP per audio second")
        if budget is not None:
            assert total < 0.5 * budget  # well under the Raspberry Pi budget
    assert load_profile("small").family == "autoencoder"
    assert "family" not in load_profile("small").to_dict()


@pytest.fixture(scope="module")
def dataset_48k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddsp_data")
    synthetic.write_example_folder(root / "audio", seconds=6, sample_rate=48000)
    preprocess(root / "audio", root / "ds", 48000, channels=1, progress=False)
    return root / "ds"


def test_tildekit_train_runs_a_ddsp_profile_and_resumes(dataset_48k: Path, tmp_path: Path):
    tiny = ["model.hidden=16", "model.n_harmonics=60", "train.window=8192", "train.batch_size=2",
            "train.stft_scales=[1024, 256, 64]", "train.checkpoint_every=2", "train.validate_every=2"]
    profile = load_profile("ddsp", tiny)
    run = tmp_path / "run"
    first = train(dataset_48k, run, profile, steps=2, progress=False)
    second = train(dataset_48k, run, None, steps=4, resume=True, progress=False)
    assert (first.step, second.start_step, second.step) == (2, 2, 4)
    assert second.phase == "reconstruction" and math.isfinite(second.validation_distance)
    model = RunDir(run).load_model(streaming=True)
    assert isinstance(model, DDSP) and RunDir(run).profile == profile

    info = CliRunner().invoke(cli, ["info", str(run)])
    assert info.exit_code == 0, info.output
    for expected in ["profile:           ddsp (family ddsp)", "step:              4", "48000 Hz",
                     "60 harmonics", "GRU of 16", "streaming delay:   0 samples",
                     f"parameters:        {sum(p.numel() for p in model.parameters()):,}", "distance"]:
        assert expected in info.output, info.output
    out = tmp_path / "out"
    exported = CliRunner().invoke(cli, ["export", str(run), "--target", "nn", "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    assert "wrote" in exported.output and "ddsp model, methods forward, features, synth" in exported.output
    assert sorted(p.name for p in out.iterdir()) == ["run.ts"]
    card = read_card(out / "run.ts")
    assert (card.family, card.name, card.profile, card.step) == ("ddsp", "run", "ddsp", 4)
    assert set(card.methods) == {"forward", "features", "synth"} and card.delay == 0
    checked = CliRunner().invoke(cli, ["check", str(out / "run.ts")])
    assert checked.exit_code == 0, checked.output

    every = tmp_path / "every"  # all: every target takes DDSP
    exported = CliRunner().invoke(cli, ["export", str(run), "--target", "all", "--quick", "--out", str(every)])
    assert exported.exit_code == 0, exported.output
    graphs = [f"run.{m}" for m in ("features", "forward", "synth")]
    assert sorted(p.name for p in every.iterdir()) == sorted(
        ["run.nm", "run.ts", "run.onnx", "run.features.onnx", "run.synth.onnx"] + [f"{g}.state.npz" for g in graphs])
    checked = CliRunner().invoke(cli, ["check", str(every / "run.onnx")])
    assert checked.exit_code == 0, checked.output
    # the trained model through onnxruntime, its state fed back, plays what its TorchScript plays
    from tildekit.export.onnx_runtime import OnnxStreamer

    streamer = OnnxStreamer(every / "run.onnx")
    scripted = torch.jit.load(str(every / "run.ts")).eval()
    assert streamer.info.buffer is not None
    buffer = streamer.info.buffer
    tone = synthetic.harmonic_tone(196.0, 0.4, 48000, harmonics=12)
    x = torch.from_numpy(tone[: len(tone) // buffer * buffer].astype(np.float32)).view(1, 1, -1)
    with torch.no_grad():
        expected = torch.cat([scripted(x[..., i:i + buffer]) for i in range(0, x.shape[-1], buffer)], -1).numpy()
    assert np.max(np.abs(streamer.process(x.numpy()) - expected)) <= 1e-4

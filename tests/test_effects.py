"""The effect family: reference effects, exact streaming with knob changes, smoothing without
clicks, TorchScript, profiles, and a short training that lowers the held-out ESR."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from tildekit.errors import TildekitError
from tildekit.models.config import EffectConfig, ProfileError, available_profiles, load_profile
from tildekit.models.effects.model import EffectModel, build_effect_model
from tildekit.models.effects.pairs import PairSet, render_pairs
from tildekit.models.effects.reference import CLIP_BIAS, COMPRESSOR, OVERDRIVE
from tildekit.models.effects.train import esr, load_effect_run, train_effect

RATE = 48000
BUFFERS = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
SMALL_TCN = EffectConfig(core="tcn", channels=8, kernel_size=3, dilations=[1, 4, 16, 64, 256])
SMALL_GRU = EffectConfig(core="gru", channels=8)


pytestmark = pytest.mark.usefixtures("one_thread")  # as a host's audio thread runs it


def randomise_knob_paths(model: EffectModel, seed: int = 0) -> None:
    """A freshly built model starts near the identity (the dry signal passes, FiLM near the
    identity); tests want knobs that matter: the wet path at full size, knob paths random."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.core.direct.fill_(0.0)
        model.core.out.weight.mul_(10.0)
        if model.generator is not None:
            last = model.generator.net[-1]
            last.weight.copy_(0.5 * torch.randn(last.weight.shape, generator=generator))
            last.bias.copy_(0.1 * torch.randn(last.bias.shape, generator=generator))
        else:  # concat: the knob input weights
            for p in model.core.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=generator))


# --------------------------------------------------------------------------- reference effects


def harmonic_ratio(y: np.ndarray, f0: float) -> float:
    """Energy of harmonics 2..10 over the fundamental's."""
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    bins = lambda f: spectrum[int(round(f * len(y) / RATE)) - 2:int(round(f * len(y) / RATE)) + 3]  # noqa: E731
    fundamental = float((bins(f0) ** 2).sum())
    return float(sum((bins(h * f0) ** 2).sum() for h in range(2, 11)) / fundamental)


def test_overdrive_is_bounded_and_distorts_more_with_gain() -> None:
    rng = np.random.default_rng(0)
    loud = rng.uniform(-1, 1, RATE).astype(np.float32)
    for level in (-18.0, 0.0):
        y = OVERDRIVE(loud, RATE, {"gain": 36.0, "tone": 8000.0, "level": level})
        assert np.abs(y).max() <= (1 + math.tanh(CLIP_BIAS)) * 10 ** (level / 20) + 1e-6
    t = np.arange(RATE // 2) / RATE
    sine = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    ratios = [harmonic_ratio(OVERDRIVE(sine, RATE, {"gain": g, "tone": 8000.0, "level": 0.0}), 220)
              for g in (0.0, 12.0, 30.0)]
    assert ratios[0] < ratios[1] < ratios[2]
    assert ratios[2] > 10 * ratios[0]
    # even harmonics from the asymmetric clipper
    y = OVERDRIVE(sine, RATE, {"gain": 24.0, "tone": 8000.0, "level": 0.0})
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    second = spectrum[int(440 * len(y) / RATE)]
    assert second > 0.01 * spectrum[int(220 * len(y) / RATE)]


def crest_db(y: np.ndarray) -> float:
    return 20 * math.log10(np.abs(y).max() / math.sqrt(np.mean(y ** 2)))


def test_compressor_lowers_crest_factor_above_threshold_only() -> None:
    t = np.arange(2 * RATE) / RATE
    # a tone whose level swings between -6 and -26 dBFS twice a second: the crest factor of the
    # whole signal is mostly its envelope's, which a compressor flattens
    envelope = 0.5 * 10 ** (-20 * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t)) / 20)
    loud = (envelope * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    knobs = {"threshold": -36.0, "ratio": 8.0, "attack": 5.0, "release": 100.0}
    settled = slice(RATE // 10, None)  # after the first attack (its overshoot is the effect's too)
    squashed = COMPRESSOR(loud, RATE, knobs)[settled]
    assert crest_db(squashed) < crest_db(loud[settled]) - 3.0
    assert np.abs(squashed).max() < np.abs(loud).max()
    gentle = COMPRESSOR(loud, RATE, {**knobs, "ratio": 1.5})[settled]  # a lower ratio compresses less
    assert crest_db(squashed) < crest_db(gentle) < crest_db(loud[settled])
    quiet = 10 ** (-40 / 20) * loud  # 10 dB and more below the threshold: untouched
    np.testing.assert_allclose(COMPRESSOR(quiet, RATE, knobs), quiet, atol=1e-7)


# --------------------------------------------------------------------------- streaming


def smoothed_reference(model: EffectModel, settings: list[tuple[int, list[float]]], length: int,
                       smoothing_ms: float) -> torch.Tensor:
    """(1, D, length) conditioning from a per-sample one-pole recursion (independent of the
    model's closed form): the first setting from sample 0, the others from their start."""
    targets = [model.condition(torch.tensor([values])).detach()[0].double().numpy() for _, values in settings]
    starts = [start for start, _ in settings] + [length]
    pole = math.exp(-1.0 / (smoothing_ms * 1e-3 * RATE)) if smoothing_ms > 0 else 0.0
    out = np.empty((len(targets[0]), length))
    state = targets[0]
    for i, target in enumerate(targets):
        for n in range(starts[i], starts[i + 1]):
            state = pole * state + (1 - pole) * target
            out[:, n] = state
    return torch.from_numpy(out).float().unsqueeze(0)


def streamed(model: torch.jit.ScriptModule | EffectModel, x: torch.Tensor, buffer: int,
             settings: list[tuple[int, list[float]]]) -> torch.Tensor:
    model.reset()
    changes = dict(settings)
    assert all(start % buffer == 0 for start in changes), "knobs change between buffers"
    outputs = []
    for start in range(0, x.shape[-1], buffer):
        if start in changes:
            for index, value in enumerate(changes[start]):
                model.set_knob(index, value)
        outputs.append(model(x[..., start:start + buffer]))
    return torch.cat(outputs, -1)


def check_streaming(cfg: EffectConfig, knobs, state: dict | None, buffers: list[int], length: int = 32768) -> float:
    whole = build_effect_model(cfg, knobs, streaming=False).eval()
    if state is None:
        randomise_knob_paths(whole)
    else:
        whole.load_state_dict(state)
    stream = build_effect_model(cfg, knobs, streaming=True).eval()
    stream.load_state_dict(whole.state_dict(), strict=True)  # same keys in both builds
    scripted = torch.jit.script(stream)
    x = torch.from_numpy(render_pairs(OVERDRIVE, 1, length / RATE, seed=3).dry).unsqueeze(1) * 4
    first = [k.default for k in knobs]
    second = [k.minimum + 0.8 * (k.maximum - k.minimum) for k in knobs]
    settings = [(0, first), (16384, second)]
    with torch.no_grad():
        reference = whole.process_conditioned(x, smoothed_reference(whole, settings, length, cfg.smoothing_ms))
        worst = 0.0
        for buffer in buffers:
            out = streamed(scripted, x, buffer, settings)
            worst = max(worst, float((out - reference).abs().max()))
        eager = streamed(stream, x, 1024, settings)
        worst = max(worst, float((eager - reference).abs().max()))
    assert float(reference[..., 16384:].std()) > 1e-3  # the model makes sound
    return worst


@pytest.mark.parametrize("cfg", [SMALL_TCN, dataclasses.replace(SMALL_TCN, conditioning="concat"),
                                 SMALL_GRU, dataclasses.replace(SMALL_GRU, conditioning="concat")],
                         ids=["tcn-film", "tcn-concat", "gru-film", "gru-concat"])
def test_streaming_equals_whole_signal_with_knob_changes(cfg: EffectConfig) -> None:
    buffers = BUFFERS if cfg.core == "tcn" else [64, 512, 4096, 16384]  # the GRU steps per sample: slow
    assert check_streaming(cfg, COMPRESSOR.knobs, None, buffers) <= 1e-5


@pytest.mark.parametrize("name", available_profiles("effect"))
def test_every_effect_profile_streams_exactly(name: str) -> None:
    cfg = load_profile(name).model
    buffers = BUFFERS if cfg.core == "tcn" else [64, 16384]
    assert check_streaming(cfg, OVERDRIVE.knobs, None, buffers, length=32768) <= 1e-5


def test_receptive_field_and_zero_delay() -> None:
    model = build_effect_model(SMALL_TCN, OVERDRIVE.knobs).eval()
    assert model.receptive_field == 1 + 2 * (1 + 4 + 16 + 64 + 256) == SMALL_TCN.receptive_field
    assert model.delay == 0
    x = torch.zeros(1, 1, 2048)
    x[..., 1000] = 1.0
    with torch.no_grad():
        y = model.process(x, torch.tensor([[k.default for k in OVERDRIVE.knobs]]))
        silent = model.process(torch.zeros_like(x), torch.tensor([[k.default for k in OVERDRIVE.knobs]]))
    changed = (y - silent).abs()[0, 0] > 1e-7
    assert not changed[:1000].any() and changed[1000]  # causal, and it answers at once
    assert changed[1000 + model.receptive_field:].sum() == 0  # nothing beyond the receptive field


# --------------------------------------------------------------------------- knobs


def max_jump(y: torch.Tensor) -> float:
    return float(y[0, 0].diff().abs().max())


@pytest.mark.parametrize("smoothing_ms", [20.0, 0.0])
def test_a_knob_step_makes_no_click(smoothing_ms: float) -> None:
    cfg = dataclasses.replace(SMALL_TCN, smoothing_ms=smoothing_ms)
    torch.manual_seed(1)  # fixed initial weights (a seed whose knob path is steep: see the asserts)
    model = build_effect_model(cfg, OVERDRIVE.knobs, streaming=True).eval()
    randomise_knob_paths(model, seed=2)
    t = torch.arange(RATE // 2) / RATE
    x = (0.3 * torch.sin(2 * math.pi * 110 * t)).reshape(1, 1, -1)
    low = [OVERDRIVE.knobs[0].minimum, 3000.0, -6.0]
    high = [OVERDRIVE.knobs[0].maximum, 3000.0, -6.0]
    step = 9600
    with torch.no_grad():
        before = streamed(model, x, 480, [(0, low)])
        after = streamed(model, x, 480, [(0, high)])
        stepped = streamed(model, x, 480, [(0, low), (step, high)])
    np.testing.assert_allclose(stepped[..., :step], before[..., :step], atol=1e-6)
    settled = max(max_jump(before[..., 2000:]), max_jump(after[..., 2000:]))
    around = max_jump(stepped[..., step - 480:step + 4800])
    change = float((after - before)[..., step:].abs().max())
    assert change > 5 * settled  # the knob matters: a jump to the new output would click
    if smoothing_ms > 0:
        assert around <= 1.05 * settled
    else:  # the measurement sees a click when nothing smooths the knob
        assert around > 2 * settled


def test_knob_attributes_and_script() -> None:
    model = build_effect_model(SMALL_TCN, COMPRESSOR.knobs, streaming=True).eval()
    scripted = torch.jit.script(model)
    assert scripted.knob_names == ["threshold", "ratio", "attack", "release"]
    assert scripted.knob_ranges[1] == (1.5, 10.0)
    scripted.set_knob(1, 100.0)  # clamped to the range
    assert scripted.get_knob(1) == 10.0
    scripted.set_knob(0, -12.5)
    assert scripted.get_knob(0) == -12.5


# --------------------------------------------------------------------------- profiles


def test_profiles_by_family() -> None:
    effects = available_profiles("effect")
    assert effects == ["effect-gru", "effect-raspberry", "effect-tcn"]
    assert not set(effects) & set(available_profiles())
    assert load_profile("small").family == "autoencoder"  # autoencoder profiles load as before
    assert "family" not in load_profile("small").to_dict()
    profile = load_profile("effect-tcn")
    assert profile.family == "effect" and isinstance(profile.model, EffectConfig)
    assert profile.to_dict()["family"] == "effect"
    with pytest.raises(TildekitError, match="not an effect profile"):
        train_effect(".", ".", load_profile("small"))
    profile = load_profile("effect-tcn", ["model.conditioning=concat", "model.channels=4"])
    assert (profile.model.conditioning, profile.model.channels) == ("concat", 4)
    with pytest.raises(ProfileError, match="model.core"):
        load_profile("effect-tcn", ["model.core=lstm"])


# --------------------------------------------------------------------------- training


TINY = ["model.channels=8", "model.kernel_size=3", "model.dilations=[1, 2, 4, 8, 16, 32, 64]",
        "train.batch_size=4", "train.window=2048", "train.warmup=256", "train.stft_scales=[128, 512, 2048]",
        "train.validate_every=1000", "train.checkpoint_every=5", "train.validation_fraction=0.25"]


@pytest.fixture(scope="module")
def overdrive_pairs(tmp_path_factory) -> PairSet:
    pairs = render_pairs(OVERDRIVE, 12, 0.25, seed=5)
    pairs.save(tmp_path_factory.mktemp("pairs"))
    return pairs


def test_short_training_lowers_esr(overdrive_pairs, tmp_path) -> None:
    folder = overdrive_pairs.save(tmp_path / "pairs")
    profile = load_profile("effect-tcn", TINY)
    summary = train_effect(folder, tmp_path / "run", profile, steps=150, progress=False)
    first, last = summary.first_validation_distance, summary.validation_distance
    assert first is not None and last is not None
    assert last < 0.5 * first and last < 0.5, (first, last)
    # the trained model streams exactly too, knob changes included
    state = load_effect_run(tmp_path / "run", streaming=False).state_dict()
    assert check_streaming(profile.model, OVERDRIVE.knobs, state, [64, 1024, 16384]) <= 1e-5


def test_resume_replays_an_uninterrupted_run(overdrive_pairs, tmp_path) -> None:
    folder = overdrive_pairs.save(tmp_path / "pairs")
    profile = load_profile("effect-tcn", TINY + ["train.stft_start=4"])  # both losses in play
    train_effect(folder, tmp_path / "straight", profile, steps=8, progress=False)
    train_effect(folder, tmp_path / "resumed", profile, steps=5, progress=False)
    resumed = train_effect(folder, tmp_path / "resumed", None, steps=8, resume=True, progress=False)
    assert (resumed.start_step, resumed.step) == (5, 8)
    a = load_effect_run(tmp_path / "straight", streaming=False).state_dict()
    b = load_effect_run(tmp_path / "resumed", streaming=False).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    with pytest.raises(TildekitError, match="model.channels"):
        train_effect(folder, tmp_path / "resumed", load_profile("effect-tcn", TINY + ["model.channels=4"]),
                     steps=9, resume=True, progress=False)


def test_esr() -> None:
    y = torch.randn(2, 1, 1000)
    assert float(esr(y, y)) == 0.0
    assert float(esr(y, torch.zeros_like(y))) == pytest.approx(1.0)
    assert float(esr(y, 0.5 * y)) == pytest.approx(0.25)


@pytest.mark.parametrize("cfg", [SMALL_TCN, SMALL_GRU], ids=["tcn-film", "gru-film"])
def test_film_cores_keep_silence_silent(cfg: EffectConfig) -> None:
    """No bias survives a silent input: the output is zero at any knob setting (the effects'
    too; up to float rounding, SIMD and scalar sigmoids differ in the last bit), where a leak
    would cost the log-magnitude STFT term in every pause."""
    model = build_effect_model(cfg, OVERDRIVE.knobs).eval()
    randomise_knob_paths(model, seed=4)
    silence = torch.zeros(3, 1, 4096)
    x = torch.from_numpy(render_pairs(OVERDRIVE, 3, 4096 / RATE, seed=2).dry).unsqueeze(1)
    knobs = torch.tensor([[0.0, 800.0, -18.0], [18.0, 3000.0, -6.0], [36.0, 8000.0, 0.0]])
    with torch.no_grad():
        assert float(model.process(silence, knobs).abs().max()) < 1e-6  # -120 dBFS
        assert float(model.process(x, knobs).std()) > 1e-3

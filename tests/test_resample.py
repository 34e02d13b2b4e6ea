"""Sample-rate conversion between host and model: the filters, the streaming arithmetic, the
FIFO plans, and the torch (TorchScript, ONNX) and numpy twins agreeing with each other."""

from __future__ import annotations

import io
import itertools
from fractions import Fraction

import numpy as np
import pytest
import scipy.signal
import soxr
import torch

from tildekit.models.resample import (
    ResamplePath,
    StreamResampler,
    conv_weight,
    group_matrices,
    period_matrix,
    resample_step,
)
from tildekit.models.resample_design import (
    PASSBAND,
    STOPBAND_DB,
    hold_prototype,
    kaiser_beta,
    kaiser_length,
    reduced_ratio,
    sinc_prototype,
)
from tildekit.models.resample_design import group_matrices as numpy_group_matrices
from tildekit.models.resample_design import period_matrix as numpy_period_matrix
from tildekit.models.resample_plan import HOST_RATES, plan_method
from tildekit.models.resample_stream import PolyphaseStream, StreamPath, produced

pytestmark = [pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning"),
              pytest.mark.usefixtures("one_thread")]

MODEL_RATES = (16000, 48000)
PAIRS = [(h, m) for h in HOST_RATES for m in MODEL_RATES if h != m]
BUFFERS = [64 << k for k in range(8)]  # 64 .. 8192
TOLERANCE = 1e-5


def _tone(frequency: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def _spectrum_db(y: np.ndarray, amplitude: float) -> np.ndarray:
    """dB re a sine of ``amplitude`` (Blackman-Harris: side lobes below -92 dB)."""
    window = scipy.signal.windows.blackmanharris(y.size)
    level = np.abs(np.fft.rfft(y * window)) / (amplitude * window.sum() / 2)
    return 20 * np.log10(np.maximum(level, 1e-12))


def _resample(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    up, down = reduced_ratio(in_rate, out_rate)
    return PolyphaseStream(sinc_prototype(up, down).bank(), up, down)(x)


# -- the filters ------------------------------------------------------------------------------

@pytest.mark.parametrize("in_rate, out_rate", [(44100, 48000), (48000, 16000), (16000, 88200)])
def test_the_sinc_is_scipys_kaiser_firwin(in_rate: int, out_rate: int):
    up, down = reduced_ratio(in_rate, out_rate)
    proto = sinc_prototype(up, down)
    low = 1 / max(up, down)
    width = (1 - 2 * PASSBAND) * low
    assert kaiser_beta(84.0) == pytest.approx(scipy.signal.kaiser_beta(84.0))
    assert kaiser_length(84.0, width) == scipy.signal.kaiserord(84.0, 2 * width)[0]
    length = 2 * int(proto.delay) + 1
    expected = up * scipy.signal.firwin(length, low, window=("kaiser", kaiser_beta(84.0)))
    np.testing.assert_allclose(proto.taps[:length], expected, rtol=0, atol=1e-12)
    assert not proto.taps[length:].any() and len(proto.taps) % up == 0


@pytest.mark.parametrize("host, model", PAIRS)
def test_stopband_rejects_out_of_band_tones_by_80_db(host: int, model: int):
    """Down: a tone above the stopband edge vanishes. Up: an in-band tone leaves no image."""
    high, low = max(host, model), min(host, model)
    edge = (1 - PASSBAND) * low
    # (44.1 <-> 48 kHz: the higher rate holds nothing above the edge, only transition band)
    for tone in [t for t in (edge * 1.01, 0.5 * (edge + high / 2), 0.49 * high) if edge < t < high / 2]:
        y = _resample(_tone(tone, high, 0.5), high, low)[2000:]
        assert 20 * np.log10(np.abs(y).max() / 0.5) <= -STOPBAND_DB, (host, model, tone)
    tone = 0.37 * low
    y = _resample(_tone(tone, low, 0.5), low, high)[4000:12192]
    spectrum = _spectrum_db(y, 0.5)
    bins = np.fft.rfftfreq(y.size, 1 / high)
    assert spectrum[np.abs(bins - tone) < 40].max() > -1.0  # the tone itself (window scalloping < 1 dB)
    assert spectrum[np.abs(bins - tone) > 100].max() <= -STOPBAND_DB, (host, model)


def _noise_below(top: float, rate: int, samples: int, seed: int) -> np.ndarray:
    """White noise with nothing above ``top`` Hz (built in the frequency domain)."""
    rng = np.random.default_rng(seed)
    spectrum = rng.standard_normal(samples // 2 + 1) + 1j * rng.standard_normal(samples // 2 + 1)
    spectrum[np.fft.rfftfreq(samples, 1 / rate) > top] = 0
    x = np.fft.irfft(spectrum, samples)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def _delayed(y: np.ndarray, delay: float) -> np.ndarray:
    """``y`` late by ``delay`` samples (any fraction), for a band-limited ``y``."""
    k = np.fft.rfftfreq(y.size)
    return np.fft.irfft(np.fft.rfft(y) * np.exp(-2j * np.pi * k * delay), y.size)


@pytest.mark.parametrize("host, model", PAIRS)
def test_a_sine_keeps_its_frequency_and_the_signal_matches_soxr(host: int, model: int):
    """The 'octave and a half off' check (f Hz in, f Hz out, both directions), and soxr offline:
    band-limited noise through our resampler equals soxr's output delayed by our filter delay."""
    for in_rate, out_rate in ((host, model), (model, host)):
        f = 0.3 * min(host, model)
        y = _resample(_tone(f, in_rate, 0.5), in_rate, out_rate)[3000:11192]
        peak = np.fft.rfftfreq(y.size, 1 / out_rate)[np.argmax(_spectrum_db(y, 0.5))]
        assert abs(peak - f) <= out_rate / y.size, (in_rate, out_rate, peak, f)

        up, down = reduced_ratio(in_rate, out_rate)
        delay = float(sinc_prototype(up, down).delay / Fraction(up * in_rate) * out_rate)
        x = _noise_below(0.35 * min(host, model), in_rate, in_rate, seed=in_rate)
        ours = _resample(x, in_rate, out_rate)
        reference = soxr.resample(x.astype(np.float64), in_rate, out_rate, "VHQ")  # zero delay
        middle = slice(out_rate // 8, out_rate - out_rate // 8)
        error = np.abs(ours[middle] - _delayed(reference, delay)[middle]).max()
        assert error < 1e-3, (in_rate, out_rate, error)


def test_filter_delays_stay_under_2_ms_round_trip():
    for host, model in PAIRS:
        up, down = reduced_ratio(host, model)
        there = sinc_prototype(up, down).delay / Fraction(up * host)
        back = sinc_prototype(down, up).delay / Fraction(down * model)
        assert float(there + back) <= 0.002, (host, model, float(there + back))


def test_hold_keeps_latents_whole():
    proto = hold_prototype(160, 147)
    frames = np.repeat(np.arange(20, dtype=np.float32), 1)[None]
    y = PolyphaseStream(proto.bank(), 160, 147)(frames)
    assert set(np.unique(y)) <= set(frames[0])  # every output is one input frame, unsmeared


# -- streaming arithmetic --------------------------------------------------------------------

def _split(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    cuts = np.cumsum(sizes)[:-1]
    return np.split(x, cuts, axis=-1)


@pytest.mark.parametrize("host, model", PAIRS)
def test_any_split_gives_the_whole_signal_pass(host: int, model: int):
    x = np.random.default_rng(host + model).standard_normal((2, 1, 9000)).astype(np.float32)
    for in_rate, out_rate in ((host, model), (model, host)):
        up, down = reduced_ratio(in_rate, out_rate)
        bank = sinc_prototype(up, down).bank()
        whole = PolyphaseStream(bank, up, down, 3 % down)(x)
        assert whole.shape[-1] == produced(9000, up, down, 3 % down)
        sizes = [1, 63, 64, 1000, 0, 7872]
        stream = PolyphaseStream(bank, up, down, 3 % down)
        parts = np.concatenate([stream(p) for p in _split(x, sizes)], axis=-1)
        np.testing.assert_allclose(parts, whole, rtol=0, atol=1e-6)


def test_filter_matrices_are_identical_in_torch_and_numpy():
    for host, model in PAIRS:
        for up, down in (reduced_ratio(host, model), reduced_ratio(model, host)):
            for proto in (sinc_prototype(up, down), hold_prototype(up, down)):
                bank = proto.bank()
                offset = (up * 7) % down
                torch_matrix = torch.jit.script(period_matrix)(torch.from_numpy(bank), up, down, offset)
                np.testing.assert_array_equal(torch_matrix.numpy(), numpy_period_matrix(bank, up, down, offset))
                matrices, starts = torch.jit.script(group_matrices)(torch.from_numpy(bank), up, down, offset)
                numpy_matrices, numpy_starts = numpy_group_matrices(bank, up, down, offset)
                np.testing.assert_array_equal(matrices.numpy(), numpy_matrices)
                np.testing.assert_array_equal(starts.numpy(), numpy_starts)


@pytest.mark.parametrize("in_rate, out_rate", [(44100, 48000), (96000, 16000), (16000, 96000)])
def test_torch_twin_scripted_and_onnx_agree_with_numpy(in_rate: int, out_rate: int):
    """Fractional ratios take the window-gather path, integer ones the convolution path."""
    import onnxruntime

    up, down = reduced_ratio(in_rate, out_rate)
    bank = sinc_prototype(up, down).bank()
    offset = 7 % down
    x = np.random.default_rng(1).standard_normal((1, 1, 25000)).astype(np.float32)
    expected = PolyphaseStream(bank, up, down, offset)(x)
    sizes = [64, 1, 2000, 2935, 20000]  # the last one beyond the precomputed read positions
    scripted = torch.jit.script(StreamResampler(1))
    scripted.configure(torch.from_numpy(bank), up, down, offset)
    got = torch.cat([scripted(torch.from_numpy(p)) for p in _split(x, sizes)], -1).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            matrices, starts = group_matrices(torch.from_numpy(bank), up, down, offset)
            self.register_buffer("matrices", matrices)
            self.register_buffer("starts", starts)
            self.register_buffer("weight", conv_weight(period_matrix(torch.from_numpy(bank), up, down, offset), up, down))

        def forward(self, x, history, position, phase):
            return resample_step(x, history, position, phase, self.matrices, self.starts, self.weight, up, down)

    kept = down + bank.shape[1] - 1
    scalar = torch.zeros((), dtype=torch.long)
    buffer = io.BytesIO()
    torch.onnx.export(Step(), (torch.zeros(1, 1, 64), torch.zeros(1, 1, kept), scalar, scalar), buffer, dynamo=False,
                      opset_version=17, input_names=["x", "history", "position", "phase"],
                      output_names=["y", "history_out", "position_out", "phase_out"],
                      dynamic_axes={"x": {2: "n"}, "y": {2: "m"}})
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    state = {"history": np.zeros((1, 1, kept), np.float32), "position": np.array(offset, np.int64),
             "phase": np.array(0, np.int64)}
    outs = []
    for part in _split(x, sizes):
        y, state["history"], state["position"], state["phase"] = session.run(None, {"x": part, **state})
        outs.append(y)
    np.testing.assert_allclose(np.concatenate(outs, -1), expected, rtol=0, atol=TOLERANCE)


def _plans() -> list:
    plans = []
    for host, (model, compression) in itertools.product(HOST_RATES, ((16000, 128), (48000, 256), (48000, 2048))):
        if host == model:
            continue
        for method, (i, o) in (("forward", (1, 1)), ("encode", (1, compression)), ("decode", (compression, 1))):
            plans.append(plan_method(method, model, host, i, o, 300, compression))
    return plans


def _shortfalls(plan, calls: int) -> np.ndarray:
    """need(X) - W(X) after each X = k * step host units, simulated with counts only."""
    x = np.arange(calls, dtype=np.int64) * plan.step
    y = np.array([plan.pre.produced(int(v)) for v in x])
    z = (y // plan.granularity) * plan.granularity
    w = np.array([plan.post.produced(int(v)) for v in z * plan.in_ratio // plan.out_ratio])
    return x * plan.in_ratio // plan.out_ratio - w


def test_the_prefill_is_the_least_that_never_runs_dry():
    for plan in _plans():
        calls = 4 * plan.pre.down * plan.post.down * plan.granularity // plan.step + 64
        worst = _shortfalls(plan, min(calls, 60000)).max()
        assert plan.prefill == max(0, worst), (plan.method, plan.host_rate, plan.model_rate, plan.prefill, worst)


def test_audio_delays_are_whole_host_samples():
    for plan in _plans():
        if plan.out_ratio == 1:
            assert plan.delay.denominator == 1, (plan.method, plan.host_rate, plan.model_rate, plan.delay)


class _Delay(torch.nn.Module):
    """A streaming delay line of ``delay`` samples: an 'identity model' with a known delay."""

    def __init__(self, delay: int) -> None:
        super().__init__()
        self.past = torch.zeros(1, 1, delay)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        joined = torch.cat([self.past, x], -1)
        self.past = joined[..., x.size(-1):]
        return joined[..., : x.size(-1)]


def _through_paths(plan, x: np.ndarray, sizes: list[int], model_delay: int) -> tuple[np.ndarray, np.ndarray, StreamPath]:
    """``x`` through the torch and numpy paths around a pure delay of ``model_delay`` samples."""
    torch_path = ResamplePath(1, 1)
    torch_path.configure(torch.from_numpy(plan.pre.prototype.bank()), torch.from_numpy(plan.post.prototype.bank()),
                         plan.ints())
    numpy_path = StreamPath(plan, 1, 1)
    line, numpy_line = _Delay(model_delay), np.zeros((1, model_delay), np.float32)
    outs, numpy_outs = [], []
    for block in _split(x, sizes):
        ready = torch_path.enter(torch.from_numpy(block)[None])
        outs.append(torch_path.leave(line(ready), block.shape[-1])[0].numpy())
        ready = numpy_path.enter(block)
        joined = np.concatenate([numpy_line, ready], -1)
        numpy_line, ready = joined[:, ready.shape[-1]:], joined[:, : ready.shape[-1]]
        numpy_outs.append(numpy_path.leave(ready, block.shape[-1]))
    assert torch_path.filled == numpy_path.filled
    return np.concatenate(outs, -1)[0], np.concatenate(numpy_outs, -1)[0], numpy_path


def _sine(host: int, model: int, samples: int) -> tuple[np.ndarray, float]:
    f = 0.25 * min(host, model)
    return (0.5 * np.sin(2 * np.pi * f * np.arange(samples) / host)).astype(np.float32)[None], f


@pytest.mark.parametrize("host, model", PAIRS)
def test_a_path_plays_a_sine_at_its_pitch_after_exactly_the_planned_delay(host: int, model: int):
    """Torch and numpy paths around a pure delay: the sine comes out unchanged, ``delay`` late,
    for calls of one size (the delay for that size) and of several (the any-size delay)."""
    compression, model_delay = 256, 100
    plan = plan_method("forward", model, host, 1, 1, model_delay, compression)
    aligned = compression * host // model  # whole frames at the model's rate, when whole
    buffers = [1000] + ([aligned] if compression * host % model == 0 else [])
    for buffer in buffers:
        x, f = _sine(host, model, host // 2 // buffer * buffer)
        y, y_numpy, numpy_path = _through_paths(plan, x, [buffer] * (x.shape[-1] // buffer), model_delay)
        np.testing.assert_allclose(y, y_numpy, rtol=0, atol=TOLERANCE)
        delay = plan.call_delay(buffer)
        assert delay == int(delay) and delay <= plan.delay and numpy_path.delay == delay
        settled = np.arange(int(delay) + 2000, x.shape[-1] - 100)
        expected = 0.5 * np.sin(2 * np.pi * f * (settled - int(delay)) / host)
        assert np.abs(y[settled] - expected).max() < 1e-3, (host, model, buffer, delay)


@pytest.mark.parametrize("host, model", [(96000, 48000), (96000, 16000), (48000, 16000)])
def test_another_call_size_moves_the_output_to_the_any_size_delay_without_running_dry(host: int, model: int):
    compression, model_delay = 256, 100
    plan = plan_method("forward", model, host, 1, 1, model_delay, compression)
    buffer = compression * host // model
    assert plan.call_prefill(buffer) < plan.prefill  # frame-aligned calls need fewer zeros
    x, f = _sine(host, model, 40 * buffer + 7 * 333)
    y, _, numpy_path = _through_paths(plan, x, [buffer] * 20 + [1] + [333] * 7 + [buffer - 1] * 1 + [buffer] * 19,
                                      model_delay)
    assert numpy_path.delay == plan.delay and numpy_path.filled == plan.prefill
    settled = np.arange(22 * buffer, x.shape[-1] - 100)
    expected = 0.5 * np.sin(2 * np.pi * f * (settled - int(plan.delay)) / host)
    assert np.abs(y[settled] - expected).max() < 1e-3


def test_the_prefill_for_one_call_size_is_the_least_for_those_calls():
    """Simulated over many calls, the file's (torch) and the engine's (numpy) arithmetic agree."""
    from tildekit.models.resample import call_prefill as file_call_prefill
    from tildekit.models.resample_plan import MAX_CYCLE_CALLS

    for plan in _plans():
        for buffer in (1, 64, 256, 1000, 1024, 1882, 2048, 4096):
            units = buffer // plan.in_ratio if plan.in_ratio > 1 else buffer
            if units == 0 or units % plan.step:
                continue
            least = plan.call_prefill(units)
            assert least == file_call_prefill(plan.ints(), units, MAX_CYCLE_CALLS)
            x = np.arange(1, 20001, dtype=np.int64) * units
            y = np.array([plan.pre.produced(int(v)) for v in x])
            z = (y // plan.granularity) * plan.granularity
            w = np.array([plan.post.produced(int(v)) for v in z * plan.in_ratio // plan.out_ratio])
            worst = max(0, int((x * plan.in_ratio // plan.out_ratio - w).max()))
            assert least >= worst and least <= plan.prefill, (plan.method, plan.host_rate, buffer, least, worst)
            if x.size >= 2 * plan_cycle(plan, units) > 0:
                assert least == worst, (plan.method, plan.host_rate, buffer, least, worst)


def plan_cycle(plan, units: int) -> int:
    from tildekit.models.resample_plan import call_cycle

    return call_cycle(plan.ints(), units)

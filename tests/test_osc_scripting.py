"""OSC scripting: controller, shapes, scheduler, scores, interpolation, CLI; real UDP on 127.0.0.1."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from click.testing import CliRunner
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer

from tests.conftest import make_card
from tildekit.cli import main
from tildekit.errors import TildekitError
from tildekit.export.card_io import card_extra_files
from tildekit.models.contract.oscmap import OscValueError
from tildekit.scripting.controller import ControlError, Controller
from tildekit.scripting.interpolate import (
    crossfade_weights,
    decode_latents,
    encode_audio,
    interpolate_latents,
    interpolation_messages,
    render_interpolation,
    send_interpolation,
)
from tildekit.scripting.monitor import Monitor
from tildekit.scripting.schedule import CURVES, LFO_SHAPES, Scheduler, TimedMessage, lfo_values, ramp_values
from tildekit.scripting.score import ScoreError, compile_score, load_score, parse_score, play_score

# torch.jit.* deprecation notes
pytestmark = pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning")

RATIO = 8
LATENT = 4
SR = 16000


class Receiver:
    """A plain python-osc server in a thread, collecting (address, args) in arrival order."""

    def __init__(self) -> None:
        dispatcher = Dispatcher()
        dispatcher.set_default_handler(lambda address, *args: self.inbox.put((address, args)))
        self.inbox: queue.Queue = queue.Queue()
        self.server = BlockingOSCUDPServer(("127.0.0.1", 0), dispatcher)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def take(self, count: int, timeout: float = 5.0) -> list[tuple[str, tuple]]:
        return [self.inbox.get(timeout=timeout) for _ in range(count)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    rx = Receiver()
    yield rx
    rx.close()


@pytest.fixture
def controller(tiny_card, receiver):
    with Controller(port=receiver.port, card=tiny_card) as ctl:
        yield ctl


class ConvCodec(torch.nn.Module):
    """A fixed-weight stand-in for an exported autoencoder: strided conv encoder, transposed decoder."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.enc = torch.nn.Conv1d(1, LATENT, RATIO, stride=RATIO, bias=False)
        self.dec = torch.nn.ConvTranspose1d(LATENT, 1, RATIO, stride=RATIO, bias=False)
        with torch.no_grad():
            self.enc.weight.copy_(torch.randn(self.enc.weight.shape, generator=gen))
            self.dec.weight.copy_(torch.randn(self.dec.weight.shape, generator=gen) * 0.1)
        self.register_buffer("encode_params", torch.tensor([1, 1, LATENT, RATIO]))
        self.register_buffer("decode_params", torch.tensor([LATENT, RATIO, 1, 1]))
        self.sample_rate = SR

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x)

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


@pytest.fixture(scope="module")
def codec():
    return torch.jit.script(ConvCodec().eval())


def codec_card():
    return make_card(latent_size=LATENT, compression=RATIO, sample_rate=SR, name="codec")


def sine(freq: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def chirp(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * (100 + 2000 * t) * t)).astype(np.float32)


# -- controller ----------------------------------------------------------------------------

def test_controller_sends_exact_addresses_and_args(controller, receiver):
    controller.set_latent(0, 0.5)
    controller.set_latents([1, -1.5, 0.25, 3])
    controller.set_scale(3, 2)
    controller.set_scales([1.0, 0.5, 0.0, -1.0])
    controller.set_attr("temperature", 0.25)
    controller.set_attr("reset", True)
    controller.set_attr("reset", "false")
    controller.set_gain(1)
    controller.reset()
    controller.set_latent(np.int64(1), np.float32(-0.75))
    got = receiver.take(10)
    p = "/tildekit/tiny"
    assert got == [
        (f"{p}/latent/0", (0.5,)),
        (f"{p}/latent/bias", (1.0, -1.5, 0.25, 3.0)),
        (f"{p}/latent/3/scale", (2.0,)),
        (f"{p}/latent/scale", (1.0, 0.5, 0.0, -1.0)),
        (f"{p}/attr/temperature", (0.25,)),
        (f"{p}/attr/reset", ("true",)),
        (f"{p}/attr/reset", ("false",)),
        (f"{p}/gain", (1.0,)),
        (f"{p}/reset", ()),
        (f"{p}/latent/1", (-0.75,)),
    ]
    # integers typed by a user still go out as OSC floats
    assert isinstance(got[7][1][0], float) and isinstance(got[2][1][0], float)


@pytest.mark.parametrize("call, reason", [
    (lambda c: c.set_latent(4, 0.0), "latent index must be 0..3"),
    (lambda c: c.set_latents([1.0, 2.0]), "expects 4 number"),
    (lambda c: c.set_scale(0, 100.0), "outside"),
    (lambda c: c.set_gain(-1), "outside"),
    (lambda c: c.set_gain(float("nan")), "expects a finite number"),
    (lambda c: c.set_attr("temperature", "hot"), "expects a number"),
    (lambda c: c.set_attr("temperature", 11.0), "outside"),
    (lambda c: c.set_attr("nope", 1.0), "no attribute 'nope'"),
    (lambda c: c.set_attr("reset", 2), "true/false"),
    (lambda c: c.send("/elsewhere/gain", 1.0), "unknown address"),
])
def test_controller_rejects_bad_messages_before_sending(controller, receiver, call, reason):
    with pytest.raises(ControlError, match=reason):
        call(controller)
    controller.set_gain(0.5)  # the next thing on the wire is this, not the bad message
    assert receiver.take(1) == [("/tildekit/tiny/gain", (0.5,))]
    assert receiver.inbox.empty()


def test_control_error_is_a_user_error_and_an_osc_value_error():
    assert issubclass(ControlError, TildekitError) and issubclass(ControlError, OscValueError)


def test_controller_needs_a_card():
    with pytest.raises(TildekitError, match="for_model"):
        Controller()


def test_controller_for_model_reads_the_card_from_an_exported_file(tmp_path, codec, receiver):
    path = tmp_path / "codec.ts"
    torch.jit.save(codec, str(path), _extra_files=card_extra_files(codec_card()))
    with Controller.for_model(path, port=receiver.port) as ctl:
        assert ctl.map.prefix == "/tildekit/codec"
        ctl.send("latent/2", 1.25)  # relative addresses are resolved against the model's prefix
    assert receiver.take(1) == [("/tildekit/codec/latent/2", (1.25,))]
    with pytest.raises(TildekitError, match="not found"):
        Controller.for_model(tmp_path / "missing.ts")


# -- shapes ------------------------------------------------------------------------------

@pytest.mark.parametrize("curve", sorted(CURVES))
@pytest.mark.parametrize("start, end", [(0.0, 2.0), (1.5, -0.5)])
def test_ramps_hit_their_ends_and_are_monotonic(curve, start, end):
    times, values = ramp_values(start, end, 1.3, rate_hz=40, curve=curve)
    assert times[0] == 0.0 and times[-1] == 1.3
    assert np.allclose(np.diff(times), 1.3 / (len(times) - 1))
    assert values[0] == start and values[-1] == end
    steps = np.diff(values) * np.sign(end - start)
    assert np.all(steps >= -1e-12)
    assert len(times) == 53  # ceil(1.3 * 40) steps + the start


def test_vector_ramp_moves_every_component():
    times, values = ramp_values([0, 0, 1, 1], [1, 2, 0, 1], 0.5, rate_hz=10)
    assert values.shape == (6, 4)
    assert np.array_equal(values[0], [0, 0, 1, 1]) and np.array_equal(values[-1], [1, 2, 0, 1])


@pytest.mark.parametrize("shape", LFO_SHAPES)
def test_lfo_shapes_stay_within_center_plus_minus_depth(shape):
    times, values = lfo_values(shape, rate_hz=2.0, duration=3.0, depth=0.5, center=1.0, update_hz=100)
    assert len(times) == 301
    assert np.all(values >= 0.5 - 1e-9) and np.all(values <= 1.5 + 1e-9)
    assert values.max() - values.min() > 0.3  # it moves


def test_lfo_wave_details():
    _, sine_values = lfo_values("sine", 1.0, 1.0, update_hz=4)
    assert np.allclose(sine_values, [0, 1, 0, -1, 0], atol=1e-12)
    _, tri = lfo_values("tri", 1.0, 1.0, update_hz=8)
    assert np.allclose(tri, [0, 0.5, 1, 0.5, 0, -0.5, -1, -0.5, 0])
    _, square = lfo_values("square", 1.0, 2.0, update_hz=10)
    assert set(np.unique(square)) == {-1.0, 1.0}
    _, a = lfo_values("random-smooth", 2.0, 4.0, update_hz=200, seed=3)
    _, b = lfo_values("random-smooth", 2.0, 4.0, update_hz=200, seed=3)
    assert np.array_equal(a, b)  # seeded: a score plays the same every time
    assert np.abs(np.diff(a)).max() < 0.1  # smooth: no jumps


def test_unknown_curve_and_shape_are_named():
    with pytest.raises(TildekitError, match="unknown curve 'wobbly'"):
        ramp_values(0, 1, 1.0, curve="wobbly")
    with pytest.raises(TildekitError, match="unknown LFO shape 'saw'"):
        lfo_values("saw", 1.0, 1.0)


# -- scheduler -----------------------------------------------------------------------------

def test_scheduler_sends_at_absolute_times_in_order():
    clock = time.monotonic
    arrivals: list[tuple[float, str]] = []
    messages = [TimedMessage(0.01 * i, f"/m/{i}", ()) for i in range(30)][::-1]  # given out of order
    start = clock() + 0.02
    report = Scheduler().play(messages, lambda address, args: arrivals.append((clock(), address)), start=start)
    assert report.sent == 30 and not report.stopped
    assert [a for _, a in arrivals] == [f"/m/{i}" for i in range(30)]
    lateness = [t - (start + 0.01 * i) for i, (t, _) in enumerate(arrivals)]
    assert min(lateness) >= 0.0  # never early
    assert np.median(lateness) < 0.02 and report.median_lateness < 0.02  # generous: a correctness check
    assert len(report.lateness) == 30


def test_scheduler_does_not_drift_after_a_late_message():
    clock = time.monotonic
    arrivals = []

    def slow_send(address, args):
        arrivals.append(clock())
        if address == "/slow":
            time.sleep(0.15)  # this send overruns the next message's slot

    messages = [TimedMessage(0.0, "/slow", ()), TimedMessage(0.02, "/a", ()), TimedMessage(0.3, "/b", ())]
    start = clock()
    report = Scheduler().play(messages, slow_send, start=start)
    assert report.lateness[1] >= 0.1  # "/a" was late, and the report says so
    # "/b" still lands on its absolute time; a scheduler counting from the previous send would be
    # at 0.15 + 0.28 = 0.43 s
    assert 0.3 <= arrivals[2] - start < 0.38


def test_scheduler_stop_ends_a_performance_early():
    scheduler = Scheduler()
    sent = []
    timer = threading.Timer(0.1, scheduler.stop)
    timer.start()
    report = scheduler.play([TimedMessage(0, "/a", ()), TimedMessage(30, "/b", ())],
                            lambda address, args: sent.append(address))
    assert report.stopped and sent == ["/a"]


def test_controller_play_sends_a_ramp_on_time(controller, receiver):
    times, values = ramp_values(0.0, 1.0, 0.2, rate_hz=50)
    messages = [TimedMessage(float(t), "latent/1", (float(v),)) for t, v in zip(times, values)]
    report = controller.play(messages)
    got = receiver.take(len(messages))
    assert [a for a, _ in got] == ["/tildekit/tiny/latent/1"] * 11
    received = [args[0] for _, args in got]
    assert np.allclose(received, values, atol=1e-6) and received[-1] == 1.0
    assert report.median_lateness < 0.02


def test_controller_play_checks_everything_before_sending_anything(controller, receiver):
    messages = [TimedMessage(0.0, "latent/0", (0.5,)), TimedMessage(0.1, "latent/9", (0.5,))]
    with pytest.raises(ControlError, match="latent/9"):
        controller.play(messages)
    controller.reset()
    assert receiver.take(1) == [("/tildekit/tiny/reset", ())]


# -- scores --------------------------------------------------------------------------------

EXAMPLE_SCORE = """
latent_size: 4
name: tiny
rate_hz: 20
attributes:
  temperature: {types: [float], min: 0, max: 10}
events:
  - {at: 0, set: latent/0, value: 0.5}
  - {at: 1, ramp: latent/1, from: 0, to: 2, over: 0.5, curve: linear}
  - {at: 0, lfo: latent/2, shape: sine, rate_hz: 0.5, depth: 1, center: 0, over: 4}
  - {at: 3, attr: temperature, values: [0.5]}
  - {at: 4, gain: 0.8}
  - {at: 5, reset: true}
  - {at: 5, set: latent/bias, value: [1, 2, 3, 4]}
"""


def write(tmp_path: Path, text: str, name: str = "score.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_score_compiles_to_sorted_checked_messages(tmp_path):
    score = load_score(write(tmp_path, EXAMPLE_SCORE))
    assert [type(e).__name__ for e in score.events] == [
        "SetEvent", "RampEvent", "LfoEvent", "AttrEvent", "GainEvent", "ResetEvent", "SetEvent"]
    messages = compile_score(score)
    times = [m.time for m in messages]
    assert times == sorted(times)
    p = "/tildekit/tiny"
    assert messages[0] == TimedMessage(0.0, f"{p}/latent/0", (0.5,))
    ramp = [m for m in messages if m.address == f"{p}/latent/1"]
    assert len(ramp) == 11 and ramp[0].time == 1.0 and ramp[-1].time == 1.5 and ramp[-1].args == (2.0,)
    lfo = [m for m in messages if m.address == f"{p}/latent/2"]
    assert len(lfo) == 81 and lfo[-1].time == 4.0
    assert TimedMessage(3.0, f"{p}/attr/temperature", (0.5,)) in messages
    assert messages[-2:] == [TimedMessage(5.0, f"{p}/reset", ()),
                             TimedMessage(5.0, f"{p}/latent/bias", (1.0, 2.0, 3.0, 4.0))]
    assert score.duration == 5.0


@pytest.mark.parametrize("event, match", [
    ("{at: 0, set: latent/9, value: 1}", r"event 2 \(set at 0s\), field 'set': .*latent index must be 0..3"),
    ("{at: 0, gain: 40}", r"event 2 \(gain at 0s\), field 'gain': .*outside"),
    ("{at: 1, ramp: latent/0/scale, from: 0, to: 99, over: 1}", r"event 2 .*field 'to': .*outside"),
    ("{at: 1, ramp: latent/0/scale, from: -99, to: 0, over: 1}", r"event 2 .*field 'from': .*outside"),
    ("{at: 1, ramp: latent/0, from: 0, to: 1}", r"event 2 .*field 'over': missing"),
    ("{at: 1, ramp: latent/0, from: 0, to: 1, over: 1, curve: wobbly}", r"field 'curve': 'wobbly' is not one"),
    ("{at: 1, set: latent/0, value: 1, colour: red}", r"event 2 .*field 'colour': unknown field"),
    ("{at: 1, set: latent/0, gain: 1}", r"event 2 .*exactly one action"),
    ("{set: latent/0, value: 1}", r"event 2 .*field 'at': missing"),
    ("{at: -1, set: latent/0, value: 1}", r"field 'at': must be >= 0"),
    ("{at: 0, attr: colour, values: [1]}", r"event 2 .*field 'attr': .*no attribute 'colour'"),
    ("{at: 0, attr: temperature, values: [hot]}", r"event 2 .*field 'values': .*expects a number"),
    ("{at: 0, lfo: latent/0, shape: saw, rate_hz: 1, over: 1}", r"field 'shape'"),
    ("{at: 0, lfo: gain, rate_hz: 1, over: 1, depth: 1, center: 0}", r"field 'depth/center': .*outside"),
    ("{at: 0, reset: false}", r"field 'reset': write 'reset: true'"),
    ("{at: 0, interpolate: {from: a.wav, to: b.wav, over: 1}}", r"field 'interpolate.from': sound file"),
    ("just words", r"event 2 .*an event is a mapping"),
])
def test_score_errors_name_the_event_and_field(tmp_path, event, match):
    text = ("latent_size: 4\nattributes: {temperature: {types: [float], min: 0, max: 10}}\n"
            f"events:\n  - {{at: 0, set: latent/1, value: 0}}\n  - {event}\n")
    with pytest.raises(ScoreError, match=match) as info:
        compile_score(load_score(write(tmp_path, text)))
    assert str(info.value).startswith("score.yaml: ")


@pytest.mark.parametrize("text, match", [
    ("events: [{at: 0, gain: 1}]", "latent_size: N"),
    ("latent_size: 0\nevents: [{at: 0, gain: 1}]", "positive integer"),
    ("latent_size: 4\nevents: []", "non-empty list"),
    ("latent_size: 4\ntempo: 3\nevents: [{at: 0, gain: 1}]", "unknown top-level field 'tempo'"),
    ("latent_size: 4\nevents: [{at: 0, gain: 1}", "not valid YAML"),
    ("latent_size: 4\nrate_hz: 0\nevents: [{at: 0, gain: 1}]", "rate_hz"),
])
def test_score_top_level_errors(tmp_path, text, match):
    with pytest.raises(ScoreError, match=match):
        load_score(write(tmp_path, text))


def test_score_bare_list_with_a_card_passed_in(tiny_card):
    score = parse_score([{"at": 0.5, "set": "latent/3/scale", "value": 2}], card=tiny_card)
    assert compile_score(score) == [TimedMessage(0.5, "/tildekit/tiny/latent/3/scale", (2.0,))]


def write_sounds(tmp_path: Path) -> None:
    soundfile.write(tmp_path / "a.wav", sine(220, 0.1), SR, subtype="FLOAT")
    soundfile.write(tmp_path / "b.wav", chirp(0.15), SR, subtype="FLOAT")


def test_score_interpolation_uses_the_model(tmp_path, codec):
    write_sounds(tmp_path)
    model_path = tmp_path / "codec.ts"
    torch.jit.save(codec, str(model_path), _extra_files=card_extra_files(codec_card()))
    text = ("model: codec.ts\nrate_hz: 100\n"
            "events:\n  - {at: 1, interpolate: {from: a.wav, to: b.wav, over: 0.5, curve: equal-power}}\n")
    messages = compile_score(load_score(write(tmp_path, text)))
    assert len(messages) == 51 and messages[0].time == 1.0 and messages[-1].time == 1.5
    assert {m.address for m in messages} == {"/tildekit/codec/latent/bias"}
    za = encode_audio(codec, sine(220, 0.1))
    zb = encode_audio(codec, chirp(0.15))
    frames = int(0.5 * SR / RATIO) + 1
    assert np.allclose(messages[0].args, za[:, 0], atol=1e-5)
    assert np.allclose(messages[-1].args, zb[:, (frames - 1) % zb.shape[1]], atol=1e-5)


def test_score_interpolation_without_a_model_says_so(tmp_path):
    write_sounds(tmp_path)
    text = "latent_size: 4\nevents:\n  - {at: 0, interpolate: {from: a.wav, to: b.wav, over: 1}}\n"
    with pytest.raises(ScoreError, match="add 'model: PATH'"):
        compile_score(load_score(write(tmp_path, text)))


def test_play_score_over_udp(tmp_path, tiny_card, receiver):
    text = ("rate_hz: 50\nevents:\n  - {at: 0, set: latent/0, value: 0.5}\n"
            "  - {at: 0.05, ramp: gain, from: 1, to: 0, over: 0.1, curve: ease-out}\n"
            "  - {at: 0.2, reset: true}\n")
    score = load_score(write(tmp_path, text), card=tiny_card)
    expected = compile_score(score)
    with Controller(port=receiver.port, card=tiny_card) as ctl:
        report = play_score(score, ctl)
    got = receiver.take(len(expected))
    assert [a for a, _ in got] == [m.address for m in expected]
    assert np.allclose([x for _, args in got for x in args], [x for m in expected for x in m.args], atol=1e-6)
    assert got[-2] == ("/tildekit/tiny/gain", (0.0,)) and report.sent == len(expected)


# -- interpolation ---------------------------------------------------------------------------

def test_interpolation_endpoints_and_looping():
    rng = np.random.default_rng(0)
    za, zb = rng.normal(size=(3, 5)), rng.normal(size=(3, 12))
    for curve in ("linear", "equal-power", "smoothstep"):
        path = interpolate_latents(za, zb, curve=curve)
        assert path.shape == (3, 12)
        assert np.array_equal(path[:, 0], za[:, 0])  # exactly A at t = 0
        assert np.array_equal(path[:, -1], zb[:, -1])  # exactly B at the end
    # the shorter trajectory loops: with B weighted out, frame 7 reads A's frame 7 % 5
    wa, wb = crossfade_weights(np.array([7 / 11]), "linear")
    assert np.allclose(interpolate_latents(za, zb)[:, 7], wa * za[:, 2] + wb * zb[:, 7])
    # longer than both: both loop
    assert np.array_equal(interpolate_latents(za, zb, frames=30)[:, -1], zb[:, 29 % 12])


def test_equal_power_keeps_power_and_linear_sums_to_one():
    u = np.linspace(0, 1, 11)
    wa, wb = crossfade_weights(u, "equal-power")
    assert np.allclose(wa ** 2 + wb ** 2, 1.0)
    wa, wb = crossfade_weights(u, "linear")
    assert np.allclose(wa + wb, 1.0)
    with pytest.raises(TildekitError, match="latent sizes differ"):
        interpolate_latents(np.zeros((3, 4)), np.zeros((2, 4)))


def test_encode_decode_with_a_scripted_model(codec):
    z = encode_audio(codec, sine(440, 0.1)[:1597])  # padded to a whole frame
    assert z.shape == (LATENT, 200)
    audio = decode_latents(codec, z)
    assert audio.shape == (1, 200 * RATIO)


@pytest.mark.parametrize("curve", ["linear", "equal-power", "smoothstep"])
def test_render_interpolation_length_and_endpoints(codec, curve):
    a, b = sine(220, 0.1), chirp(0.13)
    out = render_interpolation(codec, a, b, 0.3, curve)
    assert out.shape == (1, round(0.3 * SR)) and np.isfinite(out).all()
    za, zb = encode_audio(codec, a), encode_audio(codec, b)
    frames = int(np.ceil(0.3 * SR / RATIO))
    # the decoder is frame-local (kernel == stride), so the first/last frames decode A's/B's exactly
    assert np.allclose(out[:, :RATIO], decode_latents(codec, za[:, :1]), atol=1e-5)
    last = decode_latents(codec, zb[:, [(frames - 1) % zb.shape[1]]])
    assert np.allclose(out[:, (frames - 1) * RATIO:], last[:, : out.shape[1] - (frames - 1) * RATIO], atol=1e-5)
    with pytest.raises(TildekitError, match="positive number of seconds"):
        render_interpolation(codec, a, b, 0.0)


def test_interpolation_messages_run_at_the_update_rate():
    za, zb = np.zeros((2, 3)), np.ones((2, 4))
    messages = interpolation_messages("/x", za, zb, seconds=1.0, rate_hz=10, frame_rate=25.0)
    assert [round(m.time, 6) for m in messages] == [round(0.1 * i, 6) for i in range(11)]
    assert messages[0].args == (0.0, 0.0) and messages[-1].args == (1.0, 1.0)
    firsts = [m.args[0] for m in messages]
    assert firsts == sorted(firsts)


def test_send_interpolation_over_udp(receiver, codec):
    card = codec_card()
    za, zb = encode_audio(codec, sine(220, 0.05)), encode_audio(codec, chirp(0.08))
    with Controller(port=receiver.port, card=card) as ctl:
        report = send_interpolation(ctl, za, zb, seconds=0.2, rate=100, curve="smoothstep")
    got = receiver.take(report.sent)
    assert report.sent == 21 and {a for a, _ in got} == {"/tildekit/codec/latent/bias"}
    frames = int(0.2 * SR / RATIO) + 1
    assert np.allclose(got[0][1], za[:, 0], atol=1e-5)
    assert np.allclose(got[-1][1], zb[:, (frames - 1) % zb.shape[1]], atol=1e-5)


# -- monitor and CLI ------------------------------------------------------------------------

def test_monitor_records_and_prints_messages(tiny_card):
    lines = []
    with Monitor(port=0, on_message=lines.append) as monitor:
        port = monitor.address[1]
        with Controller(port=port, card=tiny_card) as ctl:
            ctl.set_latent(2, 0.5)
            ctl.reset()
        received = monitor.run(count=2, seconds=5)
    assert [(m.address, m.args) for m in received] == [("/tildekit/tiny/latent/2", (0.5,)),
                                                       ("/tildekit/tiny/reset", ())]
    assert lines[0].endswith("/tildekit/tiny/latent/2 0.5") and lines[1].endswith("/tildekit/tiny/reset")


def test_monitor_stops_after_seconds_with_nothing_received():
    with Monitor(port=0, on_message=None) as monitor:
        assert monitor.run(seconds=0.1) == []


def test_cli_send_reaches_a_server(receiver):
    runner = CliRunner()
    result = runner.invoke(main, ["osc", "send", "/tildekit/tiny/latent/0", "-0.5", "--port", str(receiver.port)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["osc", "send", "/any/thing", "true", "word", "3", "--port", str(receiver.port)])
    assert result.exit_code == 0, result.output
    assert receiver.take(2) == [("/tildekit/tiny/latent/0", (-0.5,)), ("/any/thing", (True, "word", 3.0))]


def test_cli_send_with_model_checks_and_resolves(tmp_path, receiver, codec):
    path = tmp_path / "codec.ts"
    torch.jit.save(codec, str(path), _extra_files=card_extra_files(codec_card()))
    runner = CliRunner()
    ok = runner.invoke(main, ["osc", "send", "latent/1/scale", "2", "--model", str(path),
                              "--port", str(receiver.port)])
    assert ok.exit_code == 0, ok.output
    assert receiver.take(1) == [("/tildekit/codec/latent/1/scale", (2.0,))]
    bad = runner.invoke(main, ["osc", "send", "latent/7", "2", "--model", str(path), "--port", str(receiver.port)])
    assert bad.exit_code == 2 and "latent index must be 0..3" in bad.output
    relative = runner.invoke(main, ["osc", "send", "gain", "1"])
    assert relative.exit_code == 2 and "must start with '/'" in relative.output


def test_cli_monitor_subprocess_prints_what_arrives(tiny_card):
    proc = subprocess.Popen([sys.executable, "-m", "tildekit", "osc", "monitor", "--port", "0", "--count", "2",
                             "--seconds", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        first = proc.stderr.readline()
        assert first.startswith("listening on 127.0.0.1:"), first
        port = int(first.rsplit(":", 1)[1])
        with Controller(port=port, card=tiny_card) as ctl:
            ctl.set_attr("temperature", 0.5)
            ctl.set_gain(0.25)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].endswith("/tildekit/tiny/attr/temperature 0.5")
    assert lines[1].endswith("/tildekit/tiny/gain 0.25")
    assert "2 message(s)" in err


def test_cli_play_dry_run_and_errors(tmp_path):
    path = write(tmp_path, EXAMPLE_SCORE)
    runner = CliRunner()
    result = runner.invoke(main, ["osc", "play", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "0.000  /tildekit/tiny/latent/0 0.5" in result.output
    assert "5.000  /tildekit/tiny/latent/bias 1 2 3 4" in result.output
    bad = write(tmp_path, EXAMPLE_SCORE.replace("gain: 0.8", "gain: 99"), "bad.yaml")
    result = runner.invoke(main, ["osc", "play", str(bad), "--dry-run"])
    assert result.exit_code == 2
    assert "bad.yaml: event 5 (gain at 4s), field 'gain'" in result.output
    assert "Traceback" not in result.output


def test_cli_play_sends_the_score(tmp_path, receiver):
    text = "latent_size: 2\nname: duo\nevents:\n  - {at: 0, set: latent/1, value: 0.25}\n  - {at: 0.05, gain: 0.5}\n"
    result = CliRunner().invoke(main, ["osc", "play", str(write(tmp_path, text)), "--port", str(receiver.port)])
    assert result.exit_code == 0, result.output
    assert receiver.take(2) == [("/tildekit/duo/latent/1", (0.25,)), ("/tildekit/duo/gain", (0.5,))]
    assert "sent 2 messages" in result.output


def test_score_yaml_in_docs_is_valid(tmp_path):
    """The example score in docs/osc.md parses and compiles."""
    docs = Path(__file__).resolve().parents[1] / "docs" / "osc.md"
    text = docs.read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    data = yaml.safe_load(block)
    data.pop("model", None)
    data["latent_size"] = 8
    data["attributes"] = {"temperature": {"types": ["float"], "min": 0, "max": 10}}
    data["events"] = [e for e in data["events"] if "interpolate" not in e]
    assert compile_score(parse_score(data))

"""Hostile input on the live side: OSC fuzz and floods over real UDP, models that blow up or fail,
hostile scores, allow-lists (IPv4 and IPv6), `serve` mistakes, hostile training settings.

Every test waits on events (a datagram handled, a buffer reached), never on sleeps, and closes
every engine, socket and process it starts. Live output is always finite and under the ceiling.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonosc.osc_message_builder import OscMessageBuilder

from tests.conftest import make_card
from tests.test_engine import BUFFER, RATE, model_ts, models, osc, signal  # noqa: F401 (fixtures)
from tildekit.cli import main
from tildekit.errors import TildekitError
from tildekit.export.card_io import card_extra_files
from tildekit.models.contract.oscmap import (
    BIAS_RANGE,
    GAIN_RANGE,
    SCALE_RANGE,
    BadValueError,
    OscMap,
    UnknownAddressError,
    attribute_range,
)
from tildekit.scripting.audio_files import AtomicOutput
from tildekit.scripting.engine import LOG_INTERVAL, Engine, RateLimitedLog
from tildekit.scripting.monitor import Monitor
from tildekit.scripting.netaccess import AllowList
from tildekit.scripting.oscwire import MalformedPacket, decode
from tildekit.scripting.runner import open_runner
from tildekit.scripting.safety import SafetyStage
from tildekit.scripting.schedule import MAX_RATE_HZ, MAX_SECONDS, MAX_UPDATES, lfo_values, ramp_values
from tildekit.scripting.score import ScoreError, compile_score, load_score

pytestmark = pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning")

CEILING = 10 ** (-1 / 20)  # the default -1 dBFS
PREFIX = "/tildekit/tiny"


# -- helpers: counting arrivals, sending, hostile models -------------------------------------------

class Arrivals:
    """Counts datagrams the engine has handled; ``wait(n)`` blocks until n of them were."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.count = 0

    def __call__(self) -> None:
        with self._condition:
            self.count += 1
            self._condition.notify_all()

    def wait(self, count: int, timeout: float = 60.0) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: self.count >= count, timeout)


def engine_on(model: Path, host: str = "127.0.0.1", **kwargs) -> tuple[Engine, Arrivals]:
    arrivals = Arrivals()
    kwargs.setdefault("buffer", BUFFER)
    return Engine(open_runner(model), host, 0, on_packet=arrivals, **kwargs), arrivals


def send_all(engine: Engine, arrivals: Arrivals, datagrams: list[bytes], family: int = socket.AF_INET,
             source: str | None = None) -> None:
    """Send in lock-step (each datagram handled before the next leaves): none lost, all counted."""
    with socket.socket(family, socket.SOCK_DGRAM) as sender:
        if source is not None:
            sender.bind((source, 0))
        for data in datagrams:
            expected = arrivals.count + 1
            sender.sendto(data, engine.osc_address)
            assert arrivals.wait(expected), f"datagram {expected} never handled"


def message(address: str, *typed: tuple[str, object]) -> bytes:
    """An OSC message with explicit type tags (python-osc's builder picks them from Python types)."""
    builder = OscMessageBuilder(address)
    for tag, value in typed:
        builder.add_arg(value, tag)
    return builder.build().dgram


def nested_bundle(depth: int, inner: bytes) -> bytes:
    data = inner
    for _ in range(depth):
        data = b"#bundle\0" + b"\0" * 7 + b"\1" + len(data).to_bytes(4, "big") + data
    return data


def assert_safe(audio: np.ndarray, ceiling: float = CEILING) -> None:
    assert np.isfinite(audio).all(), "non-finite audio left the engine"
    assert np.abs(audio).max() <= ceiling, f"peak {np.abs(audio).max()} above the ceiling {ceiling}"


class Hostile(torch.nn.Module):
    """An nn~-shaped TorchScript model that misbehaves on purpose, driven by its input.

    mode "nan": input samples above 0.9 make its state non-finite (output NaN until a reset);
    mode "loud": output = input x 1000; mode "raise": forward raises on any non-silent input;
    mode "broken": forward always raises (even on silence); mode "shape": returns half a buffer.
    ``resets`` counts reset_state() calls.
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.resets = 0
        self.poisoned = False
        self.register_buffer("encode_params", torch.tensor([1, 1, 4, 128]))
        self.register_buffer("decode_params", torch.tensor([4, 128, 1, 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "broken":
            raise RuntimeError("this model is broken")
        if self.mode == "raise" and bool(x.abs().max() > 0):
            raise RuntimeError("shape mismatch in conv1d: (hostile)")
        if self.mode == "shape":
            return x[..., : x.shape[-1] // 2]
        if self.mode == "loud":
            return x * 1000.0
        if bool(x.max() > 0.9):
            self.poisoned = True
        if self.poisoned:
            return x * float("nan")
        return x * 0.5

    @torch.jit.export
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 4, x.shape[-1] // 128)

    @torch.jit.export
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.zeros(z.shape[0], 1, z.shape[-1] * 128)

    @torch.jit.export
    def reset_state(self) -> None:
        self.resets += 1
        self.poisoned = False


def hostile_model(folder: Path, mode: str) -> Path:
    card = dataclasses.replace(make_card(latent_size=4, compression=128, sample_rate=RATE, name="tiny"),
                               attributes=[])  # no setters: nothing to set
    path = folder / f"hostile-{mode}.ts"
    torch.jit.save(torch.jit.script(Hostile(mode)), str(path), _extra_files=card_extra_files(card))
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    for mode in ("nan", "loud", "raise", "broken", "shape"):
        hostile_model(folder, mode)
    return folder


def folder_snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- OSC fuzz against a running engine -----------------------------------------------------------

def hostile_datagrams(latent: int = 4) -> dict[str, list[bytes]]:
    """Datagrams by the counter they must land in."""
    rng = np.random.default_rng(11)
    random_bytes = []
    for _ in range(200):
        data = rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes()
        random_bytes.append(b"x" + data[1:] if data[:1] in (b"/", b"#") else data)
    gain = osc(f"{PREFIX}/gain", 0.5)
    malformed = random_bytes + [
        gain[:20] + b",fx\0" + gain[-4:] + b"\0" * 4,  # a tag python-osc would skip and misread
        gain[:20] + b",S\0\0" + b"ab\0\0",  # 'S' (symbol): python-osc does not read it
        gain[:20] + b",[[[" + b"[" * 12 + b"\0\0\0\0",  # arrays nested too deep
        gain[:20] + b",]\0\0",
        nested_bundle(9, gain),  # bundles nested too deep
        b"/\xff\xfe\0,f\0\0" + gain[-4:],  # address not UTF-8
        b"#bundle\0" + b"\0" * 8 + b"\x7f\xff\xff\xf0",  # element size beyond the packet
    ]
    huge_vector = [("f", 1e30)] * latent
    bad_value = [
        message(f"{PREFIX}/attr/latent_scale", *huge_vector),
        message(f"{PREFIX}/attr/latent_bias", *[("f", 3e38)] * latent),
        message(f"{PREFIX}/attr/latent_bias", *[("d", float("nan"))] * latent),
        message(f"{PREFIX}/latent/bias", *[("d", 1e300)] * latent),
        message(f"{PREFIX}/latent/scale", *[("f", float("inf"))] * latent),
        message(f"{PREFIX}/latent/0", ("f", float("nan"))),
        message(f"{PREFIX}/latent/1", ("d", float("-inf"))),
        message(f"{PREFIX}/latent/2/scale", ("h", 2 ** 62)),
        message(f"{PREFIX}/latent/3", ("i", 2 ** 31 - 1)),
        message(f"{PREFIX}/gain", ("f", 1e9)),
        message(f"{PREFIX}/gain", ("s", "loud")),
        message(f"{PREFIX}/gain", ("T", True)),
        message(f"{PREFIX}/gain", ("N", None)),
        message(f"{PREFIX}/gain", ("b", b"\0" * 64)),
        osc(f"{PREFIX}/gain", [1.0]),  # an OSC array
        message(f"{PREFIX}/attr/temperature", ("d", 1e20)),
        message(f"{PREFIX}/attr/temperature", ("s", "x" * 4000)),
        message(f"{PREFIX}/attr/reset", ("i", 7)),
        message(f"{PREFIX}/latent/bias", *[("f", 0.0)] * (latent + 1)),
    ]
    unknown = [
        message("/" + "a" * 60000),
        message(f"{PREFIX}/latent/{'9' * 5000}", ("f", 0.0)),
        message(f"{PREFIX}/latent/\u0663", ("f", 0.0)),  # an Arabic-Indic digit is not an index
        message(f"{PREFIX}/latent/4", ("f", 0.0)),
        message(f"{PREFIX}/attr/../../gain", ("f", 1.0)),
        message(f"{PREFIX}/attr/{'q' * 3000}", ("f", 1.0)),
    ]
    return {"malformed": malformed, "bad_value": bad_value, "unknown_address": unknown}


@pytest.mark.parametrize("model_file", ["tiny.ts", "tiny.onnx"])
def test_osc_fuzz_over_udp_is_counted_and_output_stays_safe(models, model_file):
    """Every kind of hostile datagram, sent while the engine streams: each lands in its counter,
    nothing reaches the model, the output is what it is without the garbage."""
    packets = hostile_datagrams()
    order = [(kind, data) for kind in packets for data in packets[kind]]
    batches = [order[i::8] for i in range(8)]  # one batch before each of the first 8 buffers
    audio = signal(1.5)

    def on_buffer(index: int) -> None:
        if index < len(batches):
            send_all(engine, arrivals, [data for _, data in batches[index]])

    engine, arrivals = engine_on(models / model_file, on_buffer=on_buffer)
    with engine:
        out = engine.run_array(audio)
    clean, _ = engine_on(models / model_file)
    with clean:
        reference = clean.run_array(audio)
    stats = engine.stats
    assert stats.packets == len(order) == arrivals.count
    assert stats.malformed == len(packets["malformed"])
    assert stats.bad_value == len(packets["bad_value"])
    assert stats.unknown_address == len(packets["unknown_address"])
    assert stats.applied == 0 and stats.refused == 0 and stats.buffers == -(-audio.shape[1] // BUFFER)
    assert_safe(out)
    assert np.array_equal(out, reference)  # the garbage changed nothing


def test_deep_but_allowed_bundles_are_read(model_ts):
    engine, arrivals = engine_on(model_ts)
    with engine:
        send_all(engine, arrivals, [nested_bundle(7, osc(f"{PREFIX}/gain", 0.25))])
        engine.run_array(signal(0.1))
    assert engine.stats.malformed == 0 and engine.gain == 0.25


@pytest.mark.parametrize("model_file", ["tiny.ts", "tiny.onnx"])
def test_flood_of_loudest_allowed_values_is_held_under_the_ceiling(models, model_file):
    """Every control at the top of its range (bias 1000, scale 16, gain 16): the model gets loud,
    the limiter holds every sample under -1 dBFS, the log and the stats say so."""
    loud = [osc(f"{PREFIX}/latent/bias", *[BIAS_RANGE[1]] * 4), osc(f"{PREFIX}/latent/scale", *[SCALE_RANGE[1]] * 4),
            osc(f"{PREFIX}/gain", GAIN_RANGE[1])] * 300
    loud += [osc(f"{PREFIX}/latent/{i % 4}", BIAS_RANGE[0] if i % 2 else BIAS_RANGE[1]) for i in range(600)]

    def on_buffer(index: int) -> None:
        if index == 1:
            send_all(engine, arrivals, loud)

    engine, arrivals = engine_on(models / model_file, on_buffer=on_buffer)
    with engine:
        out = engine.run_array(signal(1.5))
    stats = engine.stats
    assert stats.received == len(loud) and stats.applied + stats.dropped == len(loud)
    assert engine.queue.high_water <= 7  # one pending Control per target, whatever the flood
    assert stats.limited > 0 and stats.max_peak > 10 * CEILING and stats.silenced == 0
    assert_safe(out)
    assert np.abs(out[:, 2 * BUFFER:]).max() > 0.5 * CEILING  # loud, not muted
    assert "limited" in engine.summary() and "loudest +" in engine.summary()


@pytest.mark.parametrize("model_file", ["tiny.ts", "tiny.onnx"])
def test_non_finite_model_output_is_silenced_and_the_model_reset(models, model_file, caplog):
    """A huge (finite) input drives the real model to NaN: that buffer is silence, the model is
    reset, and the next buffers sound again (without the reset its state would stay NaN)."""
    audio = signal(1.0)
    audio[:, 3 * BUFFER:4 * BUFFER] = 3e38
    engine, _ = engine_on(models / model_file)
    with engine, caplog.at_level("WARNING", logger="tildekit.engine"):
        out = engine.run_array(audio)
    assert_safe(out)
    assert engine.stats.silenced >= 1
    assert not out[:, 3 * BUFFER:4 * BUFFER].any()
    assert np.abs(out[:, 6 * BUFFER:]).max() > 0.01  # sound is back after the reset
    assert any("non-finite output" in r.getMessage() and "model state reset" in r.getMessage()
               for r in caplog.records)
    assert "silenced (non-finite output)" in engine.summary()


def test_non_finite_input_samples_are_zeroed_before_the_model(model_ts):
    audio = signal(0.5)
    audio[0, 100:110] = np.nan
    audio[0, 200] = np.inf
    engine, _ = engine_on(model_ts)
    with engine:
        out = engine.run_array(audio)
    assert_safe(out)
    assert engine.stats.bad_input == 11 and engine.stats.silenced == 0


def test_hostile_models_are_made_safe_and_reset(hostile, caplog):
    audio = 0.5 * signal(1.0) / np.abs(signal(1.0)).max()
    audio[:, 2 * BUFFER + 5] = 0.95  # poisons the "nan" model's state from buffer 2 on
    engine, _ = engine_on(hostile / "hostile-nan.ts")
    with engine, caplog.at_level("WARNING", logger="tildekit.engine"):
        out = engine.run_array(audio)
        resets = engine.runner.model.resets
    assert_safe(out)
    assert not out[:, 2 * BUFFER:3 * BUFFER].any() and engine.stats.silenced == 1
    assert resets == 2  # one after the warm-up, one after the NaN buffer
    np.testing.assert_allclose(out[:, 3 * BUFFER:], 0.5 * audio[:, 3 * BUFFER:], rtol=1e-6)

    loud, _ = engine_on(hostile / "hostile-loud.ts", ceiling_db=-6.0)
    with loud:
        out = loud.run_array(audio)
    assert_safe(out, 10 ** (-6 / 20))
    assert loud.stats.limited == loud.stats.buffers and loud.stats.max_peak > 400


def test_safety_log_is_rate_limited(hostile, caplog):
    engine, _ = engine_on(hostile / "hostile-loud.ts")
    with engine, caplog.at_level("WARNING", logger="tildekit.engine"):
        began = time.monotonic()
        engine.run_array(signal(3.0))
        elapsed = time.monotonic() - began
    lines = [r for r in caplog.records if "limiter" in r.getMessage()]
    assert engine.stats.limited == engine.stats.buffers > 40
    assert 5 <= len(lines) <= 5 + 1 + elapsed / LOG_INTERVAL  # the first five, then one line per interval


def test_rate_limited_log_sums_up_once_per_interval(caplog):
    now = [0.0]
    problems = RateLimitedLog("OSC ", clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="tildekit.engine"):
        for second in range(100):
            now[0] = float(second)
            for _ in range(50):
                problems("bad value", f"at {second}")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5 + 9 and problems.seen["bad value"] == 5000  # at 10, 20, ... 90 s
    assert lines[5] == "OSC bad value: 496 more in the last 10 s (501 in all); latest: at 10"


# -- a model that fails -------------------------------------------------------------------------------

def test_failing_forward_stops_the_file_run_at_its_first_buffer(hostile, tmp_path):
    engine, _ = engine_on(hostile / "hostile-raise.ts")
    with engine, pytest.raises(TildekitError, match=r"failed at buffer 0 \(.*shape mismatch"):
        engine.run_file(_wav(tmp_path, signal(3.0)), tmp_path / "out.wav")
    assert engine.stats.buffers == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]  # no output, no temporary file


def test_failing_forward_live_plays_silence_then_gives_up(hostile):
    """On a sound card a failing buffer is silence (and a reset); a model that never recovers stops."""
    engine, _ = engine_on(hostile / "hostile-raise.ts")
    engine.tolerate_model_errors = True
    with engine:
        blocks = [np.full((1, BUFFER), 0.1, np.float32)] * 40
        outputs = []
        with pytest.raises(TildekitError, match="failed at buffer 15"):
            for out in engine.stream(blocks):
                outputs.append(out)
    assert len(outputs) == 15 and not np.concatenate(outputs, axis=1).any()
    assert engine.stats.model_errors == 16


def _wav(folder: Path, audio: np.ndarray, name: str = "in.wav") -> Path:
    path = folder / name
    soundfile.write(path, audio[0], RATE, subtype="FLOAT")
    return path


# -- `tildekit serve` mistakes: one line, exit 2, no output, detected up front ---------------------------

def serve(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["serve", *args, "--osc-port", "0", "--buffer", str(BUFFER)])
    return result.exit_code, result.output


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write in: chmod for a user; root writes anywhere but in /sys."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize("case", ["extension", "no extension", "folder is a file", "output is a folder",
                                  "read-only", "unreadable input", "input is a folder", "forward fails",
                                  "broken model", "wrong shape"])
def test_serve_mistakes_are_one_line_with_no_output(models, hostile, tmp_path, case):
    work = tmp_path / "work"
    work.mkdir()
    good_input = _wav(work, signal(1.0))
    (work / "a-file").write_text("not a folder")
    garbage = work / "garbage.wav"
    garbage.write_bytes(b"RIFF" + os.urandom(200))
    model, source, target = str(models / "tiny.ts"), str(good_input), str(work / "out.wav")
    expected = {
        "extension": ("extension '.mp4' is not a sound file type", {"target": str(work / "out.mp4")}),
        "no extension": ("no extension is not a sound file type", {"target": str(work / "out")}),
        "folder is a file": ("a-file is a file, not a folder", {"target": str(work / "a-file" / "out.wav")}),
        "output is a folder": ("is a folder; give a file name", {"target": str(work)}),
        "read-only": ("cannot write in", {"target": str(read_only_folder(tmp_path) / "out.wav")}),
        "unreadable input": ("not a readable sound file", {"source": str(garbage)}),
        "input is a folder": ("is a folder, not a sound file", {"source": str(work)}),
        "forward fails": ("failed at buffer 0", {"model": str(hostile / "hostile-raise.ts")}),
        "broken model": ("fails on a silent buffer", {"model": str(hostile / "hostile-broken.ts")}),
        "wrong shape": ("returned shape (1, 512), expected (1, 1024)", {"model": str(hostile / "hostile-shape.ts")}),
    }[case]
    text, change = expected
    model, source, target = change.get("model", model), change.get("source", source), change.get("target", target)
    before = folder_snapshot(work)
    code, output = serve(model, "--input", source, "--output", target)
    assert code == 2, output
    lines = output.splitlines()
    assert lines[-1].startswith("Error: ") and text in lines[-1] and "Traceback" not in output, output
    # mistakes in the command line are found before the engine starts; a model's, at its first buffer
    assert len(lines) == (2 if case in ("forward fails", "broken model", "wrong shape") else 1), output
    assert folder_snapshot(work) == before  # no output, no temporary file, nothing else touched


def test_serve_checks_the_output_before_loading_the_model(tmp_path):
    """A bad output is reported even when the model file is garbage: it is checked first."""
    model = tmp_path / "garbage.ts"
    model.write_bytes(b"PK\3\4" + b"\0" * 100)
    wav = _wav(tmp_path, signal(0.2))
    code, output = serve(str(model), "--input", str(wav), "--output", str(tmp_path / "out.xyz"))
    assert code == 2 and "out.xyz: extension '.xyz'" in output


def test_serve_ceiling_is_bounded_and_applied(hostile, tmp_path):
    wav = _wav(tmp_path, 0.5 * signal(0.5))
    code, output = serve(str(hostile / "hostile-loud.ts"), "--input", str(wav), "--output",
                         str(tmp_path / "o.wav"), "--ceiling-db", "6")
    assert code == 2 and "--ceiling-db 6.0: the output ceiling must be between -40 and 0 dBFS" in output
    code, output = serve(str(hostile / "hostile-loud.ts"), "--input", str(wav), "--output",
                         str(tmp_path / "o.flac"), "--ceiling-db", "-12")
    assert code == 0, output
    audio, _ = soundfile.read(tmp_path / "o.flac", dtype="float32")
    assert np.abs(audio).max() <= 10 ** (-12 / 20) * (1 + 2 ** -20)  # FLAC's 24-bit rounding
    assert "limited" in output


def test_atomic_output_reserves_then_commits_or_leaves_nothing(tmp_path):
    with AtomicOutput(tmp_path / "sub" / "x.wav") as out:
        assert out.temporary is not None and out.temporary.parent == tmp_path / "sub"
    assert list((tmp_path / "sub").iterdir()) == []
    with AtomicOutput(tmp_path / "x.ogg") as out:
        path = out.commit(0.1 * signal(0.2), RATE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub", "x.ogg"] and path.stat().st_size > 0


# -- allow-lists, IPv4 and IPv6 ------------------------------------------------------------------------

def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback on this machine")


def test_allow_list_ipv4_networks(model_ts):
    engine, arrivals = engine_on(model_ts, allow=["127.0.0.2/31", "10.1.2.3"])
    with engine:
        send_all(engine, arrivals, [osc(f"{PREFIX}/gain", 0.1)] * 3, source="127.0.0.1")
        send_all(engine, arrivals, [osc(f"{PREFIX}/gain", 0.75)], source="127.0.0.3")
        engine.run_array(signal(0.1))
    assert engine.stats.rejected_sender == 3 and engine.stats.received == 1 and engine.gain == 0.75


@needs_ipv6
def test_allow_list_ipv6_engine_on_ipv6_loopback(model_ts):
    engine, arrivals = engine_on(model_ts, host="::1", allow=["::1"])
    with engine:
        assert engine.osc_address[0] == "::1"
        send_all(engine, arrivals, [osc(f"{PREFIX}/gain", 0.5)], family=socket.AF_INET6)
        engine.run_array(signal(0.1))
    assert engine.stats.received == 1 and engine.gain == 0.5

    engine, arrivals = engine_on(model_ts, host="::1", allow=["fd00::/8"])
    with engine:
        send_all(engine, arrivals, [osc(f"{PREFIX}/gain", 0.5)] * 2, family=socket.AF_INET6)
    assert engine.stats.rejected_sender == 2 and engine.stats.received == 0


@needs_ipv6
def test_dual_stack_engine_applies_an_ipv4_allow_list_to_mapped_senders(model_ts):
    """Bound to '::', IPv4 senders arrive as ::ffff:a.b.c.d and are matched as IPv4."""
    engine, arrivals = engine_on(model_ts, host="::", allow=["127.0.0.1"])
    with engine:
        port = engine.osc_address[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4, \
                socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as v6:
            v4.sendto(osc(f"{PREFIX}/gain", 0.3), ("127.0.0.1", port))
            assert arrivals.wait(1)
            v6.sendto(osc(f"{PREFIX}/gain", 0.9), ("::1", port))
            assert arrivals.wait(2)
        engine.run_array(signal(0.1))
    assert engine.stats.received == 1 and engine.stats.rejected_sender == 1 and engine.gain == pytest.approx(0.3)


@needs_ipv6
def test_monitor_listens_on_ipv6_with_an_allow_list():
    lines: list[str] = []
    with Monitor("::1", 0, on_message=lines.append, allow=["::1"]) as monitor, \
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sender:
        sender.sendto(osc("/x", 1.0), monitor.address)
        assert [m.address for m in monitor.run(count=1, seconds=30)] == ["/x"]
    with Monitor("::1", 0, on_message=lines.append, allow=["10.0.0.0/8"]) as monitor, \
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sender:
        sender.sendto(osc("/x", 1.0), monitor.address)
        sender.sendto(b"not osc", monitor.address)
        while monitor.rejected < 2:
            monitor.run(count=1, seconds=1)  # returns when the datagrams were handled, or after 1 s
    assert monitor.rejected == 2 and monitor.received == []


def test_allow_list_parsing():
    allow = AllowList.parse(["192.168.1.0/24, 10.0.0.5", "fd00::/8", "::ffff:172.16.0.1"])
    assert allow.allows("192.168.1.77") and allow.allows("10.0.0.5") and not allow.allows("10.0.0.6")
    assert allow.allows("fd12::3") and allow.allows("::ffff:192.168.1.2") and allow.allows("172.16.0.1")
    assert not allow.allows("fe80::1%eth0") and not allow.allows("not an address")
    assert AllowList.parse([]) is None and AllowList.parse(None) is None
    for bad in ("300.1.2.3/8", "no-such-host.invalid", "a" * 300):
        with pytest.raises(TildekitError, match="--osc-allow .*not an IP address"):
            AllowList.parse([bad])


def test_serve_cli_network_options(model_ts, tmp_path):
    wav = _wav(tmp_path, signal(0.2))
    args = ["--input", str(wav), "--output", str(tmp_path / "o.wav")]
    code, output = serve(str(model_ts), *args, "--osc-host", "0.0.0.0")
    assert code == 0 and "Warning: OSC listens on 0.0.0.0 with no --osc-allow" in output
    code, output = serve(str(model_ts), *args, "--osc-host", "0.0.0.0", "--osc-allow", "192.168.0.0/16")
    assert code == 0 and "Warning" not in output and "from 192.168.0.0/16 only" in output
    code, output = serve(str(model_ts), *args, "--osc-allow", "192.168.1.300")
    assert code == 2 and output.count("\n") == 1 and "--osc-allow 192.168.1.300" in output
    code, output = serve(str(model_ts), *args, "--osc-host", "no-such-host.invalid")
    assert code == 2 and output.count("\n") == 1 and "--osc-host no-such-host.invalid" in output
    code, output = serve(str(model_ts), *args, "--host", "127.0.0.1", "--allow", "127.0.0.1")  # older names
    assert code == 0 and "OSC on 127.0.0.1:" in output
    if ipv6_available():
        code, output = serve(str(model_ts), *args, "--osc-host", "::1", "--osc-allow", "::1")
        assert code == 0 and "OSC on [::1]:" in output


def test_osc_monitor_cli_allow_list_subprocess(model_ts):
    """The real command with an allow-list: a stranger's datagram is dropped and counted."""
    process = subprocess.Popen([sys.executable, "-m", "tildekit", "osc", "monitor", "--port", "0", "--count", "1",
                                "--seconds", "60", "--osc-allow", "127.0.0.1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        first = process.stderr.readline()
        assert "(accepting 127.0.0.1/32)" in first, first
        port = int(first.split("listening on 127.0.0.1:")[1].split()[0])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as friend:
            stranger.bind(("127.0.0.9", 0))
            stranger.sendto(osc("/evil", 1.0), ("127.0.0.1", port))
            friend.bind(("127.0.0.1", 0))
            friend.sendto(osc("/ok", 2.0), ("127.0.0.1", port))
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, err
    assert "/ok 2.0" in out and "/evil" not in out
    # datagrams are handled in arrival order: the stranger's came first and was counted
    assert "1 message(s), 1 packet(s) from senders not allowed" in err


# -- property-based: the parser, the range checker, the wire decoder, the safety stage ----------------

CARD = make_card(latent_size=4)
MAP = OscMap(CARD)
ADDRESSES = [f"{PREFIX}/{tail}" for tail in ("gain", "reset", "latent/0", "latent/3", "latent/4", "latent/1/scale",
                                              "latent/bias", "latent/scale", "attr/temperature",
                                              "attr/latent_bias", "attr/latent_scale", "attr/reset", "attr/x",
                                              "latent/01", "latent/-1", "latent/0/bias")] + ["/", "/tildekit"]
VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(width=32),
                   st.integers(min_value=-2 ** 70, max_value=2 ** 70), st.booleans(), st.none(),
                   st.text(max_size=20), st.binary(max_size=20), st.sampled_from(["true", "false", "1e9"]),
                   st.lists(st.floats(), max_size=3))


def _control_is_in_range(control) -> bool:
    ranges = {"bias": BIAS_RANGE, "bias_all": BIAS_RANGE, "scale": SCALE_RANGE, "scale_all": SCALE_RANGE,
              "gain": GAIN_RANGE}
    if control.kind in ranges:
        lo, hi = ranges[control.kind]
        return all(isinstance(v, float) and math.isfinite(v) and lo <= v <= hi for v in control.values)
    if control.kind == "attr":
        spec = CARD.attribute(control.name)
        lo, hi = attribute_range(spec)
        for value, kind in zip(control.values, spec.types):
            if kind in ("int", "float") and not (math.isfinite(value) and lo <= value <= hi):
                return False
            if kind == "bool" and not isinstance(value, bool):
                return False
        return len(control.values) == len(spec.types)
    return control.kind == "reset"


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.sampled_from(ADDRESSES), st.text(max_size=40).map(lambda t: f"{PREFIX}/{t}")),
       st.lists(VALUES, max_size=6))
def test_property_parse_accepts_only_finite_in_range_values_and_raises_only_its_errors(address, args):
    try:
        control = MAP.parse(address, args)
    except UnknownAddressError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    except BadValueError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    assert _control_is_in_range(control), control


@settings(max_examples=300, deadline=None, database=None)
@given(st.integers(0, 3), st.lists(st.floats(-2e3, 2e3), min_size=4, max_size=4))
def test_property_whole_vector_attributes_take_the_per_dimension_ranges(index, vector):
    """attr/latent_bias and attr/latent_scale accept exactly what latent/bias and latent/scale accept."""
    for attr, whole in (("latent_bias", "latent/bias"), ("latent_scale", "latent/scale")):
        outcomes = []
        for address in (f"{PREFIX}/attr/{attr}", f"{PREFIX}/{whole}"):
            try:
                outcomes.append(MAP.parse(address, vector).values)
            except BadValueError:
                outcomes.append(None)
        assert outcomes[0] == outcomes[1]


@settings(max_examples=400, deadline=None, database=None)
@given(st.binary(max_size=512))
def test_property_decode_returns_messages_or_malformed_only(data):
    try:
        messages = decode(data)
    except MalformedPacket as exc:
        assert "\n" not in str(exc)
        return
    for address, args in messages:
        assert isinstance(address, str) and isinstance(args, tuple)


OSC_ARGS = st.one_of(st.integers(-2 ** 31, 2 ** 31 - 1), st.floats(width=32, allow_nan=False),
                     st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                             max_size=30),
                     st.booleans(), st.binary(min_size=1, max_size=30))  # python-osc builds no empty blob


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(alphabet="abcdefghij/_-0123456789", max_size=40), st.lists(OSC_ARGS, max_size=8),
       st.integers(0, 7))
def test_property_decode_round_trips_what_python_osc_builds(tail, args, depth):
    builder = OscMessageBuilder("/" + tail)
    for arg in args:
        builder.add_arg(arg)
    data = nested_bundle(depth, builder.build().dgram)
    ((address, decoded),) = decode(data)
    assert address == "/" + tail and len(decoded) == len(args)
    for got, sent in zip(decoded, args):
        assert got == sent or (isinstance(sent, float) and got == pytest.approx(sent, rel=1e-6, abs=1e-38))


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.lists(st.floats(width=32), min_size=64, max_size=64), min_size=1, max_size=2),
       st.floats(-40, 0), st.integers(1, 4))
def test_property_safety_stage_output_is_finite_bounded_and_untouched_when_quiet(rows, ceiling_db, calls):
    stage = SafetyStage(RATE, ceiling_db)
    audio = np.array(rows, dtype=np.float32)
    for _ in range(calls):
        out, outcome = stage.process(audio)
        assert out.shape == audio.shape and out.dtype == np.float32
        assert np.isfinite(out).all() and np.abs(out).max(initial=0) <= stage.ceiling
        assert outcome.silenced == (not np.isfinite(audio).all())
    fresh = SafetyStage(RATE, ceiling_db)
    quiet = np.clip(np.nan_to_num(audio, posinf=0, neginf=0), -0.99 * fresh.ceiling, 0.99 * fresh.ceiling)
    assert np.array_equal(fresh.process(quiet)[0], quiet)


# -- hostile scores ---------------------------------------------------------------------------------------

def write_score(tmp_path: Path, text: str, name: str = "score.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


HEAD = ("name: tiny\nlatent_size: 4\nattributes: {temperature: {types: [float], min: 0, max: 10}, "
        "latent_bias: {types: [float, float, float, float]}, latent_scale: {types: [float, float, float, float]}}\n"
        "events:\n")


@pytest.mark.parametrize("event, match", [
    ("{at: 0, ramp: latent/0, from: 0, to: 1, over: 1e9}", r"field 'over': must be <= 86400, got 1e\+09"),
    ("{at: 0, ramp: latent/0, from: 0, to: 1, over: 1e4, update_hz: 1e9}", r"field 'update_hz': must be <= 1000"),
    ("{at: 0, ramp: latent/0, from: 0, to: 1, over: 86400, update_hz: 1000}", r"field 'over': .*updates, more than"),
    ("{at: 1e9, set: latent/0, value: 1}", r"field 'at': must be <= 86400"),
    ("{at: 86000, ramp: latent/0, from: 0, to: 1, over: 1000}", r"field 'over': ends at 87000 s"),
    ("{at: 0, lfo: latent/0, rate_hz: 1e6, over: 1}", r"field 'rate_hz': must be <= 100"),
    ("{at: 0, lfo: latent/0, rate_hz: 1, over: 1, seed: -1}", r"field 'seed': expected a whole number >= 0"),
    ("{at: 0, lfo: latent/0, rate_hz: 1, over: .inf}", r"field 'over': expected a finite number"),
    ("{at: 0, set: latent/0, value: 1e400}", r"field 'value': .*expects a finite number, got inf"),
    ("{at: 0, attr: latent_scale, values: [1e30, 1, 1, 1]}", r"field 'values': .*1e\+30 is outside \[-16, 16\]"),
    ("{at: 0, attr: latent_bias, values: [0, 0, 0, 3e38]}", r"field 'values': .*is outside \[-1000, 1000\]"),
    ("{at: 0, ramp: latent/bias, from: [0, 0, 0, 0], to: [0, 0, 0, 1e30], over: 1}", r"field 'to': .*outside"),
    ("{at: 0, ramp: latent/0, from: 0, to: 1, over: 1, curve: [a]}", r"field 'curve': \['a'\] is not one of"),
    ("{at: 0, interpolate: {from: a.wav, to: b.wav, over: 1e9}}", r"field 'interpolate.from'|field 'interpolate.over'"),
])
def test_hostile_score_events_fail_with_one_line_and_no_memory_blowup(tmp_path, event, match):
    tracemalloc.start()
    try:
        with pytest.raises(ScoreError, match=match) as caught:
            compile_score(load_score(write_score(tmp_path, HEAD + f"  - {event}\n")))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "\n" not in str(caught.value) and peak < 20 << 20


def test_scores_at_the_limits(tmp_path):
    many = "".join(f"  - {{at: {i / 100}, set: latent/0, value: 0.5}}\n" for i in range(10_001))
    with pytest.raises(ScoreError, match="10,001 events, more than 10,000"):
        load_score(write_score(tmp_path, HEAD + many))
    lfos = "".join(f"  - {{at: 0, lfo: latent/{i % 4}, rate_hz: 1, over: 3600, update_hz: 100}}\n" for i in range(6))
    with pytest.raises(ScoreError, match="more than 2,000,000 numbers"):
        compile_score(load_score(write_score(tmp_path, HEAD + lfos)))
    big = write_score(tmp_path, HEAD + "  - {at: 0, gain: 1}\n" + "#" * (4 << 20))
    with pytest.raises(ScoreError, match="larger than 4 MB"):
        load_score(big)
    deep = write_score(tmp_path, HEAD + "  - " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ScoreError):
        compile_score(load_score(deep))
    with pytest.raises(ScoreError, match="'rate_hz' must be a number in \\(0, 1000\\]"):
        load_score(write_score(tmp_path, "rate_hz: 1e9\n" + HEAD + "  - {at: 0, gain: 1}\n"))


def test_yaml_exponents_read_as_numbers(tmp_path):
    """YAML 1.1 reads 1e3 as a string: a score reads it as the number a musician means."""
    score = load_score(write_score(tmp_path, "rate_hz: 1e2\n" + HEAD +
                                   "  - {at: 5e-1, ramp: latent/0, from: -1E0, to: 2e0, over: 1e0}\n"
                                   "  - {at: 0, set: latent/1, value: 1e2}\n"))
    messages = compile_score(score)
    ramp = [m for m in messages if m.address.endswith("latent/0")]
    assert score.rate_hz == 100.0 and len(ramp) == 101 and ramp[0].time == 0.5 and ramp[-1].args == (2.0,)
    assert (0.0, f"{PREFIX}/latent/1", (100.0,)) in messages
    import yaml

    assert yaml.safe_load("x: 1e9")["x"] == "1e9"  # the global loader is left as it was


def test_shapes_refuse_unbounded_work_directly():
    with pytest.raises(TildekitError, match="more than 1,000,000"):
        ramp_values(0.0, 1.0, MAX_SECONDS, MAX_RATE_HZ)
    with pytest.raises(TildekitError, match="must be a number in \\(0, 1000\\]"):
        ramp_values(0.0, 1.0, 1.0, 1e9)
    with pytest.raises(TildekitError, match="at most 86400"):
        ramp_values(0.0, 1.0, 1e9, 1.0)
    with pytest.raises(TildekitError, match="LFO rate_hz"):
        lfo_values("random-smooth", 1e9, 1.0)
    times, values = lfo_values("random-smooth", 100.0, MAX_UPDATES / 100 - 1, update_hz=0.5)
    assert np.isfinite(values).all() and len(times) < 10_000


def test_cli_play_of_a_hostile_score_is_one_line(tmp_path):
    path = write_score(tmp_path, HEAD + "  - {at: 0, ramp: latent/0, from: 0, to: 1, over: 1e9}\n")
    result = CliRunner().invoke(main, ["osc", "play", str(path), "--dry-run"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "field 'over'" in result.output

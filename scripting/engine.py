"""The headless streaming engine behind ``tildekit serve``.

Two threads, one hand-over:

- the OSC thread reads raw UDP datagrams, parses them with python-osc, validates each message
  with the model's :class:`OscMap` and puts the resulting Control into a :class:`ControlQueue`;
  bad packets are counted, logged (rate limited) and dropped, never raised;
- the audio loop, at every buffer boundary, drains the queue without waiting, applies the
  Controls, then computes the buffer. No lock is held while the model computes.

The queue coalesces per target (one latent, one attribute, the gain...): a newer value
replaces a pending older one, so a flood of any size holds at most one pending Control per
address and the audio loop applies only the latest. The final state is the same as applying
every message in order, because each Control sets (not adds to) its target.

File mode (``run_file``) reads and writes with soundfile and is deterministic: the output
depends only on the input and on the buffer index at which each Control was applied
(recorded in ``Engine.applied``).

Host rate: buffers are at ``host_rate`` (the sound card's, or the input file's). When it is not
the model's rate, a :class:`ResampleStage` sits between the engine and the Runner.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Hashable, Iterable, Iterator

import numpy as np
from pythonosc.osc_packet import OscPacket

from tildekit.errors import TildekitError
from tildekit.scripting.oscmap import Control, OscMap, OscValueError
from tildekit.scripting.resample_stage import ResampleStage
from tildekit.scripting.runner import Runner, as_channels, check_buffer

log = logging.getLogger("tildekit.engine")

DEFAULT_BUFFER = 2048
MAX_DATAGRAM = 65536
# The OSC thread wakes this often to notice a stop request and to print stats.
POLL_SECONDS = 0.1
# Problems of one kind are logged individually this many times, then only counted.
LOG_FIRST = 5
# Engine.applied keeps the most recent this many applied Controls (tests and benchmarks read it).
APPLIED_LOG = 10_000


@dataclass
class EngineStats:
    """Counters of one engine run (read from any thread: plain ints, written by one thread each)."""

    packets: int = 0  # datagrams received
    received: int = 0  # OSC messages inside them
    applied: int = 0  # Controls applied to the model
    malformed: int = 0  # datagrams that are not OSC
    unknown_address: int = 0
    bad_value: int = 0  # known address, wrong types / count / range
    rejected_sender: int = 0  # datagrams from a sender not in the allow list
    refused: int = 0  # valid Controls the model raised on (audio thread's counter)
    dropped: int = 0  # Controls replaced by a newer one before being applied
    buffers: int = 0
    overruns: int = 0  # buffers that took longer to compute than they last
    compute_seconds: float = 0.0
    max_compute_seconds: float = 0.0
    queue_high_water: int = 0

    def summary(self, buffer_seconds: float) -> str:
        worst = self.max_compute_seconds / buffer_seconds if buffer_seconds else 0.0
        mean = self.compute_seconds / max(self.buffers, 1) / buffer_seconds if buffer_seconds else 0.0
        return (f"buffers {self.buffers}, overruns {self.overruns} (compute {mean:.0%} of real time on "
                f"average, worst {worst:.0%}); OSC: {self.received} received, {self.applied} applied, "
                f"{self.dropped} superseded, {self.malformed} malformed, {self.unknown_address} unknown "
                f"address, {self.bad_value} bad value, {self.rejected_sender} from senders not allowed"
                + (f", {self.refused} refused by the model" if self.refused else ""))

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def control_key(control: Control) -> Hashable:
    """What a Control sets: a newer Control with the same key makes an older one pointless."""
    if control.kind in ("bias", "scale"):
        return (control.kind, control.index)
    if control.kind == "attr":
        return ("attr", control.name)
    return (control.kind,)


class ControlQueue:
    """A bounded hand-over from the OSC thread to the audio loop, coalescing per target.

    ``put`` and ``drain`` hold the lock only to move dict entries; the size is bounded by the
    number of distinct targets (``limit`` guards against a card with very many attributes:
    beyond it the oldest pending Control is dropped).
    """

    def __init__(self, limit: int = 1024) -> None:
        self._pending: OrderedDict[Hashable, Control] = OrderedDict()
        self._lock = threading.Lock()
        self.limit = limit
        self.dropped = 0
        self.high_water = 0

    def put(self, control: Control) -> None:
        key = control_key(control)
        with self._lock:
            if self._pending.pop(key, None) is not None:
                self.dropped += 1
            elif len(self._pending) >= self.limit:
                self._pending.popitem(last=False)
                self.dropped += 1
            self._pending[key] = control  # moved to the end: order of last arrival is kept
            self.high_water = max(self.high_water, len(self._pending))

    def drain(self) -> list[Control]:
        with self._lock:
            if not self._pending:
                return []
            controls = list(self._pending.values())
            self._pending.clear()
        return controls

    def __len__(self) -> int:
        return len(self._pending)


class _RateLimitedLog:
    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def __call__(self, kind: str, message: str) -> None:
        count = self.seen.get(kind, 0) + 1
        self.seen[kind] = count
        if count <= LOG_FIRST:
            log.warning("OSC %s: %s", kind, message)
        elif count == LOG_FIRST + 1:
            log.warning("OSC %s: more of these are counted, not logged", kind)


# Argument sizes by OSC type tag; strings and blobs are sized from the data.
_FIXED_SIZES = {"i": 4, "f": 4, "c": 4, "r": 4, "m": 4, "h": 8, "d": 8, "t": 8,
                "T": 0, "F": 0, "N": 0, "I": 0, "[": 0, "]": 0}


def _padded_string_end(data: bytes, start: int) -> int:
    """End of the NUL-terminated, 4-byte padded string at ``start``, or -1."""
    nul = data.find(b"\0", start)
    if nul < 0:
        return -1
    end = (nul // 4 + 1) * 4
    return end if end <= len(data) else -1


def osc_framing_problem(data: bytes, depth: int = 0) -> str | None:
    """Why ``data`` is not a well-framed OSC packet (None if it is).

    python-osc is lenient (a float cut short reads as 0.0, unknown type tags are skipped
    with a warning on the root logger), so the engine checks the framing strictly first:
    4-byte alignment, a type tag string, and argument data that exactly fills the packet.
    """
    if len(data) % 4 or not data:
        return f"size {len(data)} is not a positive multiple of 4"
    if data.startswith(b"#bundle\0"):
        if depth > 8:
            return "bundles nested too deep"
        index = 16  # "#bundle\0" + 8-byte time tag
        if len(data) < index:
            return "bundle shorter than its header"
        while index < len(data):
            if index + 4 > len(data):
                return "bundle element without its size"
            size = int.from_bytes(data[index:index + 4], "big", signed=True)
            index += 4
            if size <= 0 or size % 4 or index + size > len(data):
                return f"bundle element size {size} does not fit"
            problem = osc_framing_problem(data[index:index + size], depth + 1)
            if problem:
                return problem
            index += size
        return None
    if not data.startswith(b"/"):
        return "neither a message (starts with '/') nor a bundle"
    index = _padded_string_end(data, 0)
    if index < 0:
        return "address not terminated"
    if index == len(data):
        return None  # no type tag: an argument-less message (OSC 1.0 allows it)
    tag_end = _padded_string_end(data, index)
    if tag_end < 0 or data[index:index + 1] != b",":
        return "type tag string missing or not starting with ','"
    tags = data[index + 1:data.find(b"\0", index)].decode("ascii", "replace")
    index = tag_end
    for tag in tags:
        if tag in _FIXED_SIZES:
            index += _FIXED_SIZES[tag]
        elif tag == "s" or tag == "S":
            index = _padded_string_end(data, index)
            if index < 0:
                return "string argument not terminated"
        elif tag == "b":
            if index + 4 > len(data):
                return "blob without its size"
            size = int.from_bytes(data[index:index + 4], "big", signed=True)
            if size < 0:
                return "negative blob size"
            index += 4 + (size + 3) // 4 * 4
        else:
            return f"unknown type tag {tag!r}"
        if index > len(data):
            return f"arguments ({tags}) longer than the packet"
    if index != len(data):
        return f"{len(data) - index} bytes after the arguments ({tags})"
    return None


def _is_unknown_address(error: OscValueError) -> bool:
    text = str(error)
    return "unknown address" in text or "no attribute" in text


class OscServer:
    """A UDP thread that turns datagrams into validated Controls in a ControlQueue."""

    def __init__(self, osc_map: OscMap, queue: ControlQueue, stats: EngineStats, host: str = "127.0.0.1",
                 port: int = 9000, allow: Iterable[str] | None = None,
                 on_tick: Callable[[], None] | None = None) -> None:
        self.map = osc_map
        self.queue = queue
        self.stats = stats
        self.allow = _resolve_allow(allow)
        self.on_tick = on_tick
        self._problem = _RateLimitedLog()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            hint = "another program (a patch, another engine?) uses it: pick another --osc-port" \
                if exc.errno == 98 else "check --host"
            raise TildekitError(f"cannot listen for OSC on {host}:{port}: {exc.strerror or exc} ({hint})") from None
        self.sock.settimeout(POLL_SECONDS)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tildekit-osc", daemon=True)

    def start(self) -> "OscServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(MAX_DATAGRAM)
            except socket.timeout:
                data = None
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if data is not None:
                try:
                    self.handle(data, sender[0])
                except Exception as exc:  # a bug here must not silence the control thread
                    self.stats.malformed += 1
                    self._problem("unexpected error", f"{type(exc).__name__}: {exc}")
            if self.on_tick is not None:
                self.on_tick()

    def handle(self, data: bytes, sender: str) -> None:
        """One datagram: count it, parse it, validate every message in it, queue the Controls."""
        stats = self.stats
        stats.packets += 1
        if self.allow is not None and sender not in self.allow:
            stats.rejected_sender += 1
            self._problem("sender rejected", f"{sender} is not in --allow")
            return
        problem = osc_framing_problem(data)
        if problem is None:
            try:
                messages = [timed.message for timed in OscPacket(data).messages]
            except Exception as exc:  # ParseError, but also struct/index/unicode errors
                problem = " ".join(str(exc).split())[:120]
        if problem is not None:
            stats.malformed += 1
            self._problem("malformed packet", f"{len(data)} bytes from {sender}: {problem}")
            return
        for message in messages:
            stats.received += 1
            try:
                control = self.map.parse(message.address, list(message.params))
            except OscValueError as exc:
                if _is_unknown_address(exc):
                    stats.unknown_address += 1
                    self._problem("unknown address", str(exc))
                else:
                    stats.bad_value += 1
                    self._problem("bad value", str(exc))
                continue
            self.queue.put(control)
        stats.dropped = self.queue.dropped
        stats.queue_high_water = self.queue.high_water


def _resolve_allow(allow: Iterable[str] | None) -> frozenset[str] | None:
    if allow is None:
        return None
    addresses = set()
    for name in allow:
        try:
            addresses.update(info[4][0] for info in socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM))
        except socket.gaierror:
            raise TildekitError(f"--allow {name}: not an IP address or a known host name") from None
    return frozenset(addresses)


BufferCallback = Callable[[int], None]


class Engine:
    """Streams a Runner buffer by buffer with live OSC control.

    ``on_buffer(index)`` (optional) is called in the audio loop just before buffer ``index``
    drains the queue: tests and benchmarks use it to know where the stream is.
    """

    def __init__(self, runner: Runner, osc_host: str = "127.0.0.1", osc_port: int = 9000,
                 allow: Iterable[str] | None = None, buffer: int = DEFAULT_BUFFER, realtime: bool = False,
                 verbose: bool = False, report_every: float = 5.0, name: str | None = None,
                 on_buffer: BufferCallback | None = None, queue_limit: int = 1024,
                 host_rate: int | None = None) -> None:
        check_buffer(runner.card, buffer)
        self.runner = runner
        self.card = runner.card
        self.map = OscMap(runner.card, name)
        self.buffer = buffer
        self.set_host_rate(host_rate or self.card.sample_rate)
        self.realtime = realtime
        self.gain = 1.0
        self.on_buffer = on_buffer
        self.stats = EngineStats()
        self.queue = ControlQueue(queue_limit)
        # (buffer index, control), in order; bounded so that a service running for days keeps its memory
        self.applied: deque[tuple[int, Control]] = deque(maxlen=APPLIED_LOG)
        self._report_every = report_every
        self._last_report = time.monotonic()
        self._verbose = verbose
        self.server = OscServer(self.map, self.queue, self.stats, osc_host, osc_port, allow,
                                on_tick=self._maybe_report if verbose else None).start()
        self._stop = threading.Event()
        self.started_at = 0.0  # time.monotonic() when the current stream started (buffer 0's slot)

    @property
    def osc_address(self) -> tuple[str, int]:
        return self.server.address

    # -- the resampling stage ------------------------------------------------------
    def set_host_rate(self, rate: int) -> None:
        """Stream buffers at ``rate`` Hz (resampled to and from the model's rate if it differs)."""
        if not isinstance(rate, int) or rate <= 0:
            raise TildekitError(f"--rate {rate}: a sample rate is a positive number of Hz, e.g. 48000")
        try:
            stage = ResampleStage(self.runner, rate) if rate != self.card.sample_rate else None
        except ValueError as exc:
            raise TildekitError(f"--rate {rate}: {exc}") from None
        self.host_rate, self.stage = rate, stage
        self.buffer_seconds = self.buffer / rate

    @property
    def delay(self) -> float:
        """Host samples from input to output (the model's delay, plus resampling if any)."""
        return self.stage.delay if self.stage is not None else float(self.card.delay)

    # -- the audio loop ------------------------------------------------------------
    def _apply_pending(self, index: int) -> None:
        for control in self.queue.drain():
            if control.kind == "gain":
                self.gain = float(control.values[0])
            else:
                try:
                    self.runner.apply(control)
                except Exception as exc:  # a model that refuses a value must not stop the show
                    self.stats.refused += 1
                    log.warning("model refused %s %s: %s", control.kind, control.name or control.index,
                                " ".join(str(exc).split())[:160])
                    continue
            self.applied.append((index, control))
            self.stats.applied += 1

    def step(self, index: int, block: np.ndarray | None) -> np.ndarray:
        """One buffer boundary: apply what arrived, then compute (``None`` = latent generation)."""
        if self.on_buffer is not None:
            self.on_buffer(index)
        self._apply_pending(index)
        started = time.perf_counter()
        audio = self.stage or self.runner
        out = audio.generate(self.buffer) if block is None else audio.process(block)
        if self.gain != 1.0:
            out = out * np.float32(self.gain)
        spent = time.perf_counter() - started
        stats = self.stats
        stats.buffers += 1
        stats.compute_seconds += spent
        if spent > stats.max_compute_seconds:
            stats.max_compute_seconds = spent
        if spent > self.buffer_seconds:
            stats.overruns += 1
            if stats.overruns <= LOG_FIRST:
                log.warning("over-run at buffer %d: %.1f ms to compute %.1f ms of audio", index,
                            1000 * spent, 1000 * self.buffer_seconds)
        return out

    def stream(self, blocks: Iterable[np.ndarray | None]) -> Iterator[np.ndarray]:
        """Process buffers as they come; with ``realtime`` each waits for its wall-clock slot."""
        start = self.started_at = time.monotonic()
        for index, block in enumerate(blocks):
            if self._stop.is_set():
                return
            if self.realtime:
                delay = start + index * self.buffer_seconds - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield self.step(index, block)

    def stop(self) -> None:
        """Ask the loop to finish after the current buffer (thread safe; Ctrl-C in device mode)."""
        self._stop.set()

    def run_array(self, audio: np.ndarray | None, frames: int | None = None) -> np.ndarray:
        """(channels, N) in -> (channels, N) out; ``audio=None`` generates ``frames`` samples."""
        total = audio.shape[1] if audio is not None else int(frames or 0)
        self._warm_up(generate=audio is None)
        outputs = list(self.stream(self._blocks(audio, total)))
        if not outputs:
            return np.zeros((self.card.channels, 0), dtype=np.float32)
        return np.concatenate(outputs, axis=1)[:, :total]

    def _blocks(self, audio: np.ndarray | None, total: int) -> Iterator[np.ndarray | None]:
        for begin in range(0, total, self.buffer):
            if audio is None:
                yield None
                continue
            block = audio[:, begin:begin + self.buffer]
            if block.shape[1] < self.buffer:  # the last buffer is padded, its output trimmed
                block = np.pad(block, ((0, 0), (0, self.buffer - block.shape[1])))
            yield block

    # -- file and device front ends ----------------------------------------------------
    def run_file(self, in_path: str | Path | None, out_path: str | Path, seconds: float | None = None) -> Path:
        """Input file (or ``seconds`` of latent generation) -> output file, written atomically."""
        import soundfile as sf

        if in_path is not None:
            audio, file_rate = read_audio(in_path, self.card.channels)
            if file_rate != self.host_rate:  # the file is the host: play it at its own rate
                self.set_host_rate(file_rate)
            out = self.run_array(audio)
        else:
            if seconds is None or seconds <= 0:
                raise TildekitError("latent-only generation needs a duration: pass --silence SECONDS")
            out = self.run_array(None, int(round(seconds * self.host_rate)))
        return write_atomic(out_path, out, self.host_rate, sf)

    def run_device(self, input_device: bool = True, device: str | int | None = None) -> None:
        """Sound card in/out until ``stop()`` or Ctrl-C (blocking read -> compute -> write)."""
        sd = import_sounddevice()
        channels, rate = self.card.channels, self.host_rate
        kind = sd.Stream if input_device else sd.OutputStream
        try:
            stream = kind(samplerate=rate, blocksize=self.buffer, channels=channels, dtype="float32",
                          device=device)
        except Exception as exc:  # sd.PortAudioError / ValueError: no device, unsupported rate...
            raise TildekitError(f"cannot open the sound device at {rate} Hz, {channels} channel(s): "
                                f"{' '.join(str(exc).split())[:160]} (check `python -m sounddevice`, or use "
                                f"--input/--output files)") from None

        def blocks() -> Iterator[np.ndarray | None]:
            while True:
                if not input_device:
                    yield None
                    continue
                data, overflowed = stream.read(self.buffer)
                if overflowed:
                    self.stats.overruns += 1
                yield np.ascontiguousarray(data.T)

        self._warm_up(generate=not input_device)
        with stream:
            try:
                for out in self.stream(blocks()):
                    if stream.write(np.ascontiguousarray(out.T)):  # True = output under-run
                        self.stats.overruns += 1
            except KeyboardInterrupt:
                pass

    def _warm_up(self, generate: bool) -> None:
        # at the model's rate, on buffers of about the host buffer's duration; then a clean state
        quantum = self.stage.quantum if self.stage is not None else self.card.highest_ratio
        model_buffer = max(quantum, self.buffer * self.card.sample_rate // self.host_rate // quantum * quantum)
        self.runner.warm_up(model_buffer, generate=generate)
        if self.stage is not None:
            self.stage.reset()

    # -- reporting and lifetime ---------------------------------------------------------
    def _maybe_report(self) -> None:
        now = time.monotonic()
        if now - self._last_report >= self._report_every:
            self._last_report = now
            log.info("%s", self.stats.summary(self.buffer_seconds))

    def summary(self) -> str:
        self.stats.dropped = self.queue.dropped
        self.stats.queue_high_water = self.queue.high_water
        return self.stats.summary(self.buffer_seconds)

    def close(self) -> None:
        self.server.close()
        self.runner.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_input(path: str | Path, rate: int, channels: int) -> np.ndarray:
    """An audio file as (channels, frames) float32 at the model's rate, or a clear error."""
    audio, file_rate = read_audio(path, channels)
    if file_rate != rate:
        raise TildekitError(f"--input {path}: sample rate {file_rate} Hz, the model runs at {rate} Hz: "
                            f"resample it first (e.g. sox in.wav -r {rate} out.wav)")
    return audio


def read_audio(path: str | Path, channels: int) -> tuple[np.ndarray, int]:
    """An audio file as ((channels, frames) float32, its sample rate), or a clear error."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise TildekitError(f"--input {path}: no such file")
    try:
        audio, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise TildekitError(f"--input {path}: not a readable sound file ({exc})") from None
    return as_channels(audio, channels, f"--input {path}"), int(file_rate)


def write_atomic(path: str | Path, audio: np.ndarray, rate: int, sf: object) -> Path:
    """(channels, N) -> a float WAV/FLAC... at ``path``, via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".wav", dir=path.parent)
    os.close(fd)
    try:
        subtype = "FLOAT" if path.suffix.lower() in (".wav", "") else None
        sf.write(tmp, np.ascontiguousarray(audio.T), rate, subtype=subtype,  # type: ignore[attr-defined]
                 format="WAV" if path.suffix == "" else None)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def import_sounddevice():  # -> module
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: PortAudio library missing
        raise TildekitError(f"sound device I/O needs the audio extra ({exc}): pip install 'tildekit[audio]' "
                            f"(and on Linux: sudo apt install libportaudio2)") from None
    return sounddevice

"""The headless streaming engine behind ``tildekit serve``.

Two threads, one hand-over:

- the OSC thread reads raw UDP datagrams (from allowed senders only, see ``netaccess``),
  decodes them strictly (``oscwire``), validates each message with the model's :class:`OscMap`
  and puts the resulting Control into a :class:`ControlQueue`; bad packets are counted, logged
  (rate limited) and dropped, never raised;
- the audio loop, at every buffer boundary, drains the queue without waiting, applies the
  Controls, computes the buffer, then passes it through the safety stage (``safety``: silence
  and a model reset for non-finite output, a peak limiter at the ceiling). No lock is held while
  the model computes.

The queue coalesces per target (one latent, one attribute, the gain...): a newer value
replaces a pending older one, so a flood of any size holds at most one pending Control per
address and the audio loop applies only the latest. The final state is the same as applying
every message in order, because each Control sets (not adds to) its target.

File mode (``run_file``) reads and writes with soundfile and is deterministic: the output
depends only on the input and on the buffer index at which each Control was applied
(recorded in ``Engine.applied``). A model that fails there stops the run at once with a
one-line error and no output file; live on a sound card a failing buffer is played as silence
(and the model reset) until ``MAX_FAILED_BUFFERS`` fail in a row.

Host rate: buffers are at ``host_rate`` (the sound card's, or the input file's). When it is not
the model's rate, a :class:`ResampleStage` sits between the engine and the Runner.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from tildekit.errors import DeviceUnavailable, TildekitError
from tildekit.models.contract.hosts import DEFAULT_BUFFER, DEFAULT_OSC_HOST, DEFAULT_OSC_PORT, check_buffer
from tildekit.models.contract.oscmap import Control, OscMap, OscValueError, UnknownAddressError
from tildekit.scripting.audio_files import AtomicOutput, read_audio
from tildekit.scripting.netaccess import AllowList, open_udp_socket
from tildekit.scripting.oscwire import MAX_DATAGRAM, MalformedPacket, decode, osc_framing_problem
from tildekit.scripting.resample_stage import ResampleStage
from tildekit.scripting.runner import Runner
from tildekit.scripting.safety import DEFAULT_CEILING_DB, SafetyStage, to_db

__all__ = ["ControlQueue", "Engine", "EngineStats", "OscServer", "osc_framing_problem"]

log = logging.getLogger("tildekit.engine")

# The OSC thread wakes this often to notice a stop request and to print stats.
POLL_SECONDS = 0.1
# Problems of one kind are logged individually this many times, then summed up at most once per
# LOG_INTERVAL seconds (a flood of bad packets or a model stuck in NaN must not flood the log).
LOG_FIRST = 5
LOG_INTERVAL = 10.0
# Engine.applied keeps the most recent this many applied Controls (tests and benchmarks read it).
APPLIED_LOG = 10_000
# Live, a model failing this many buffers in a row is not coming back: stop with its error.
MAX_FAILED_BUFFERS = 16


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
    # the safety stage (audio thread's counters)
    silenced: int = 0  # buffers of non-finite model output, played as silence (model reset)
    limited: int = 0  # buffers that went over the ceiling and were held under it
    max_peak: float = 0.0  # the loudest finite sample the model + gain produced (linear)
    bad_input: int = 0  # non-finite input samples, replaced by 0 before the model
    model_errors: int = 0  # buffers whose computation raised (live only; a file run stops)

    def summary(self, buffer_seconds: float) -> str:
        worst = self.max_compute_seconds / buffer_seconds if buffer_seconds else 0.0
        mean = self.compute_seconds / max(self.buffers, 1) / buffer_seconds if buffer_seconds else 0.0
        safety = (f"; safety: {self.silenced} silenced (non-finite output), {self.limited} limited "
                  f"(loudest {to_db(self.max_peak):+.1f} dBFS)")
        if self.bad_input:
            safety += f", {self.bad_input} non-finite input samples zeroed"
        if self.model_errors:
            safety += f", {self.model_errors} buffers failed in the model"
        return (f"buffers {self.buffers}, overruns {self.overruns} (compute {mean:.0%} of real time on "
                f"average, worst {worst:.0%}); OSC: {self.received} received, {self.applied} applied, "
                f"{self.dropped} superseded, {self.malformed} malformed, {self.unknown_address} unknown "
                f"address, {self.bad_value} bad value, {self.rejected_sender} from senders not allowed"
                + (f", {self.refused} refused by the model" if self.refused else "") + safety)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def control_key(control: Control) -> Hashable:
    """What a Control sets: a newer Control with the same key makes an older one pointless."""
    if control.kind in ("bias", "scale"):
        return (control.kind, control.index)
    if control.kind == "attr":
        return ("attr", control.name)
    if control.kind == "note":  # a note on and its off within one buffer: both are played, in order
        return ("note", control.values[1] > 0)
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


class RateLimitedLog:
    """Warnings by kind: the first ``LOG_FIRST`` each, then one line per ``LOG_INTERVAL`` with the count."""

    def __init__(self, prefix: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = prefix
        self.clock = clock
        self.seen: dict[str, int] = {}
        self._unlogged: dict[str, int] = {}
        self._last_line: dict[str, float] = {}

    def __call__(self, kind: str, message: str) -> None:
        count = self.seen.get(kind, 0) + 1
        self.seen[kind] = count
        if count <= LOG_FIRST:
            log.warning("%s%s: %s", self.prefix, kind, message)
            self._last_line[kind] = self.clock()
            return
        self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
        now = self.clock()
        if now - self._last_line.get(kind, -math.inf) >= LOG_INTERVAL:
            log.warning("%s%s: %d more in the last %.0f s (%d in all); latest: %s", self.prefix, kind,
                        self._unlogged[kind], now - self._last_line[kind], count, message)
            self._unlogged[kind] = 0
            self._last_line[kind] = now


class OscServer:
    """A UDP thread that turns datagrams into validated Controls in a ControlQueue."""

    def __init__(self, osc_map: OscMap, queue: ControlQueue, stats: EngineStats, host: str = DEFAULT_OSC_HOST,
                 port: int = DEFAULT_OSC_PORT, allow: AllowList | Iterable[str] | None = None,
                 on_tick: Callable[[], None] | None = None,
                 on_packet: Callable[[], None] | None = None) -> None:
        self.map = osc_map
        self.queue = queue
        self.stats = stats
        self.allow = allow if isinstance(allow, AllowList) or allow is None else AllowList.parse(allow)
        self.on_tick = on_tick
        self.on_packet = on_packet  # called after each datagram is handled (tests wait on it)
        self._problem = RateLimitedLog("OSC ")
        self.sock = open_udp_socket(host, port)
        self.sock.settimeout(POLL_SECONDS)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="tildekit-osc", daemon=True)

    def start(self) -> OscServer:
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
            except TimeoutError:
                data = None
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if data is not None:
                try:
                    self.handle(data, str(sender[0]))
                except Exception as exc:  # a bug here must not silence the control thread
                    self.stats.malformed += 1
                    self._problem("unexpected error", f"{type(exc).__name__}: {str(exc)[:160]}")
                if self.on_packet is not None:
                    self.on_packet()
            if self.on_tick is not None:
                self.on_tick()

    def handle(self, data: bytes, sender: str) -> None:
        """One datagram: count it, parse it, validate every message in it, queue the Controls."""
        stats = self.stats
        stats.packets += 1
        if self.allow is not None and not self.allow.allows(sender):
            stats.rejected_sender += 1
            self._problem("sender rejected", f"{sender} is not in --osc-allow ({self.allow})")
            return
        try:
            messages = decode(data)
        except MalformedPacket as exc:
            stats.malformed += 1
            self._problem("malformed packet", f"{len(data)} bytes from {sender}: {exc}")
            return
        for message in messages:
            stats.received += 1
            try:
                control = self.map.parse(message.address, message.args)
            except UnknownAddressError as exc:
                stats.unknown_address += 1
                self._problem("unknown address", str(exc))
                continue
            except OscValueError as exc:
                stats.bad_value += 1
                self._problem("bad value", str(exc))
                continue
            self.queue.put(control)
        stats.dropped = self.queue.dropped
        stats.queue_high_water = self.queue.high_water


BufferCallback = Callable[[int], None]


class Engine:
    """Streams a Runner buffer by buffer with live OSC control and a safety stage after the model.

    ``on_buffer(index)`` (optional) is called in the audio loop just before buffer ``index``
    drains the queue, ``on_packet()`` in the OSC thread after each datagram is handled: tests
    and benchmarks use them to know where the stream and the network are.
    """

    def __init__(self, runner: Runner, osc_host: str = DEFAULT_OSC_HOST, osc_port: int = DEFAULT_OSC_PORT,
                 allow: AllowList | Iterable[str] | None = None, buffer: int = DEFAULT_BUFFER,
                 realtime: bool = False, verbose: bool = False, report_every: float = 5.0,
                 name: str | None = None, on_buffer: BufferCallback | None = None, queue_limit: int = 1024,
                 ceiling_db: float = DEFAULT_CEILING_DB, on_packet: Callable[[], None] | None = None,
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
        self.safety = SafetyStage(self.card.sample_rate, ceiling_db)
        self._trouble = RateLimitedLog()
        # Live (sound card) runs play a failing buffer as silence; file runs stop at once.
        self.tolerate_model_errors = False
        self._failed_in_a_row = 0
        # (buffer index, control), in order; bounded so that a service running for days keeps its memory
        self.applied: deque[tuple[int, Control]] = deque(maxlen=APPLIED_LOG)
        self._report_every = report_every
        self._last_report = time.monotonic()
        self._verbose = verbose
        self.server = OscServer(self.map, self.queue, self.stats, osc_host, osc_port, allow,
                                on_tick=self._maybe_report if verbose else None, on_packet=on_packet).start()
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
                    self._trouble("model refused a control", f"{control.kind} {control.name or control.index}: "
                                  f"{' '.join(str(exc).split())[:160]}")
                    continue
            self.applied.append((index, control))
            self.stats.applied += 1

    def _compute(self, index: int, block: np.ndarray | None) -> np.ndarray:
        """The model's output for one buffer, as (channels, buffer) float32, or a model failure."""
        if block is not None and not np.isfinite(block).all():
            bad = ~np.isfinite(block)
            self.stats.bad_input += int(bad.sum())
            block = np.where(bad, np.float32(0.0), block)
            self._trouble("non-finite input", f"buffer {index}: NaN/inf input samples replaced by 0")
        try:
            audio = self.stage or self.runner
            out = audio.generate(self.buffer) if block is None else audio.process(block)
            out = np.asarray(out, dtype=np.float32)
            expected = (self.card.channels, self.buffer)
            if out.shape != expected:
                raise ValueError(f"returned shape {tuple(out.shape)}, expected {expected}")
        except TildekitError:
            raise
        except Exception as exc:
            return self._model_failed(index, exc)
        self._failed_in_a_row = 0
        return out

    def _model_failed(self, index: int, exc: Exception) -> np.ndarray:
        reason = model_error_reason(exc)
        error = TildekitError(f"{self.runner.path.name}: the model failed at buffer {index} ({reason}): "
                              f"it does not run here as exported; re-export it with `tildekit export` "
                              f"or check it with `tildekit check`")
        if not self.tolerate_model_errors:
            raise error
        self.stats.model_errors += 1
        self._failed_in_a_row += 1
        if self._failed_in_a_row >= MAX_FAILED_BUFFERS:
            raise error
        self._trouble("model error", f"buffer {index}: {reason}: played as silence, model reset")
        self._reset_model()
        return np.zeros((self.card.channels, self.buffer), dtype=np.float32)

    def _reset_model(self) -> None:
        try:
            self.runner.reset()
        except Exception as exc:  # the reset of a broken model may fail too: keep the silence
            self._trouble("model reset failed", " ".join(str(exc).split())[:160])

    def _make_safe(self, index: int, out: np.ndarray) -> np.ndarray:
        """The safety stage: silence for non-finite output (and a model reset), then the limiter."""
        safe, outcome = self.safety.process(out)
        stats = self.stats
        if outcome.silenced:
            stats.silenced += 1
            self._trouble("non-finite output", f"buffer {index} held {outcome.peak}: played as silence, "
                          f"model state reset")
            self._reset_model()
            return safe
        if outcome.peak > stats.max_peak:
            stats.max_peak = outcome.peak
        if outcome.limited:
            stats.limited += 1
            self._trouble("limiter", f"buffer {index} peaked at {to_db(outcome.peak):+.1f} dBFS: held under "
                          f"{self.safety.ceiling_db:+.1f} dBFS ({outcome.reduction_db:.1f} dB)")
        return safe

    def step(self, index: int, block: np.ndarray | None) -> np.ndarray:
        """One buffer boundary: apply what arrived, compute (``None`` = latent generation), make safe."""
        if self.on_buffer is not None:
            self.on_buffer(index)
        self._apply_pending(index)
        started = time.perf_counter()
        out = self._compute(index, block)
        if self.gain != 1.0:
            out = out * np.float32(self.gain)
        out = self._make_safe(index, out)
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

    def warm_up(self, generate: bool) -> None:
        """The runner's warm-up (silent buffers, then a reset): a model that cannot even run on
        silence is reported here, before any input is processed."""
        # at the model's rate, on buffers of about the host buffer's duration; then a clean state
        quantum = self.stage.quantum if self.stage is not None else self.card.highest_ratio
        model_buffer = max(quantum, self.buffer * self.card.sample_rate // self.host_rate // quantum * quantum)
        try:
            self.runner.warm_up(model_buffer, generate=generate)
        except TildekitError:
            raise
        except Exception as exc:
            reason = model_error_reason(exc)
            raise TildekitError(f"{self.runner.path.name}: the model fails on a silent buffer of "
                                f"{self.buffer} samples ({reason}): re-export it with `tildekit export` "
                                f"or check it with `tildekit check`") from None
        if self.stage is not None:
            self.stage.reset()
        self.safety.reset()

    def run_array(self, audio: np.ndarray | None, frames: int | None = None) -> np.ndarray:
        """(channels, N) in -> (channels, N) out; ``audio=None`` generates ``frames`` samples."""
        total = audio.shape[1] if audio is not None else int(frames or 0)
        self.warm_up(generate=audio is None)
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
    def run_file(self, in_path: str | Path | None, out: str | Path | AtomicOutput,
                 seconds: float | None = None) -> Path:
        """Input file (or ``seconds`` of latent generation) -> output file, written atomically.

        ``out`` may be an ``AtomicOutput`` made (and so checked) before the model was loaded.
        """
        with (out if isinstance(out, AtomicOutput) else AtomicOutput(out)) as target:
            if in_path is not None:
                audio, file_rate = read_audio(in_path, self.card.channels)
                if file_rate != self.host_rate:  # the file is the host: play it at its own rate
                    self.set_host_rate(file_rate)
                result = self.run_array(audio)
            else:
                if seconds is None or not math.isfinite(seconds) or seconds <= 0:
                    raise TildekitError("latent-only generation needs a duration: pass --silence SECONDS")
                result = self.run_array(None, int(round(seconds * self.host_rate)))
            return target.commit(result, self.host_rate)

    def run_device(self, input_device: bool = True, device: str | int | None = None) -> None:
        """Sound card in/out until ``stop()`` or Ctrl-C (blocking read -> compute -> write)."""
        sd = import_sounddevice()
        channels, rate = self.card.channels, self.host_rate
        kind = sd.Stream if input_device else sd.OutputStream
        try:
            stream = kind(samplerate=rate, blocksize=self.buffer, channels=channels, dtype="float32",
                          device=device)
        except Exception as exc:  # sd.PortAudioError / ValueError: no device, unsupported rate...
            raise DeviceUnavailable(f"cannot open the sound device at {rate} Hz, {channels} channel(s): "
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

        self.warm_up(generate=not input_device)
        self.tolerate_model_errors = True
        with stream:
            try:
                for out in self.stream(blocks()):
                    if stream.write(np.ascontiguousarray(out.T)):  # True = output under-run
                        self.stats.overruns += 1
            except KeyboardInterrupt:
                pass
            finally:
                self.tolerate_model_errors = False

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

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def model_error_reason(exc: BaseException) -> str:
    """The line that says what went wrong: TorchScript errors end with it, after their own traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    for prefix in ("builtins.",):
        reason = reason.removeprefix(prefix)
    return reason[:200]


def import_sounddevice():  # -> module
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: PortAudio library missing
        raise TildekitError(f"sound device I/O needs the audio extra ({exc}): pip install 'tildekit[audio]' "
                            f"(and on Linux: sudo apt install libportaudio2)") from None
    return sounddevice

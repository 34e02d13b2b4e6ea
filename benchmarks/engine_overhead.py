"""Engine overhead over the bare exported model, and OSC-message-to-audible-change latency.

    python benchmarks/engine_overhead.py                 # a random 'small' model, both runtimes
    python benchmarks/engine_overhead.py --model m.ts    # an exported model

Overhead: the same audio through ``Runner.process`` in a plain loop, and through
``Engine.run_array`` (OSC thread listening, queue drained every buffer), at buffer 2048 on one
thread; rounds are interleaved and the fastest of each kept, so the ratio comes from one run.
It is also measured with 1,000 OSC messages per second arriving during the engine run.

Latency: the engine runs a file paced at real time; gain messages are sent over UDP at random
moments. For each, the stream position at sending and the first output sample that changed give
"message -> changed output" in samples; a live sound card adds one output buffer on top.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tildekit.models.contract.oscmap import Control
from tildekit.scripting.engine import Engine
from tildekit.scripting.runner import Runner, open_runner

BUFFER = 2048


def build_models(folder: Path, profile: str) -> list[Path]:
    """A random-weight model of ``profile`` exported as .ts (nn~ module) and .onnx (forward)."""
    import onnx
    import torch

    from tildekit.export.card_io import card_extra_files
    from tildekit.export.core import untrained_core
    from tildekit.export.model_card import card_from_core
    from tildekit.export.nn_tilde import script_nn_tilde
    from tildekit.export.onnx_export import build_onnx

    core = untrained_core(profile)
    card = card_from_core(core, "bench", None, profile, 0)
    ts = folder / "bench.ts"
    torch.jit.save(script_nn_tilde(core, card), str(ts), _extra_files=card_extra_files(card))
    core.reset_state()
    proto, _ = build_onnx(core, card, "forward", streaming=True)
    onnx.save(proto, str(folder / "bench.onnx"))
    return [ts, folder / "bench.onnx"]


def test_signal(runner: Runner, seconds: float) -> np.ndarray:
    rate = runner.card.sample_rate
    t = np.arange(int(seconds * rate)) / rate
    audio = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    audio = audio[: audio.size // BUFFER * BUFFER]  # whole buffers: the bare loop does not pad
    return np.repeat(audio.astype(np.float32)[None], runner.card.channels, axis=0)


def paired_seconds(bare: Runner, engine: Engine, audio: np.ndarray) -> tuple[float, float]:
    """Each buffer through the bare runner and through ``Engine.step`` back to back (order
    alternating), so both see the same machine load; returns the two totals."""
    bare.warm_up(BUFFER)
    engine.runner.warm_up(BUFFER)
    totals = [0.0, 0.0]
    for index, begin in enumerate(range(0, audio.shape[1], BUFFER)):
        block = audio[:, begin:begin + BUFFER]
        for which in ((0, 1) if index % 2 else (1, 0)):
            started = time.perf_counter()
            if which == 0:
                bare.process(block)
            else:
                engine.step(index, block)
            totals[which] += time.perf_counter() - started
    return totals[0], totals[1]


def _send_steadily(target: tuple[str, int], address: str, rate: float, stop: threading.Event) -> None:
    from pythonosc.osc_message_builder import OscMessageBuilder

    datagrams = []
    for value in (1.0, 0.999):
        builder = OscMessageBuilder(address)
        builder.add_arg(value)
        datagrams.append(builder.build().dgram)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        begin, count = time.monotonic(), 0
        while not stop.is_set():
            sock.sendto(datagrams[count % 2], target)
            count += 1
            delay = begin + count / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def overhead(model: Path, seconds: float, rounds: int) -> None:
    bare_runner = open_runner(model, threads=1)
    audio = test_signal(bare_runner, seconds)
    with Engine(open_runner(model, threads=1), "127.0.0.1", 0, buffer=BUFFER) as engine:
        idle = [paired_seconds(bare_runner, engine, audio) for _ in range(rounds)]
        stop = threading.Event()
        sender = threading.Thread(target=_send_steadily, args=(engine.osc_address, engine.map.gain, 1000.0, stop))
        sender.start()
        try:
            busy = [paired_seconds(bare_runner, engine, audio) for _ in range(rounds)]
        finally:
            stop.set()
            sender.join()
        received = engine.stats.received
    base = min(b for b, _ in idle + busy)
    print(f"{model.name} ({bare_runner.runtime}), buffer {BUFFER}, 1 thread, {seconds:.0f} s of audio x {rounds} "
          f"rounds: bare {base:.3f} s ({seconds / base:.1f}x real time)")
    for label, pairs in (("no OSC traffic", idle), (f"1000 OSC msg/s ({received} received)", busy)):
        ratio = sum(e for _, e in pairs) / sum(b for b, _ in pairs)
        best = min(e for _, e in pairs) / min(b for b, _ in pairs)
        print(f"  engine / bare, {label}: {ratio:.3f} (all rounds), {best:.3f} (best round each)")


def latency(model: Path, messages: int) -> None:
    """Gain messages at random moments of a real-time paced run: message -> changed output sample."""
    runner = open_runner(model, threads=1)
    rate = runner.card.sample_rate
    gap = 0.25  # seconds between messages, plus a random part of one buffer
    seconds = messages * (gap + BUFFER / rate) + 1.0
    audio = test_signal(runner, seconds)
    rng = np.random.default_rng(1)
    sends: list[tuple[float, float]] = []  # (monotonic time sent, gain)
    with Engine(runner, "127.0.0.1", 0, buffer=BUFFER, realtime=True) as engine:
        address = engine.map.gain

        def send_all() -> None:
            from pythonosc.osc_message_builder import OscMessageBuilder

            while engine.started_at == 0.0:
                time.sleep(0.001)
            time.sleep(0.5)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for i in range(messages):
                    gain = 0.5 if i % 2 == 0 else 1.0
                    builder = OscMessageBuilder(address)
                    builder.add_arg(gain)
                    datagram = builder.build().dgram
                    time.sleep(gap + rng.uniform(0, BUFFER / rate))
                    sends.append((time.monotonic(), gain))
                    sock.sendto(datagram, engine.osc_address)

        sender = threading.Thread(target=send_all)
        sender.start()
        out = engine.run_array(audio)
        sender.join()
        start = engine.started_at
    reference = Engine(open_runner(model, threads=1), "127.0.0.1", 0, buffer=BUFFER)
    with reference:
        plain = reference.run_array(audio)
    # gain g applied from buffer j on: out == g * plain there; find where each gain starts
    ratio = np.divide(out[0], plain[0], out=np.ones_like(plain[0]), where=np.abs(plain[0]) > 1e-3)
    delays = []
    for (sent_at, gain), (index, control) in zip(sends, engine.applied):
        position = (sent_at - start) * rate
        begin = index * BUFFER
        assert control.values[0] == gain
        segment = ratio[begin:begin + BUFFER]
        changed = begin + int(np.flatnonzero(np.isclose(segment, gain, rtol=1e-3))[0])
        delays.append(changed - position)
    delays_ms = 1000 * np.asarray(delays) / rate
    limit_ms = 1000 * (BUFFER + runner.card.delay) / rate
    print(f"OSC -> changed output, file mode paced at real time, {len(delays)} gain messages, buffer {BUFFER} "
          f"({1000 * BUFFER / rate:.0f} ms): median {np.median(delays_ms):.1f} ms, max {delays_ms.max():.1f} ms "
          f"(target <= one buffer + model delay = {limit_ms:.1f} ms); a sound card adds one output buffer")
    probe_latent_change(model)


def probe_latent_change(model: Path, buffer_index: int = 4) -> None:
    """A latent bias applied at buffer k: where in the output the change starts (model-dependent part)."""
    outputs = []
    for bias in (None, 1.0):
        runner = open_runner(model, threads=1)
        audio = test_signal(runner, 2.0)
        holder: list[Engine] = []

        def on_buffer(index: int, bias: float | None = bias, holder: list[Engine] = holder) -> None:
            if bias is not None and index == buffer_index:
                holder[0].queue.put(Control("bias", index=0, values=(bias,)))

        with Engine(runner, "127.0.0.1", 0, buffer=BUFFER, on_buffer=on_buffer) as engine:
            holder.append(engine)
            outputs.append(engine.run_array(audio))
    changed = np.flatnonzero(np.any(np.abs(outputs[0] - outputs[1]) > 1e-6, axis=0))
    offset = int(changed[0]) - buffer_index * BUFFER if changed.size else None
    print(f"latent bias applied at buffer {buffer_index}: output changes {offset} samples after that buffer's "
          f"start (model delay {open_runner(model).card.delay} samples)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", help="exported .ts/.onnx (repeatable)")
    parser.add_argument("--profile", default="small", help="profile of the random model when --model is not given")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per overhead round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=12, help="gain messages for the latency probe")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        models = args.model or build_models(Path(folder), args.profile)
        for model in models:
            overhead(model, args.seconds, args.rounds)
        latency(models[0], args.messages)


if __name__ == "__main__":
    main()

"""``tildekit bench FILE``: real-time factor per buffer size on one thread, and the delay a
listener hears, host buffering included.

- ``.ts``: every nn~ buffer (powers of two from the highest ratio to 16384). TorchScript via
  ``torch.jit.load``; ONNX Runtime (``intra_op_num_threads=1``) when ``NAME.onnx`` sits beside
  the file. Delays: nn~ with its worker thread at Pd's block of 64 adds ``2B - 64`` samples per
  object (``4032 + B`` for a 1-in/1-out method without ``[bufsize B(``; docs/contracts.md §1).
  Also the nn~ wrapper overhead: the exported ``forward`` against the bare streaming
  autoencoder inside the same file (its encode + decode), measured interleaved in one run.
- ``.nm``: Neutone DAW buffers 128..2048 at 48 kHz through the plugin's ``forward``, delay =
  the wrapper's buffering delay + the model's.
- ``.onnx``: the ONNX Runtime column alone.

x-real-time = buffer duration / compute time per buffer: above 1 keeps up with the audio.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tildekit.errors import TildekitError
from tildekit.export.check import host_buffers
from tildekit.export.nn_load import load_like_nn
from tildekit.models.contract.card import ModelCard
from tildekit.models.contract.hosts import NEUTONE_DAW_BUFFERS
from tildekit.models.contract.nn_host import NN_FIXED_BUFFER, nn_host_delay

if TYPE_CHECKING:  # .ts and .nm only: an .onnx file is timed without torch
    import torch

NEUTONE_DAW_RATE = 48000


@dataclass(frozen=True)
class BenchRow:
    buffer: int
    torchscript_xrt: float | None
    onnx_xrt: float | None
    delay: int  # samples a listener hears through the main path, host buffering included
    chain_delay: int | None = None  # nn~ encode -> decode objects in series
    note: str = ""


@dataclass(frozen=True)
class BenchReport:
    path: Path
    card: ModelCard
    rows: list[BenchRow]
    wrapper_overhead: float | None = None  # exported forward time / bare autoencoder time
    delay_rate: int = 0  # sample rate the delays are counted at (0: the model's)

    def table(self) -> str:
        sr = self.delay_rate or self.card.sample_rate
        target = "Neutone forward" if self.path.suffix == ".nm" else "forward"
        from tildekit.models.contract.card import FOREIGN_NOTE, is_derived

        lines = [f"{self.path.name}: {FOREIGN_NOTE}"] if is_derived(self.card) else []
        lines += [f"{self.path.name}: {self.card.name}, {sr} Hz, compression {self.card.compression}, "
                 f"model delay {self.card.delay} samples ({self.card.delay_ms:.1f} ms); "
                 f"x-real-time on 1 thread (>1 keeps up)",
                 f"{'buffer':>7} {'TorchScript':>12} {'ONNX RT':>9} {target + ' delay':>24} "
                 f"{'encode->decode delay':>24}  note"]
        for row in self.rows:
            chain = (f"{row.chain_delay} ({1000 * row.chain_delay / sr:.1f} ms)"
                     if row.chain_delay is not None else "-")
            lines.append(f"{row.buffer:>7} {_xrt(row.torchscript_xrt):>12} {_xrt(row.onnx_xrt):>9} "
                         f"{f'{row.delay} ({1000 * row.delay / sr:.1f} ms)':>24} {chain:>24}  {row.note}")
        if self.wrapper_overhead is not None:
            lines.append(f"nn~ wrapper overhead: exported forward costs {self.wrapper_overhead:.3f}x "
                         f"the bare streaming autoencoder (same file, same buffers)")
        return "\n".join(lines)


def _xrt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def host_delay_and_note(buffer: int, one_in_one_out: bool) -> tuple[int, str]:
    """nn~'s added delay at this buffer (Pd block 64), with a note when the method's kind matters."""
    delay = nn_host_delay(buffer, one_in_one_out)
    if not one_in_one_out:
        return delay, ""
    if buffer > NN_FIXED_BUFFER:
        return (nn_host_delay(buffer, True, bufsize_sent=True),
                f"send [bufsize {buffer}( first: above {NN_FIXED_BUFFER} crashes Pd")
    return delay, (f"1-in/1-out: after [bufsize {buffer}( nn~ adds "
                   f"{nn_host_delay(buffer, True, bufsize_sent=True)}, not {delay}")


def seconds_per_call(call: Callable[[], object], min_seconds: float, min_calls: int = 3) -> float:
    """Mean wall time of ``call`` after two warm-up calls (JIT profiling runs)."""
    for _ in range(2):
        call()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        call()
        calls += 1
    return (time.perf_counter() - start) / calls


def bench_file(path: str | Path, buffers: Sequence[int] | None = None,
               min_seconds: float = 0.3) -> BenchReport:
    path = Path(path)
    from tildekit.export.card_io import model_card

    card = model_card(path)  # clear errors for missing / corrupt files; nn~ files without a card: derived
    suffix = path.suffix.lower()
    if suffix not in (".ts", ".nm", ".onnx"):
        raise TildekitError(f"{path}: cannot bench a {path.suffix} file: pass a .ts, .nm or .onnx export")
    if suffix == ".onnx":
        return _bench_onnx_only(path, card, buffers, min_seconds)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return (_bench_nn if suffix == ".ts" else _bench_neutone)(path, card, buffers, min_seconds)
    finally:
        torch.set_num_threads(threads)


def _audio(card: ModelCard, samples: int, batch: int = 1) -> torch.Tensor:
    import torch

    generator = torch.Generator().manual_seed(samples)
    return 0.1 * torch.randn(batch, card.channels, samples, generator=generator)


def _nn_buffers(card: ModelCard, buffers: Sequence[int] | None) -> list[int]:
    allowed = host_buffers(card.highest_ratio)
    if not buffers:
        return allowed
    bad = [b for b in buffers if b not in allowed]
    if bad:
        raise TildekitError(f"buffer(s) {bad} are not nn~ buffers for this model: use powers of two "
                            f"from {allowed[0]} to {allowed[-1]}")
    return sorted(buffers)


def _bench_nn(path: Path, card: ModelCard, buffers: Sequence[int] | None, min_seconds: float) -> BenchReport:
    import torch

    model = load_like_nn(path)
    onnx_path = _onnx_sibling(path)
    forward = card.methods.get("forward")
    if forward is None:
        raise TildekitError(f"{path}: bench times the forward method, and this model has none "
                            f"(methods: {', '.join(card.methods)})")
    encode, decode = card.methods.get("encode"), card.methods.get("decode")
    one_in_one_out = forward.in_channels == 1 and forward.out_channels == 1
    rows = []
    overhead_samples: list[float] = []
    for buffer in _nn_buffers(card, buffers):
        x = _audio(card, buffer)
        with torch.inference_mode():
            if model._c._has_method("set_reset"):
                model.set_reset(True)
            ts = seconds_per_call(functools.partial(model.forward, x), min_seconds)
            overhead = _wrapper_overhead(model, x, min_seconds)
        if overhead is not None:
            overhead_samples.append(overhead)
        host, note = host_delay_and_note(buffer, one_in_one_out)
        chain = None
        if encode is not None and decode is not None:
            chain = encode.delay + decode.delay + 2 * nn_host_delay(buffer, False)
        ort, ort_note = _onnx_xrt(onnx_path, card, buffer, min_seconds) if onnx_path else (None, "")
        note = "; ".join(n for n in (note, ort_note) if n)
        rows.append(BenchRow(buffer, buffer / card.sample_rate / ts, ort, forward.delay + host, chain, note))
    ratio = float(np.median(overhead_samples)) if overhead_samples else None
    return BenchReport(path, card, rows, ratio)


def _wrapper_overhead(model, x: torch.Tensor, min_seconds: float) -> float | None:
    """Exported forward / bare streaming autoencoder (encode + decode of the same file's model)."""
    try:
        bare = model.core.model
        frames_delay = int(model.core.encoder_frames_delay)

        def bare_forward() -> torch.Tensor:
            return bare.decode(bare.encode(x, 0.0), frames_delay)

        bare_forward()
    except Exception:  # a file exported without the tildekit core layout
        return None
    # Interleave the two so machine load affects both alike.
    exported, raw = [], []
    for _ in range(3):
        exported.append(seconds_per_call(lambda: model.forward(x), min_seconds / 6))
        raw.append(seconds_per_call(bare_forward, min_seconds / 6))
    return float(np.median(exported) / np.median(raw))


def _onnx_sibling(path: Path) -> Path | None:
    candidate = path.with_suffix(".onnx")
    return candidate if candidate.is_file() else None


def _onnx_xrt(path: Path, card: ModelCard, buffer: int, min_seconds: float) -> tuple[float | None, str]:
    """ONNX Runtime x-real-time on one thread, or None with the reason."""
    from tildekit.export.onnx_runtime import OnnxStreamer

    try:
        streamer = OnnxStreamer(path, batch=1, threads=1)
        if buffer % streamer.quantum:
            return None, f"ONNX graph takes multiples of {streamer.quantum} samples"
        x = (0.1 * np.random.default_rng(buffer).standard_normal((1, card.channels, buffer))).astype(np.float32)
        return buffer / card.sample_rate / seconds_per_call(lambda: streamer.process(x), min_seconds), ""
    except TildekitError as exc:
        return None, f"ONNX: {exc}"


def _bench_onnx_only(path: Path, card: ModelCard, buffers: Sequence[int] | None,
                     min_seconds: float) -> BenchReport:
    rows = []
    for buffer in _nn_buffers(card, buffers):
        ort, note = _onnx_xrt(path, card, buffer, min_seconds)
        rows.append(BenchRow(buffer, None, ort, card.delay, None, note))
    return BenchReport(path, card, rows)


def _bench_neutone(path: Path, card: ModelCard, buffers: Sequence[int] | None,
                   min_seconds: float) -> BenchReport:
    import torch

    model = load_like_nn(path)
    channels = 1 if model.is_input_mono() else 2
    rows = []
    for buffer in buffers or NEUTONE_DAW_BUFFERS:
        model.set_daw_sample_rate_and_buffer_size(NEUTONE_DAW_RATE, buffer)
        model.reset()
        x = 0.1 * torch.randn(channels, buffer, generator=torch.Generator().manual_seed(buffer))
        with torch.inference_mode():
            ts = seconds_per_call(functools.partial(model.forward, x), min_seconds)
        delay = int(model.calc_buffering_delay_samples()) + int(model.calc_model_delay_samples())
        note = "resampled" if model.is_resampling() else ""
        rows.append(BenchRow(buffer, buffer / NEUTONE_DAW_RATE / ts, None, delay, None, note))
    return BenchReport(path, card, rows, delay_rate=NEUTONE_DAW_RATE)

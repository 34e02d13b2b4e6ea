"""``tildekit bundle``: a folder to copy to a Raspberry Pi and start.

    make_bundle("runs/voice", "voice-pi")        # a run dir: exported here first
    make_bundle("voice.ts", "voice-pi")          # an exported model (its .onnx sibling is used too)

The folder holds the model for the runtime that measured faster on this machine (one thread,
at the buffer recommended for the Pi: a run dir's ONNX graphs are exported for that buffer, as
fixed-size graphs run faster), the ``.ts`` and a Pd patch for Pd + nn~ users, ``start.sh`` and a systemd unit that
run ``tildekit serve`` headless with OSC control, ``budget.json`` and a README with the install
steps and the measured budget. It is built in a temporary folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tildekit.errors import TildekitError
from tildekit.models.card import ModelCard
from tildekit.scripting.oscmap import OscMap, model_slug

TARGETS = ("raspberry",)
BENCH_BUFFER = 2048
# A Raspberry Pi 4 core (Cortex-A72, 1.5-1.8 GHz) runs these models 10-25x slower than a recent
# x86 core; the recommendation takes the slow end so the Pi keeps up.
PI_SLOWDOWN = (10.0, 25.0)
# Keep compute under this share of the buffer duration: the OS, OSC and audio I/O need the rest.
PI_HEADROOM = 0.7
MAX_PI_BUFFER = 16384
DEFAULT_OSC_PORT = 9000

Progress = Callable[[str], None]


@dataclass
class RuntimeTiming:
    runtime: str
    model_file: str
    buffer: int  # BENCH_BUFFER unless a runtime refuses it
    seconds_per_buffer: float  # median, 1 thread
    realtime_factor: float  # seconds of audio per second of compute


@dataclass
class BundleReport:
    out_dir: Path
    runtime: str
    model_file: str  # the file start.sh serves, relative to out_dir
    realtime_factor: float  # of the chosen runtime, here, 1 thread, at pi_buffer (as measured first)
    gflop_per_second: float | None  # of audio
    pi_buffer: int
    pi_latency_ms: float
    pi_realtime_estimate: tuple[float, float]  # x real time on a Pi 4 (slow end, fast end)
    pi_fits: bool  # the slow-end estimate keeps PI_HEADROOM at pi_buffer
    timings: list[RuntimeTiming] = field(default_factory=list)
    buffer_seconds_here: dict[int, float] = field(default_factory=dict)  # buffer -> compute s, here
    files: list[str] = field(default_factory=list)


# -- measuring ---------------------------------------------------------------------------

def time_buffer(runner, buffer: int, min_seconds: float = 0.4, min_calls: int = 8) -> float:
    """Median compute time of one ``forward`` buffer (after warm-up: TorchScript profiles its first calls)."""
    x = (0.1 * np.random.default_rng(0).standard_normal((runner.card.channels, buffer))).astype(np.float32)
    for _ in range(3):
        runner.process(x)
    times: list[float] = []
    begin = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - begin < min_seconds:
        started = time.perf_counter()
        runner.process(x)
        times.append(time.perf_counter() - started)
        if len(times) >= 200:
            break
    runner.reset()
    return float(np.median(times))


def count_flops(ts_path: Path, buffer: int) -> float | None:
    """FLOPs of one ``forward`` buffer of a TorchScript export (torch's FlopCounterMode)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        from tildekit.scripting.runner import open_runner

        runner = open_runner(ts_path, threads=1)
        x = np.zeros((runner.card.channels, buffer), dtype=np.float32)
        with FlopCounterMode(display=False) as counter:
            runner.process(x)
        total = counter.get_total_flops()
        return float(total) if total > 0 else None
    except Exception:  # counting is informative only; the README then says "not measured"
        return None


def recommend_pi_buffer(card: ModelCard, compute_here: dict[int, float]) -> tuple[int, bool]:
    """Smallest measured buffer whose slow-end Pi estimate leaves PI_HEADROOM; (largest, False) if none."""
    slow = PI_SLOWDOWN[1]
    for buffer in sorted(compute_here):
        if compute_here[buffer] * slow <= PI_HEADROOM * buffer / card.sample_rate:
            return buffer, True
    return max(compute_here), False


def pi_buffers(card: ModelCard) -> list[int]:
    """Powers of two nn~ and the engine accept, from the compression up to MAX_PI_BUFFER."""
    buffer = 1
    while buffer < card.highest_ratio:
        buffer *= 2
    out = []
    while buffer <= MAX_PI_BUFFER:
        if buffer % card.highest_ratio == 0:
            out.append(buffer)
        buffer *= 2
    return out


# -- the model files ---------------------------------------------------------------------

def _model_files(model: Path) -> dict[str, Path]:
    """The exports of one model found beside ``model``: {"torchscript": NAME.ts, "onnx": NAME.onnx}."""
    stem = model.name.split(".")[0]
    found = {}
    for runtime, name in (("torchscript", f"{stem}.ts"), ("onnx", f"{stem}.onnx")):
        candidate = model.with_name(name)
        if candidate.is_file():
            found[runtime] = candidate
    return found


def _onnx_companions(onnx_path: Path) -> list[Path]:
    """NAME.onnx needs NAME.encode.onnx / NAME.decode.onnx / NAME.*.state.npz beside it."""
    stem = onnx_path.name[: -len(".onnx")]
    return sorted(p for p in onnx_path.parent.iterdir()
                  if p.is_file() and p.name.startswith(f"{stem}.") and p.suffix in (".onnx", ".npz"))


def _export_run(run_dir: Path, work: Path, progress: Progress) -> tuple[Path, Callable[[int], Path]]:
    """Export a run dir's nn~ ``.ts`` to ``work``; returns it and a function that exports the ONNX
    graphs for a given buffer (fixed-size ONNX graphs run ~3x faster than dynamic ones)."""
    try:
        from tildekit.export.prepare import core_from_run
    except ImportError as exc:
        raise TildekitError(f"{run_dir} is a run dir but this install cannot export runs ({exc}): "
                            f"export it with `tildekit export` and bundle the .ts file") from None
    from tildekit.export.nn_tilde import export_nn
    from tildekit.export.onnx_export import export_onnx

    progress(f"exporting {run_dir} ...")
    core, card = core_from_run(run_dir)[:2]
    if card.profile and card.profile != "raspberry":
        progress(f"note: {run_dir} was trained with the {card.profile!r} profile; the 'raspberry' "
                 f"profile is sized for a Pi 4 (tildekit train --profile raspberry)")
    name = model_slug(card.name)
    ts_path = export_nn(core, card, work / f"{name}.ts")

    def onnx_for(buffer: int) -> Path:
        progress(f"exporting {name}.onnx for buffers of {buffer} ...")
        export_onnx(core, card, work, name, buffer=buffer)
        return work / f"{name}.onnx"

    return ts_path, onnx_for


def measure_buffers(runner, buffers: list[int], min_seconds: float = 0.2, min_calls: int = 5) -> dict[int, float]:
    """Compute time per buffer size, for the sizes the runner accepts (a fixed-size ONNX export
    takes multiples of its buffer only)."""
    compute = {}
    for buffer in buffers:
        try:
            compute[buffer] = time_buffer(runner, buffer, min_seconds, min_calls)
        except TildekitError:
            runner.reset()
    return compute


# -- the generated files ---------------------------------------------------------------------

def start_script(model_file: str, buffer: int, osc_port: int) -> str:
    return f"""#!/usr/bin/env bash
# Start the tildekit engine headless: sound card in -> model -> sound card out, OSC control.
# Settings come from the environment (the systemd unit sets them); extra arguments go to
# `tildekit serve` (e.g. ./start.sh --silence 60 --output test.wav to try it without a sound card).
set -euo pipefail
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
TILDEKIT="${{TILDEKIT:-$HERE/venv/bin/tildekit}}"
if [ ! -x "$TILDEKIT" ]; then
    TILDEKIT="$(command -v tildekit || true)"
fi
if [ -z "$TILDEKIT" ]; then
    echo "start.sh: tildekit not found: install it in $HERE/venv (see README.md)" >&2
    exit 1
fi
OSC_HOST="${{OSC_HOST:-0.0.0.0}}"   # 0.0.0.0: accept OSC from the network; 127.0.0.1: this Pi only
OSC_PORT="${{OSC_PORT:-{osc_port}}}"
BUFFER="${{BUFFER:-{buffer}}}"
THREADS="${{THREADS:-1}}"
ALLOW=()
for ip in ${{OSC_ALLOW:-}}; do      # space-separated sender addresses; empty: anyone
    ALLOW+=(--allow "$ip")
done
if [ "$#" -eq 0 ]; then
    set -- --device
fi
exec "$TILDEKIT" serve "$HERE/{model_file}" --host "$OSC_HOST" --osc-port "$OSC_PORT" \\
    --buffer "$BUFFER" --threads "$THREADS" ${{ALLOW[@]+"${{ALLOW[@]}}"}} --verbose "$@"
"""


def service_unit(name: str, user: str, install_dir: str, osc_port: int) -> str:
    return f"""[Unit]
Description=tildekit engine ({name}) with OSC control on port {osc_port}
After=network-online.target sound.target
Wants=network-online.target

[Service]
Type=simple
User={user}
SupplementaryGroups=audio
WorkingDirectory={install_dir}
Environment=OSC_HOST=0.0.0.0
Environment=OSC_PORT={osc_port}
# Environment=OSC_ALLOW=192.168.1.20
ExecStart={install_dir}/start.sh
Restart=on-failure
RestartSec=2
Nice=-10

[Install]
WantedBy=multi-user.target
"""


def readme(report: BundleReport, card: ModelCard, folder: str, install_dir: str, user: str,
           osc_port: int, has_pd: bool) -> str:
    osc = OscMap(card)
    gflops = (f"{report.gflop_per_second:.2f} GFLOP per second of audio"
              if report.gflop_per_second is not None else "not measured")
    timings = "\n".join(f"| {t.runtime} | `{t.model_file}` | {t.buffer} | {1000 * t.seconds_per_buffer:.2f} ms | "
                        f"{t.realtime_factor:.1f}x |" for t in report.timings)
    slow, fast = report.pi_realtime_estimate
    fit = ("fits" if report.pi_fits else
           "does NOT fit at any buffer on the slow estimate: expect over-runs; a model trained with "
           "`--profile raspberry` is sized for a Pi 4")
    per_buffer = "\n".join(f"| {b} | {1000 * b / card.sample_rate:.1f} ms | {1000 * s:.2f} ms | "
                           f"{1000 * s * PI_SLOWDOWN[1]:.1f} ms |" for b, s in sorted(report.buffer_seconds_here.items()))
    runtime_pkg = "onnxruntime" if report.runtime == "onnx" else "torch"
    stem = report.model_file.split(".")[0]
    pd_section = (f"""
## Pure Data + nn~

`{stem}-*.pd` are patches for Pd with the nn~ external (they load `{stem}.ts` from this
folder). Open `{stem}-transfer.pd` or `{stem}-forward.pd`; the OSC patch listens
on port {osc_port} like the engine, so run one or the other.
""" if has_pd else "")
    addresses = "\n".join(f"    {d.pattern:<40} {d.types:<8} {d.description}" for d in osc.documentation())
    return f"""# {card.name} for a Raspberry Pi 4

Made by `tildekit bundle --target raspberry`. Engine: `tildekit serve`, headless, {report.runtime}
runtime (measured faster here), {card.sample_rate} Hz, {card.channels} channel(s), OSC on UDP port {osc_port}.

## Install (64-bit Raspberry Pi OS, Bookworm or later)

    sudo apt update && sudo apt install -y python3-venv libportaudio2
    scp -r {folder} {user}@raspberrypi.local:{install_dir}     # from your computer
    cd {install_dir}
    python3 -m venv venv
    venv/bin/pip install 'tildekit[audio]' {runtime_pkg}       # aarch64 wheels from PyPI
    ./start.sh --silence 5 --output test.wav                   # a first run without the sound card
    ./start.sh                                                 # live: sound card in and out

Run it at boot (systemd; edit `User=` and the paths first if you changed them):

    sudo cp tildekit.service /etc/systemd/system/tildekit-{model_slug(card.name)}.service
    sudo systemctl daemon-reload
    sudo systemctl enable --now tildekit-{model_slug(card.name)}
    journalctl -u tildekit-{model_slug(card.name)} -f             # statistics and over-runs

Set the sound card at {card.sample_rate} Hz (the model's rate) as the default ALSA device. The unit
listens on all interfaces (`OSC_HOST=0.0.0.0`); set `OSC_ALLOW` in it to accept only your
controller's address, or `OSC_HOST=127.0.0.1` for local control only.

## Measured budget

Measured on the machine that made this bundle, 1 thread:

| runtime | file | buffer | compute per buffer | x real time |
|---|---|---|---|---|
{timings}

- Compute: {gflops}.
- A Pi 4 core is roughly {PI_SLOWDOWN[0]:.0f}-{PI_SLOWDOWN[1]:.0f}x slower: about {slow:.1f}x-{fast:.1f}x real time there.
- Recommended buffer on a Pi 4: **{report.pi_buffer} samples** ({1000 * report.pi_buffer / card.sample_rate:.1f} ms);
  latency about **{report.pi_latency_ms:.0f} ms** (two buffers of I/O + {card.delay_ms:.1f} ms model delay).
  On the slow estimate this {fit}.

| buffer | duration | compute here | Pi 4 estimate (x{PI_SLOWDOWN[1]:.0f}) |
|---|---|---|---|
{per_buffer}

If the engine reports over-runs (`journalctl`), raise `BUFFER` in the unit
(`Environment=BUFFER=...`, a power of two, multiple of {card.highest_ratio}).
{pd_section}
## OSC addresses

{addresses}
"""


# -- the bundle --------------------------------------------------------------------------

def make_bundle(run_or_model: str | Path, out_dir: str | Path, target: str = "raspberry", user: str = "pi",
                install_dir: str | None = None, osc_port: int = DEFAULT_OSC_PORT,
                progress: Progress | None = None) -> BundleReport:
    """Build the bundle folder ``out_dir`` (see the module docstring); returns what was measured."""
    from tildekit.export.card_io import read_card
    from tildekit.scripting.runner import open_runner

    say = progress or (lambda line: None)
    if target not in TARGETS:
        raise TildekitError(f"--target {target!r}: choose from {', '.join(TARGETS)}")
    source = Path(run_or_model)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TildekitError(f"--out {out}: already exists and is not an empty folder: pick a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    install_dir = install_dir or f"/home/{user}/{out.resolve().name}"
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        export_onnx_for: Callable[[int], Path] | None = None
        if source.is_dir():
            exports = work / "export"
            exports.mkdir()
            ts_path, export_onnx_for = _export_run(source, exports, say)
            models = {"torchscript": ts_path}
        elif source.is_file():
            if source.suffix.lower() not in (".ts", ".onnx"):
                raise TildekitError(f"{source}: bundle a run dir or an exported .ts / .onnx model")
            models = _model_files(source)
        else:
            raise TildekitError(f"{source} does not exist: pass a run dir or an exported model")
        card = read_card(next(iter(models.values())))

        # The buffer: from the runtime that takes any buffer (TorchScript) when there is one.
        first = next(iter(models.values()))
        say(f"measuring {first.name} at buffers {pi_buffers(card)} ...")
        compute = measure_buffers(open_runner(first, threads=1), pi_buffers(card))
        if not compute:
            raise TildekitError(f"{first.name} runs at none of the buffers {pi_buffers(card)}: re-export it")
        pi_buffer, fits = recommend_pi_buffer(card, compute)
        if export_onnx_for is not None:
            models["onnx"] = export_onnx_for(pi_buffer)

        # The runtime: both measured at the buffer the Pi will run (the ONNX graphs are exported
        # for it), and at BENCH_BUFFER for the README when a runtime accepts it.
        runners = {runtime: open_runner(path, threads=1) for runtime, path in models.items()}
        timings: list[RuntimeTiming] = []
        for runtime, runner in runners.items():
            times = measure_buffers(runner, sorted({pi_buffer, BENCH_BUFFER}), min_seconds=0.5, min_calls=10)
            for buffer, seconds in sorted(times.items()):
                say(f"{models[runtime].name}: {1000 * seconds:.2f} ms per buffer of {buffer}")
                timings.append(RuntimeTiming(runtime, models[runtime].name, buffer, seconds,
                                             buffer / card.sample_rate / seconds))
        compared = [t for t in timings if t.buffer == pi_buffer]
        if not compared:
            raise TildekitError(f"no model file runs at buffer {pi_buffer}: re-export the model")
        best = max(compared, key=lambda t: t.realtime_factor)
        best_path = models[best.runtime]
        if best_path != first:  # the table and the buffer for what start.sh will run
            compute = measure_buffers(runners[best.runtime], pi_buffers(card))
            pi_buffer, fits = recommend_pi_buffer(card, compute)
        flops = count_flops(models["torchscript"], BENCH_BUFFER) if "torchscript" in models else None

        bundle = work / "bundle"
        bundle.mkdir()
        copied = [best_path] + (_onnx_companions(best_path) if best.runtime == "onnx" else [])
        if "torchscript" in models:
            copied.append(models["torchscript"])  # for Pd + nn~, whatever the engine runs
        for path in dict.fromkeys(copied):
            shutil.copy2(path, bundle / path.name)
        has_pd = "torchscript" in models
        if has_pd:
            from tildekit.patches.write import write_patches

            write_patches(bundle / models["torchscript"].name, bundle, host="pd", buffer=pi_buffer,
                          osc_port=osc_port)
        report = BundleReport(
            out_dir=out, runtime=best.runtime, model_file=best_path.name,
            realtime_factor=best.realtime_factor,
            gflop_per_second=None if flops is None else flops * card.sample_rate / BENCH_BUFFER / 1e9,
            pi_buffer=pi_buffer,
            pi_latency_ms=1000 * (2 * pi_buffer + card.delay) / card.sample_rate,
            pi_realtime_estimate=(best.realtime_factor / PI_SLOWDOWN[1], best.realtime_factor / PI_SLOWDOWN[0]),
            pi_fits=fits, timings=timings, buffer_seconds_here=compute)
        script = bundle / "start.sh"
        script.write_text(start_script(best_path.name, pi_buffer, osc_port), encoding="utf-8")
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        (bundle / "tildekit.service").write_text(service_unit(card.name, user, install_dir, osc_port),
                                                 encoding="utf-8")
        (bundle / "README.md").write_text(readme(report, card, out.name, install_dir, user, osc_port, has_pd),
                                          encoding="utf-8")
        budget = {k: v for k, v in asdict(report).items() if k not in ("out_dir", "files")}
        budget["buffer_seconds_here"] = {str(k): v for k, v in compute.items()}
        (bundle / "budget.json").write_text(json.dumps(budget, indent=1), encoding="utf-8")
        for path in bundle.iterdir():  # some writers create 0600 files; a bundle is meant to be shared
            if path.is_file() and path != script:
                path.chmod(0o644)
        report.files = sorted(p.name for p in bundle.iterdir())
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(bundle, out)
        say(f"bundle {out}: {', '.join(report.files)}")
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""``tildekit bundle``: a self-contained folder to copy to a Raspberry Pi and start.

    make_bundle("runs/voice", "voice-pi")        # a run dir: exported here first
    make_bundle("voice.onnx", "voice-pi")        # an ONNX export (its .ts sibling is used for Pd)

The Pi runs the model with ONNX Runtime through the tildekit runtime (:mod:`tildekit.runtime`: no
torch, a ~200 MB venv). The folder holds:

- ``wheels/tildekit_runtime-VERSION-py3-none-any.whl``: that runtime, written from this install;
- ``NAME.onnx`` with its ``.encode``/``.decode`` graphs and initial states (a run dir's graphs are
  exported for the buffer recommended for the Pi: fixed-size graphs run faster), and the ``.ts``
  with Pd patches for Pd + nn~ users when there is one;
- ``start.sh`` and ``tildekit.service`` (:mod:`tildekit.scripting.pi_service`), ``budget.json`` and
  a README with the install commands and the measured budget.

It is built in a temporary folder and renamed into place.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import tempfile
import time
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from tildekit.errors import TildekitError
from tildekit.models.contract.card import ModelCard
from tildekit.models.contract.hosts import DEFAULT_BUFFER, DEFAULT_OSC_HOST, DEFAULT_OSC_PORT
from tildekit.models.contract.oscmap import OscMap, model_slug
from tildekit.scripting.pi_service import (
    CONFIG_ERROR_STATUS,
    DEVICE_STATUS,
    RESTART_SEC,
    START_LIMIT_BURST,
    START_LIMIT_INTERVAL_SEC,
    START_SCRIPT,
    UNIT_FILE,
    ServiceSettings,
    service_settings,
    service_unit,
    start_script,
)
from tildekit.scripting.runtime_wheel import write_runtime_wheel
from tildekit.scripting.shell_quote import shell_word

TARGETS = ("raspberry",)
BENCH_BUFFER = DEFAULT_BUFFER  # what the README's timings are at, beside the Pi's buffer
# A Raspberry Pi 4 core (Cortex-A72, 1.5-1.8 GHz) runs these models 10-25x slower than a recent
# x86 core; the recommendation takes the slow end so the Pi keeps up.
PI_SLOWDOWN = (10.0, 25.0)
# Keep compute under this share of the buffer duration: the OS, OSC and audio I/O need the rest.
PI_HEADROOM = 0.7
MAX_PI_BUFFER = 16384
WHEELS_DIR = "wheels"
SERVED_RUNTIME = "onnx"  # what the Pi runs: the runtime install has ONNX Runtime, not torch
# the profile sized for one Pi 4 core, per model family (models/profiles/)
PI_PROFILES = {"autoencoder": "raspberry", "ddsp": "ddsp-raspberry", "effect": "effect-raspberry"}

Progress = Callable[[str], None]


class PatchWriter(Protocol):
    """Writes Pd patches for a model file (:func:`tildekit.patches.write.write_patches`). The caller
    passes it: scripting and patches are sibling layers, and neither imports the other."""

    def __call__(self, model: Path, out_dir: Path, /, *, host: str, buffer: int, osc_port: int) -> list[Path]: ...


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
    runtime: str  # always SERVED_RUNTIME
    model_file: str  # the file start.sh serves, relative to out_dir
    realtime_factor: float  # of the served file, here, 1 thread, at pi_buffer
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
    stem = model.name[: -len(model.suffix)]
    found = {}
    for runtime, name in (("torchscript", f"{stem}.ts"), ("onnx", f"{stem}.onnx")):
        candidate = model.with_name(name)
        if candidate.is_file():
            found[runtime] = candidate
    if "onnx" not in found:
        raise TildekitError(f"{model}: the Pi runs ONNX exports and there is no {stem}.onnx beside it: "
                            f"export the run with `tildekit export RUN --target onnx`, or bundle the run dir")
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
        from tildekit.export.prepare import exportable_from_run
    except ImportError as exc:
        raise TildekitError(f"{run_dir} is a run dir but this install cannot export runs ({exc}): "
                            f"export it with `tildekit export` and bundle the .ts file") from None
    from tildekit.export.core import ExportCore
    from tildekit.export.target_nn import export_nn
    from tildekit.export.target_onnx import OnnxTarget, export_onnx, unavailable

    progress(f"exporting {run_dir} ...")
    core, card = exportable_from_run(run_dir)
    if not OnnxTarget().takes(card.family):
        raise TildekitError(unavailable(card.name, card.family))
    pi_profile = PI_PROFILES.get(card.family)
    if card.profile and pi_profile and card.profile != pi_profile:
        progress(f"note: {run_dir} was trained with the {card.profile!r} profile; the {pi_profile!r} "
                 f"profile is sized for a Pi 4 (tildekit train --profile {pi_profile})")
    name = model_slug(card.name)
    ts_path = export_nn(core, card, work / f"{name}.ts")
    module = core if isinstance(core, ExportCore) else core.module

    def onnx_for(buffer: int) -> Path:
        progress(f"exporting {name}.onnx for buffers of {buffer} ...")
        export_onnx(module, card, work, name, buffer=buffer)
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


def _pd_patches(ts_path: Path | None, bundle: Path, buffer: int, osc_port: int,
                write_patches: PatchWriter | None) -> tuple[list[str], str]:
    """Copy the ``.ts`` and write Pd patches for it: (patch file names, "") or ([], why not).
    The engine does not need them: a name Pd cannot carry leaves them out, with the reason."""
    if ts_path is None:
        return [], "there is no .ts export beside the model (nn~ loads TorchScript)"
    if write_patches is None:
        return [], "no patch writer was given"
    copy = bundle / ts_path.name
    shutil.copy2(ts_path, copy)
    try:
        written = write_patches(copy, bundle, host="pd", buffer=buffer, osc_port=osc_port)
    except TildekitError as exc:
        copy.unlink()
        return [], str(exc)
    return [Path(p).name for p in written], ""


# -- the README ------------------------------------------------------------------------------

def readme_text(value: str, limit: int = 200) -> str:
    """Text from a model card or a file name as one harmless line of Markdown: control, format and
    line-separator characters and backticks replaced, so nothing can start a new (copy-pasted)
    line or code span."""
    text = "".join("?" if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") or c == "`" else c
                   for c in value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _serve_options() -> tuple[str, str]:
    """The options of `tildekit serve` for the OSC address and allow-list (start.sh passes what the
    bundled runtime's serve declares)."""
    from tildekit.scripting.cli import serve

    declared = {opt for param in serve.params for opt in getattr(param, "opts", ())}

    def first(*names: str) -> str:
        for name in names:
            if name in declared:
                return name
        raise TildekitError(f"`tildekit serve` has none of {', '.join(names)}: this tildekit cannot be bundled")

    return first("--osc-host", "--host"), first("--osc-allow", "--allow")


def readme(report: BundleReport, card: ModelCard, settings: ServiceSettings, wheel: str,
           ts_file: str | None = None, patches: list[str] | None = None, no_patches: str = "") -> str:
    osc = OscMap(card)
    slug = model_slug(card.name)
    service = f"tildekit-{slug}"
    gflops = (f"{report.gflop_per_second:.2f} GFLOP per second of audio"
              if report.gflop_per_second is not None else "not measured")
    timings = "\n".join(f"| {t.runtime} | `{readme_text(t.model_file)}` | {t.buffer} | "
                        f"{1000 * t.seconds_per_buffer:.2f} ms | {t.realtime_factor:.1f}x |" for t in report.timings)
    slow, fast = report.pi_realtime_estimate
    low, high = PI_SLOWDOWN
    fit = ("fits" if report.pi_fits else
           "does NOT fit at any buffer on the slow estimate: expect over-runs; a model trained with "
           "`--profile raspberry` is sized for a Pi 4")
    per_buffer = "\n".join(f"| {b} | {1000 * b / card.sample_rate:.1f} ms | {1000 * s:.2f} ms | "
                           f"{1000 * s * PI_SLOWDOWN[1]:.1f} ms |"
                           for b, s in sorted(report.buffer_seconds_here.items()))
    model = shell_word("./" + report.model_file, "model file")
    install_dir = shell_word(settings.install_dir, "--install-dir")
    if ipaddress.ip_address(settings.osc_host).is_loopback:
        listen = f"{settings.osc_host}: OSC from this Pi only"
    else:
        senders = f"from {', '.join(settings.osc_allow)} only" if settings.osc_allow else "from any sender"
        listen = f"{settings.osc_host}: OSC {senders}"
    pd_section = (f"\n## Pure Data + nn~\n\nNo Pd patches in this bundle: {readme_text(no_patches, 400)}\n"
                  if no_patches else "")
    if ts_file and patches:
        ts_name = readme_text(ts_file)
        listing = ", ".join(f"`{readme_text(p)}`" for p in patches)
        pd_section = f"""
## Pure Data + nn~

{listing} are patches for Pd with the nn~ external (they load `{ts_name}` from this folder; nn~
needs libtorch, which the tildekit runtime does not install). The OSC patch listens on port
{settings.osc_port} like the engine: run one or the other.
"""
    addresses = "\n".join(readme_text(f"    {d.pattern:<40} {d.types:<8} {d.description}", 300)
                          for d in osc.documentation())
    return f"""# {readme_text(card.name)} on a Raspberry Pi

Made by `tildekit bundle --target raspberry`. The engine (`tildekit serve`, headless) plays
`{readme_text(report.model_file)}` with ONNX Runtime: {card.sample_rate} Hz, {card.channels} channel(s),
buffer {settings.buffer}, OSC control on UDP port {settings.osc_port}, listening on {listen}.

`{WHEELS_DIR}/{wheel}` is the tildekit runtime: the engine, OSC, patches and checks of ONNX files,
without torch (the venv below takes about 230 MB). Training and exports stay on your computer.

## Install (64-bit Raspberry Pi OS Bookworm, Debian 12 arm64)

Copy this folder to the Pi as `{readme_text(settings.install_dir)}` (with `scp -r`, `rsync` or a USB stick; the
service uses that path, `tildekit bundle --install-dir` changes it), then on the Pi:

    sudo apt update
    sudo apt install -y python3-venv libportaudio2 libsndfile1
    cd {install_dir}
    python3 -m venv venv
    venv/bin/pip install '{WHEELS_DIR}/{wheel}[audio]'
    venv/bin/tildekit check {model}
    ./start.sh --silence 5 --output test.wav
    ./start.sh

`pip` fetches the runtime's dependencies (ONNX Runtime, numpy, soundfile, python-osc, click, PyYAML,
sounddevice ...) for arm64 from PyPI; tildekit itself comes from the wheel in this folder. `check`
loads the model with ONNX Runtime on the Pi; the first `start.sh` plays 5 s of generated sound into
`test.wav` without the sound card (`./start.sh --input in.wav --output out.wav` processes a file
at {card.sample_rate} Hz); the second runs live, sound card in and out (Ctrl-C stops it).

Set the sound card at {card.sample_rate} Hz as the default ALSA device (`aplay -l` lists the cards). On the
desktop image the logged-in session's audio server may hold the card: use Raspberry Pi OS Lite,
or stop the engine's service while the desktop plays sound.

## Start at boot (systemd)

The unit runs `start.sh` as `{readme_text(settings.user)}` (`tildekit bundle --user` sets it):

    sudo cp {UNIT_FILE} /etc/systemd/system/{service}.service
    sudo systemctl daemon-reload
    sudo systemctl enable --now {service}
    systemctl status {service}
    journalctl -u {service} -f

If the sound card cannot be opened, the engine logs `Error: cannot open the sound device ...` and
exits with status {DEVICE_STATUS}; systemd tries again every {RESTART_SEC} s, at most {START_LIMIT_BURST} starts in
{START_LIMIT_INTERVAL_SEC} s, then leaves the service failed (plug the card in, then
`sudo systemctl restart {service}`). A setup error (status {CONFIG_ERROR_STATUS}: no venv, a bad setting) is
not retried. Either way `journalctl -u {service}` names the cause in one line.

## OSC from the network

This bundle's engine listens on {listen} (`OSC_HOST={readme_text(settings.osc_host)}`,
`OSC_ALLOW={readme_text(" ".join(settings.osc_allow))}`). To control it from another machine, name the
address to listen on and the senders allowed, IPv4 or IPv6, in an override:

    sudo systemctl edit {service}

and write, for a controller at 192.168.1.20 (IPv4; `OSC_HOST=::` listens on IPv6, e.g. with
`OSC_ALLOW=fd00::20`; several senders are separated by spaces):

    [Service]
    Environment="OSC_HOST=0.0.0.0" "OSC_ALLOW=192.168.1.20"

then `sudo systemctl restart {service}`. An empty `OSC_ALLOW` accepts any sender that can reach
the port: on a shared network, always list your controllers. The same variables work for
`./start.sh` (`OSC_HOST=0.0.0.0 OSC_ALLOW=192.168.1.20 ./start.sh`), and `tildekit bundle
--osc-host ... --osc-allow ...` writes them as this bundle's defaults.

## Measured budget

Measured on the machine that made this bundle, 1 thread:

| runtime | file | buffer | compute per buffer | x real time |
|---|---|---|---|---|
{timings}

- Compute: {gflops}.
- A Pi 4 core is roughly {low:.0f}-{high:.0f}x slower: about {slow:.1f}x-{fast:.1f}x real time there.
- Recommended buffer on a Pi 4: **{report.pi_buffer} samples** ({1000 * report.pi_buffer / card.sample_rate:.1f} ms);
  latency about **{report.pi_latency_ms:.0f} ms** (two buffers of I/O + {card.delay_ms:.1f} ms model delay).
  On the slow estimate this {fit}.

| buffer | duration | compute here | Pi 4 estimate (x{PI_SLOWDOWN[1]:.0f}) |
|---|---|---|---|
{per_buffer}

`venv/bin/tildekit bench {model}` measures it on the Pi itself. If the engine reports
over-runs (`journalctl`), raise `BUFFER` in the override (`Environment=BUFFER=...`, a multiple of
{card.highest_ratio} that the ONNX graphs accept).
{pd_section}
## OSC addresses

{addresses}
"""


# -- the bundle --------------------------------------------------------------------------

def make_bundle(run_or_model: str | Path, out_dir: str | Path, target: str = "raspberry", user: str = "pi",
                install_dir: str | None = None, osc_port: int = DEFAULT_OSC_PORT,
                osc_host: str = DEFAULT_OSC_HOST, osc_allow: tuple[str, ...] | list[str] = (),
                progress: Progress | None = None, write_patches: PatchWriter | None = None) -> BundleReport:
    """Build the bundle folder ``out_dir`` (see the module docstring); returns what was measured.
    ``write_patches`` writes the Pd patches beside the ``.ts`` (none without it)."""
    from tildekit.export.card_io import read_card
    from tildekit.scripting.runner import open_runner

    say = progress or (lambda line: None)
    if target not in TARGETS:
        raise TildekitError(f"--target {target!r}: choose from {', '.join(TARGETS)}")
    source = Path(run_or_model)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TildekitError(f"--out {out}: already exists and is not an empty folder: pick a new folder")
    install_dir = install_dir or f"/home/{user}/{out.resolve().name}"
    # Every name that goes into start.sh and the unit is checked before anything is measured.
    settings = service_settings(user, install_dir, BENCH_BUFFER, osc_port, osc_host, osc_allow)
    host_option, allow_option = _serve_options()
    if source.is_file():
        if source.suffix.lower() not in (".ts", ".onnx") or source.name.endswith((".encode.onnx", ".decode.onnx")):
            raise TildekitError(f"{source}: bundle a run dir or an exported NAME.onnx / NAME.ts model")
        models = _model_files(source)
        card = read_card(models[SERVED_RUNTIME])
        service_unit(card.name, settings)
        start_script(models[SERVED_RUNTIME].name, settings, host_option, allow_option)
    elif not source.is_dir():
        raise TildekitError(f"{source} does not exist: pass a run dir or an exported model")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        if source.is_dir():
            exports = work / "export"
            exports.mkdir()
            ts_path, export_onnx_for = _export_run(source, exports, say)
            card = read_card(ts_path)
            service_unit(card.name, settings)
            # The buffer, from the runtime that takes any buffer; then the graphs for it.
            say(f"measuring {ts_path.name} at buffers {pi_buffers(card)} ...")
            compute = measure_buffers(open_runner(ts_path, threads=1), pi_buffers(card))
            if not compute:
                raise TildekitError(f"{ts_path.name} runs at none of the buffers {pi_buffers(card)}")
            models = {"torchscript": ts_path, "onnx": export_onnx_for(recommend_pi_buffer(card, compute)[0])}

        # The buffer for the Pi, from what it will run.
        served = models[SERVED_RUNTIME]
        say(f"measuring {served.name} at buffers {pi_buffers(card)} ...")
        runners = {runtime: open_runner(path, threads=1) for runtime, path in models.items()}
        compute = measure_buffers(runners[SERVED_RUNTIME], pi_buffers(card))
        if not compute:
            raise TildekitError(f"{served.name} runs at none of the buffers {pi_buffers(card)}: re-export it")
        pi_buffer, fits = recommend_pi_buffer(card, compute)

        # Both runtimes at the Pi's buffer and at BENCH_BUFFER, for the README (the .ts is what Pd + nn~ runs).
        timings: list[RuntimeTiming] = []
        for runtime, runner in runners.items():
            times = measure_buffers(runner, sorted({pi_buffer, BENCH_BUFFER}), min_seconds=0.5, min_calls=10)
            for buffer, seconds in sorted(times.items()):
                say(f"{models[runtime].name}: {1000 * seconds:.2f} ms per buffer of {buffer}")
                timings.append(RuntimeTiming(runtime, models[runtime].name, buffer, seconds,
                                             buffer / card.sample_rate / seconds))
        served_timing = next((t for t in timings if t.runtime == SERVED_RUNTIME and t.buffer == pi_buffer), None)
        if served_timing is None:
            raise TildekitError(f"{served.name} does not run at buffer {pi_buffer}: re-export the model")
        flops = count_flops(models["torchscript"], BENCH_BUFFER) if "torchscript" in models else None
        settings = service_settings(user, install_dir, pi_buffer, osc_port, osc_host, osc_allow)

        bundle = work / "bundle"
        bundle.mkdir()
        for path in dict.fromkeys([served, *_onnx_companions(served)]):
            shutil.copy2(path, bundle / path.name)
        patches, no_patches = _pd_patches(models.get("torchscript"), bundle, pi_buffer, osc_port,
                                          write_patches)
        if no_patches:
            say(f"no Pd patches: {no_patches}")
        (bundle / WHEELS_DIR).mkdir()
        wheel = write_runtime_wheel(bundle / WHEELS_DIR)
        say(f"wrote the tildekit runtime as {WHEELS_DIR}/{wheel.name}")
        report = BundleReport(
            out_dir=out, runtime=SERVED_RUNTIME, model_file=served.name,
            realtime_factor=served_timing.realtime_factor,
            gflop_per_second=None if flops is None else flops * card.sample_rate / BENCH_BUFFER / 1e9,
            pi_buffer=pi_buffer,
            pi_latency_ms=1000 * (2 * pi_buffer + card.delay) / card.sample_rate,
            pi_realtime_estimate=(served_timing.realtime_factor / PI_SLOWDOWN[1],
                                  served_timing.realtime_factor / PI_SLOWDOWN[0]),
            pi_fits=fits, timings=timings, buffer_seconds_here=compute)
        script = bundle / START_SCRIPT
        script.write_text(start_script(served.name, settings, host_option, allow_option), encoding="utf-8")
        (bundle / UNIT_FILE).write_text(service_unit(card.name, settings), encoding="utf-8")
        ts_file = models["torchscript"].name if patches else None
        (bundle / "README.md").write_text(readme(report, card, settings, wheel.name, ts_file, patches, no_patches),
                                          encoding="utf-8")
        budget = {k: v for k, v in asdict(report).items() if k not in ("out_dir", "files")}
        budget["buffer_seconds_here"] = {str(k): v for k, v in compute.items()}
        (bundle / "budget.json").write_text(json.dumps(budget, indent=1), encoding="utf-8")
        for path in [*bundle.iterdir(), *(bundle / WHEELS_DIR).iterdir()]:  # a bundle is meant to be shared
            if path.is_file():
                path.chmod(0o755 if path == script else 0o644)
        (bundle / WHEELS_DIR).chmod(0o755)
        report.files = sorted([p.name for p in bundle.iterdir() if p.is_file()] + [f"{WHEELS_DIR}/{wheel.name}"])
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(bundle, out)
        say(f"bundle {out}: {', '.join(report.files)}")
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)

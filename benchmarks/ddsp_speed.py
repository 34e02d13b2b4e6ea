"""Speed of the DDSP profiles' streaming ``forward`` beside the RAVE-style autoencoders, in
TorchScript (what nn~ runs) and ONNX Runtime, from one run.

    python benchmarks/ddsp_speed.py                              # 48 kHz, buffer 2048, one thread
    python benchmarks/ddsp_speed.py --autoencoders raspberry     # fewer baselines: a shorter run
    python benchmarks/ddsp_speed.py --profile                    # also each scripted model's slowest operators
    python benchmarks/ddsp_speed.py --before OLD                 # also the DDSP models of another checkout
    python benchmarks/ddsp_speed.py --parts                      # also where a DDSP call's time goes

``--before OLD``: OLD is a folder holding a ``tildekit`` package (another version of this
repository). A subprocess with OLD on ``PYTHONPATH`` builds that version's DDSP models the same
way and saves their TorchScript and ONNX files; they are timed here as ``NAME (before)``, in the
same interleaved rounds as this version's, so before and after share one machine state.

Every model is built with random weights, made streaming, wrapped as exported (the autoencoder
in ``ExportCore``, DDSP through its export adapter) and scripted; its ONNX graph is the
streaming export at the benchmark's buffer (time and batch fixed, state as explicit inputs and
outputs) run by onnxruntime on one thread. Each round times every model on the same audio (a
few seconds of a harmonic tone with vibrato and noise, so the pitch tracker and both synth
branches work); rounds are interleaved and the fastest of each model kept, so the ratios against
the baseline come from one run on one machine. x real time = audio seconds / CPU seconds of the
calling thread (ONNX Runtime on one intra-op thread runs on it), which other processes on a
shared machine disturb less than wall time; the wall figure is printed too.

On a shared, loaded machine every figure drops (3-7x on the 2-core dev machine) but the ratio
to the baseline measured in the same run holds, so the table also gives each model's speed
relative to ``raspberry`` in TorchScript and the quiet-machine figure that ratio implies
(ratio x ``raspberry``'s x real time on a quiet core, ``BASELINE_QUIET_XRT``), beside the
targets.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

from tildekit.models.autoencoder import build_model
from tildekit.models.config import DDSPConfig, ModelConfig, load_profile
from tildekit.models.ddsp.model import DDSP

BUFFER = 2048
RATE = 48000
DDSP_PROFILES = ("ddsp", "ddsp-raspberry")
AUTOENCODER_PROFILES = ("raspberry", "causal", "default")  # the 48 kHz ones
BASELINE = "raspberry"
# x real time of the baseline in TorchScript on a quiet desktop core (models/profiles/raspberry.yaml: 76-79)
BASELINE_QUIET_XRT = 77.0
TARGETS = {"ddsp": 50.0, "ddsp-raspberry": 200.0}  # x real time on a quiet core, TorchScript
RUNTIMES = ("TorchScript", "ONNX Runtime")
BEFORE = " (before)"

Step = Callable[[np.ndarray], object]


def test_signal(seconds: float, rate: int = RATE) -> torch.Tensor:
    """A 220 Hz tone with 20 partials, vibrato and a noise floor: (1, 1, T), T a multiple of BUFFER."""
    n = int(seconds * rate) // BUFFER * BUFFER
    t = np.arange(n) / rate
    phase = 2 * np.pi * np.cumsum(220.0 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))) / rate
    tone = sum(np.sin(h * phase) / h for h in range(1, 21))
    noise = np.random.default_rng(0).standard_normal(n) * 0.01
    x = 0.3 * tone / np.abs(tone).max() + noise
    return torch.from_numpy(x.astype(np.float32)).view(1, 1, n)


def ddsp_module(profile: str) -> torch.nn.Module:
    from tildekit.export.ddsp_export import exportable

    torch.manual_seed(0)
    cfg = load_profile(profile).model
    assert isinstance(cfg, DDSPConfig)
    return exportable(DDSP(cfg, streaming=True)).module


def autoencoder_module(profile: str) -> torch.nn.Module:
    from tildekit.export.core import ExportCore

    torch.manual_seed(0)
    cfg = load_profile(profile).model
    assert isinstance(cfg, ModelConfig)
    return ExportCore(build_model(cfg, True)).eval()


def torchscript_step(module: torch.nn.Module) -> tuple[Step, torch.jit.ScriptModule]:
    scripted = torch.jit.script(copy.deepcopy(module))

    def step(x: np.ndarray) -> object:
        with torch.inference_mode():
            return scripted(torch.from_numpy(x))

    return step, scripted


def onnx_graph(module: torch.nn.Module) -> bytes:
    """The streaming forward graph at BUFFER samples, batch 1."""
    from tildekit.export.ddsp_export import method_table
    from tildekit.export.onnx_export import GraphShape, export_graph

    spec = method_table(module)["forward"] if isinstance(module, DDSP) else None  # ExportCore's are known
    return export_graph(module, "forward", True, GraphShape(BUFFER, False, 1), spec)[0]


def onnx_step(module: torch.nn.Module | bytes) -> Step:
    """onnxruntime on the streaming forward graph (``module``'s, or one already exported), batch 1,
    state fed back: every ``state_in.N`` input starts at zeros and takes ``state_out.N``."""
    from tildekit.export.onnx_runtime import INPUT, OUTPUT, STATE_IN, STATE_OUT, make_session

    session = make_session(module if isinstance(module, bytes) else onnx_graph(module), threads=1)
    dtypes = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64}
    states = [i for i in session.get_inputs() if i.name.startswith(STATE_IN)]
    feeds: dict[str, np.ndarray] = {i.name: np.zeros(i.shape, dtypes[i.type]) for i in states}
    names = {i.name for i in session.get_inputs()}
    for name, value in attribute_feeds(module).items():
        if name in names:
            feeds[name] = value
    outputs = [OUTPUT] + [STATE_OUT + i.name[len(STATE_IN):] for i in states]

    def step(x: np.ndarray) -> object:
        result = session.run(outputs, {**feeds, INPUT: x})
        for state, value in zip(states, result[1:]):
            feeds[state.name] = value
        return result[0]

    return step


def attribute_feeds(module: torch.nn.Module | bytes) -> dict[str, np.ndarray]:
    """Neutral values of the attribute inputs a graph may take (those it does not take are not fed)."""
    size = int(getattr(module, "latent_size", 0))
    return {"temperature": np.array(0.0, np.float32), "latent_bias": np.zeros(size, np.float32),
            "latent_scale": np.ones(size, np.float32)}


def save_ddsp(folder: str) -> None:
    """Each DDSP profile's scripted module and ONNX forward graph into ``folder`` (for ``--before``)."""
    for name in DDSP_PROFILES:
        module = ddsp_module(name)
        with open(os.path.join(folder, f"{name}.onnx"), "wb") as file:
            file.write(onnx_graph(module))
        torch.jit.save(torch.jit.script(module), os.path.join(folder, f"{name}.ts"))


def before_steps(root: str, folder: str) -> dict[tuple[str, str], Step]:
    """The DDSP models of the tildekit under ``root``, built by a subprocess, as timed steps."""
    environment = {**os.environ, "PYTHONPATH": root}
    subprocess.run([sys.executable, __file__, "--save-to", folder], env=environment, check=True)
    steps: dict[tuple[str, str], Step] = {}
    for name in DDSP_PROFILES:
        scripted = torch.jit.load(os.path.join(folder, f"{name}.ts"))

        def step(x: np.ndarray, scripted: torch.jit.ScriptModule = scripted) -> object:
            with torch.inference_mode():
                return scripted(torch.from_numpy(x))

        steps[name + BEFORE, RUNTIMES[0]] = step
        with open(os.path.join(folder, f"{name}.onnx"), "rb") as file:
            steps[name + BEFORE, RUNTIMES[1]] = onnx_step(file.read())
    return steps


def run_buffers(step: Step, x: np.ndarray) -> tuple[float, float]:
    """Wall and CPU seconds of this thread to play ``x`` buffer by buffer."""
    start, cpu = time.perf_counter(), time.thread_time()
    for i in range(0, x.shape[-1], BUFFER):
        step(np.ascontiguousarray(x[..., i:i + BUFFER]))
    return time.perf_counter() - start, time.thread_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="audio per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--autoencoders", nargs="*", default=list(AUTOENCODER_PROFILES),
                        help=f"RAVE-style profiles to time beside DDSP ({BASELINE} is always one: the baseline)")
    parser.add_argument("--profile", action="store_true", help="print each scripted model's slowest operators")
    parser.add_argument("--parts", action="store_true", help="print each DDSP part's time and operator count")
    parser.add_argument("--before", metavar="OLD", help="a folder holding another tildekit package: its DDSP "
                        "models are timed beside this version's")
    parser.add_argument("--save-to", metavar="FOLDER", help=argparse.SUPPRESS)  # --before's subprocess
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.save_to:
        save_ddsp(args.save_to)
        return
    x = test_signal(args.seconds).numpy()
    seconds = x.shape[-1] / RATE

    from tildekit.export.target_onnx import OnnxTarget

    families = {**{name: "ddsp" for name in DDSP_PROFILES},
                **{name: "autoencoder" for name in dict.fromkeys([BASELINE, *args.autoencoders])}}
    modules = {name: ddsp_module(name) if family == "ddsp" else autoencoder_module(name)
               for name, family in families.items()}
    steps: dict[tuple[str, str], Step] = {}
    scripted: dict[str, torch.jit.ScriptModule] = {}
    for name, module in modules.items():
        steps[name, RUNTIMES[0]], scripted[name] = torchscript_step(module)
        if OnnxTarget(BUFFER).takes(families[name]):
            steps[name, RUNTIMES[1]] = onnx_step(module)
        else:
            print(f"{name}: the ONNX target does not take the {families[name]} family")
    if args.before:
        with tempfile.TemporaryDirectory() as folder:
            steps.update(before_steps(os.path.abspath(args.before), folder))
    # each DDSP profile after its previous version, then the baselines
    rows = [row for name in modules for row in (name + BEFORE, name) if any(key[0] == row for key in steps)]

    for step in steps.values():  # warm up: the JIT's profiling runs, allocator, caches
        run_buffers(step, x[..., : 8 * BUFFER])
    best = {key: [math.inf, math.inf] for key in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            wall, cpu = run_buffers(step, x)
            best[key] = [min(best[key][0], wall), min(best[key][1], cpu)]

    print(f"forward at {RATE} Hz, buffer {BUFFER}, 1 thread, {seconds:.1f} s of audio, best of {args.rounds}; "
          f"torch {torch.__version__}, onnxruntime {onnxruntime_version()}")
    print(f"x RT: x real time of the thread's CPU time (wall time in brackets); vs: CPU-time speed relative to "
          f"{BASELINE} in TorchScript, this run; quiet: the x RT that ratio implies on a quiet core, vs x "
          f"{BASELINE}'s {BASELINE_QUIET_XRT:g}x there (an estimate, not a measurement)")
    header = "".join(f"   {runtime + ': ms/buffer, x RT (wall), vs, quiet':>52}" for runtime in RUNTIMES)
    print(f"{'model':<26}{header}")
    buffers = x.shape[-1] / BUFFER
    base = best[BASELINE, RUNTIMES[0]][1]
    for name in rows:
        cells = []
        for runtime in RUNTIMES:
            if (name, runtime) not in best:
                cells.append(f"   {'-':>52}")
                continue
            wall, cpu = best[name, runtime]
            cells.append(f"   {1000 * cpu / buffers:15.3f} {seconds / cpu:8.1f} ({seconds / wall:6.1f}) "
                         f"{base / cpu:8.2f} {BASELINE_QUIET_XRT * base / cpu:8.1f}")
        print(f"{name:<26}{''.join(cells)}")
    print(f"\ntargets (TorchScript, quiet core), as ratios to {BASELINE} in this run:")
    for name, target in TARGETS.items():
        ratio = base / best[name, RUNTIMES[0]][1]
        needed = target / BASELINE_QUIET_XRT
        print(f"  {name:<16} {target:5.0f}x = {needed:.2f} x {BASELINE}: measured {ratio:.2f} "
              f"(quiet estimate {BASELINE_QUIET_XRT * ratio:.1f}x), {'met' if ratio >= needed else 'not met'}")

    if args.parts:
        print_parts(modules, scripted, x)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, module in scripted.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode():
                for i in range(0, 16 * BUFFER, BUFFER):
                    module(torch.from_numpy(np.ascontiguousarray(x[..., i:i + BUFFER])))
            print(f"\n{name}: 16 buffers")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def operator_count(module: Callable[..., object], *inputs: torch.Tensor) -> int:
    """The operators one call of a scripted function dispatches (those the interpreter calls, not
    the ones they call inside)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(3):  # past the JIT's profiling runs
            module(*inputs)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            module(*inputs)
    return sum(1 for event in prof.events() if event.cpu_parent is not None and event.cpu_parent.cpu_parent is None)


def call_seconds(module: Callable[..., object], *inputs: torch.Tensor, calls: int = 100, rounds: int = 5) -> float:
    """The fastest of ``rounds`` averages over ``calls`` calls, in CPU seconds of this thread."""
    best = math.inf
    with torch.inference_mode():
        for _ in range(10):
            module(*inputs)
        for _ in range(rounds):
            cpu = time.thread_time()
            for _ in range(calls):
                module(*inputs)
            best = min(best, (time.thread_time() - cpu) / calls)
    return best


def print_parts(modules: dict[str, torch.nn.Module], scripted: dict[str, torch.jit.ScriptModule],
                x: np.ndarray) -> None:
    """Each DDSP profile's forward cut into its parts, each scripted alone and called on the
    inputs it gets in ``forward`` (a buffer of the test signal), with its operator count; and the
    operator count of every model's forward."""
    buffer = torch.from_numpy(np.ascontiguousarray(x[..., 4 * BUFFER: 5 * BUFFER]))
    print(f"\noperators per forward call (buffer {BUFFER}):")
    for name, compiled in scripted.items():
        print(f"  {name:<16} {operator_count(compiled, buffer):5d}")
    for name, module in modules.items():
        if not isinstance(module, DDSP):
            continue
        with torch.inference_mode():
            controls = module.features(buffer)
            amplitudes, magnitudes = module.decoder(controls[:, 0], controls[:, 1])
        parts = {"features": (module.analysis, (buffer,)),
                 "decoder": (module.decoder, (controls[:, 0], controls[:, 1])),
                 "harmonic": (module.harmonic, (controls[:, 0], amplitudes)), "noise": (module.noise, (magnitudes,)),
                 "forward": (module, (buffer,))}
        print(f"\n{name}: part, ms per buffer (CPU), operators, us per operator")
        for part, (layer, inputs) in parts.items():
            alone = torch.jit.script(copy.deepcopy(layer))
            seconds = call_seconds(alone, *inputs)
            count = operator_count(alone, *inputs)
            print(f"  {part:<10} {1000 * seconds:8.3f} {count:6d} {1e6 * seconds / count:8.1f}")


def onnxruntime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


if __name__ == "__main__":
    main()

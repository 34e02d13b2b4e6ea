"""Speed of the DDSP profiles' streaming ``forward`` beside the RAVE-style autoencoders, in
TorchScript (what nn~ runs) and ONNX Runtime, from one run.

    python benchmarks/ddsp_speed.py                              # 48 kHz, buffer 2048, one thread
    python benchmarks/ddsp_speed.py --autoencoders raspberry     # fewer baselines: a shorter run
    python benchmarks/ddsp_speed.py --profile                    # also each scripted model's slowest operators

Every model is built with random weights, made streaming, wrapped as exported (the autoencoder
in ``ExportCore``, DDSP through its export adapter) and scripted; its ONNX graph is the
streaming export at the benchmark's buffer (time and batch fixed, state as explicit inputs and
outputs) run by onnxruntime on one thread. Each round times every model on the same audio (a
few seconds of a harmonic tone with vibrato and noise, so the pitch tracker and both synth
branches work); rounds are interleaved and the fastest of each model kept, so the ratios against
the baseline come from one run on one machine. x real time = audio seconds / CPU seconds of the
calling thread (ONNX Runtime on one intra-op thread runs on it), which other processes on a
shared machine disturb less than wall time; the wall figure is printed too.
"""

from __future__ import annotations

import argparse
import copy
import math
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
RUNTIMES = ("TorchScript", "ONNX Runtime")

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


def onnx_step(module: torch.nn.Module) -> Step:
    """onnxruntime on the streaming forward graph at BUFFER samples, batch 1, state fed back."""
    from tildekit.export.ddsp_export import method_table
    from tildekit.export.onnx_export import GraphShape, export_graph
    from tildekit.export.onnx_runtime import OUTPUT, make_session

    spec = method_table(module)["forward"] if isinstance(module, DDSP) else None  # ExportCore's are known
    data, specs = export_graph(module, "forward", True, GraphShape(BUFFER, False, 1), spec)
    session = make_session(data, threads=1)
    names = {i.name for i in session.get_inputs()}
    feeds: dict[str, np.ndarray] = {s.name: s.zeros(1) for s in specs}
    for name, value in attribute_feeds(module).items():
        if name in names:
            feeds[name] = value
    outputs = [OUTPUT] + [s.output_name for s in specs]

    def step(x: np.ndarray) -> object:
        result = session.run(outputs, {**feeds, "x": x})
        for spec, value in zip(specs, result[1:]):
            feeds[spec.name] = value
        return result[0]

    return step


def attribute_feeds(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """Neutral values of the attribute inputs a graph may take (those it does not take are not fed)."""
    size = int(getattr(module, "latent_size", 0))
    return {"temperature": np.array(0.0, np.float32), "latent_bias": np.zeros(size, np.float32),
            "latent_scale": np.ones(size, np.float32)}


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
    args = parser.parse_args()
    torch.set_num_threads(1)
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

    for step in steps.values():  # warm up: the JIT's profiling runs, allocator, caches
        run_buffers(step, x[..., : 8 * BUFFER])
    best = {key: [math.inf, math.inf] for key in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            wall, cpu = run_buffers(step, x)
            best[key] = [min(best[key][0], wall), min(best[key][1], cpu)]

    print(f"forward at {RATE} Hz, buffer {BUFFER}, 1 thread, {seconds:.1f} s of audio, best of {args.rounds}; "
          f"torch {torch.__version__}, onnxruntime {onnxruntime_version()}")
    print("x RT: x real time of the thread's CPU time (wall time in brackets); vs: CPU-time speed "
          f"relative to {BASELINE} in TorchScript")
    header = "".join(f"   {runtime + ': ms/buffer, x RT (wall), vs':>44}" for runtime in RUNTIMES)
    print(f"{'model':<16}{header}")
    buffers = x.shape[-1] / BUFFER
    base = best[BASELINE, RUNTIMES[0]][1]
    for name in modules:
        cells = []
        for runtime in RUNTIMES:
            if (name, runtime) not in best:
                cells.append(f"   {'-':>44}")
                continue
            wall, cpu = best[name, runtime]
            cells.append(f"   {1000 * cpu / buffers:15.3f} {seconds / cpu:8.1f} ({seconds / wall:6.1f}) "
                         f"{base / cpu:10.2f}")
        print(f"{name:<16}{''.join(cells)}")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, module in scripted.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode():
                for i in range(0, 16 * BUFFER, BUFFER):
                    module(torch.from_numpy(np.ascontiguousarray(x[..., i:i + BUFFER])))
            print(f"\n{name}: 16 buffers")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def onnxruntime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


if __name__ == "__main__":
    main()

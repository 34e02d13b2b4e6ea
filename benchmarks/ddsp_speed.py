"""Speed of the DDSP profiles' scripted streaming ``forward``, beside the raspberry autoencoder.

    python benchmarks/ddsp_speed.py                  # 48 kHz, buffer 2048, one thread
    python benchmarks/ddsp_speed.py --profile        # also the slowest operators of each model

Every model is built with random weights, made streaming, wrapped as exported (the autoencoder
in ``ExportCore``) and scripted; each round times every model on the same audio (a few seconds
of a harmonic tone with vibrato and noise, so the pitch tracker and both synth branches work),
rounds are interleaved and the fastest of each model kept, so the ratios against the baseline
come from one run on one machine. x real time = audio seconds / wall seconds, one thread.
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
from tildekit.models.config import load_profile
from tildekit.models.ddsp.model import DDSP

BUFFER = 2048
RATE = 48000
DDSP_PROFILES = ("ddsp", "ddsp-raspberry")
BASELINE = "raspberry"


def test_signal(seconds: float, rate: int = RATE) -> torch.Tensor:
    """A 220 Hz tone with 20 partials, vibrato and a noise floor: (1, 1, T), T a multiple of BUFFER."""
    n = int(seconds * rate) // BUFFER * BUFFER
    t = np.arange(n) / rate
    phase = 2 * np.pi * np.cumsum(220.0 * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))) / rate
    tone = sum(np.sin(h * phase) / h for h in range(1, 21))
    noise = np.random.default_rng(0).standard_normal(n) * 0.01
    x = 0.3 * tone / np.abs(tone).max() + noise
    return torch.from_numpy(x.astype(np.float32)).view(1, 1, n)


def scripted_ddsp(profile: str) -> torch.jit.ScriptModule:
    torch.manual_seed(0)
    return torch.jit.script(DDSP(load_profile(profile).model, streaming=True).eval())


def scripted_baseline() -> torch.jit.ScriptModule:
    from tildekit.export.core import ExportCore

    torch.manual_seed(0)
    model = build_model(load_profile(BASELINE).model, True)
    return torch.jit.script(ExportCore(model).eval())


def run_buffers(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[float, float]:
    """Wall and CPU seconds of this thread to play ``x`` buffer by buffer.

    On a shared machine the wall time includes waiting for a core; the thread's CPU time does
    not, so it is the steadier figure when other work runs (both are printed).
    """
    start, cpu = time.perf_counter(), time.thread_time()
    with torch.inference_mode():
        for i in range(0, x.shape[-1], BUFFER):
            forward(x[..., i:i + BUFFER])
    return time.perf_counter() - start, time.thread_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="audio per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print each model's slowest operators")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = test_signal(args.seconds)
    seconds = x.shape[-1] / RATE

    models: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    scripted: dict[str, torch.jit.ScriptModule] = {}
    for name in DDSP_PROFILES:
        scripted[name] = scripted_ddsp(name)
    scripted[f"{BASELINE} (autoencoder)"] = scripted_baseline()
    for name, module in scripted.items():
        models[f"{name} scripted"] = module.forward

    for forward in models.values():  # warm up: the JIT's profiling runs, allocator, caches
        run_buffers(forward, x[..., : 8 * BUFFER])
    best = {name: [math.inf, math.inf] for name in models}
    for _ in range(args.rounds):
        for name, forward in models.items():
            wall, cpu = run_buffers(forward, x)
            best[name] = [min(best[name][0], wall), min(best[name][1], cpu)]

    wall_base, cpu_base = best[f"{BASELINE} (autoencoder) scripted"]
    print(f"forward at {RATE} Hz, buffer {BUFFER}, 1 thread, {seconds:.1f} s of audio, best of {args.rounds}; "
          f"torch {torch.__version__}")
    print(f"{'':<34} {'--------- wall time ---------':>32}   {'------ CPU time of the thread ------':>36}")
    print(f"{'model':<34} {'ms/buffer':>9} {'x real time':>11} {'vs ' + BASELINE:>12}   "
          f"{'ms/buffer':>9} {'x real time':>11} {'vs ' + BASELINE:>12}")
    buffers = x.shape[-1] / BUFFER
    for name, (wall, cpu) in best.items():
        print(f"{name:<34} {1000 * wall / buffers:9.3f} {seconds / wall:11.1f} {wall_base / wall:12.2f}   "
              f"{1000 * cpu / buffers:9.3f} {seconds / cpu:11.1f} {cpu_base / cpu:12.2f}")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for name, module in scripted.items():
            module = copy.deepcopy(module)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run_buffers(module.forward, x[..., : 16 * BUFFER])
            print(f"\n{name}: 16 buffers")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()

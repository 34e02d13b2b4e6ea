"""ONNX Runtime vs TorchScript, streaming ``forward`` at one buffer size, one thread.

For each profile (random weights) this builds the streaming ExportCore, its TorchScript
(what nn~ runs; also frozen, and frozen + optimize_for_inference when they stay correct) and
its ONNX graphs (dynamic time; time fixed to the buffer; time and batch fixed), checks they
agree on the same buffers, then times them interleaved (one call of each per round, so load on
the machine hits all alike) and prints x-real-time (audio seconds per second of compute) and
the speed ratio to the plain TorchScript, for the best and the median call.

    python benchmarks/onnx_vs_torchscript.py [--profiles raspberry default] [--buffer 2048] [--rounds 40]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from tildekit.export.core import ExportCore, untrained_core
from tildekit.export.onnx_export import GraphShape, export_graph
from tildekit.export.onnx_reference import CoreMethods
from tildekit.export.onnx_runtime import OUTPUT, make_session

Step = Callable[[np.ndarray], np.ndarray]


def torchscript_steps(core: ExportCore, buffer: int) -> dict[str, Step]:
    variants: dict[str, torch.jit.ScriptModule] = {"torchscript": torch.jit.script(CoreMethods(core)).eval()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            frozen = torch.jit.freeze(torch.jit.script(CoreMethods(core)).eval(),
                                      preserved_attrs=["encode", "decode", "reset_state"])
            variants["ts frozen"] = frozen
            variants["ts frozen+ofi"] = torch.jit.optimize_for_inference(
                torch.jit.freeze(torch.jit.script(CoreMethods(core)).eval(), preserved_attrs=["reset_state"]))
        except Exception as exc:  # report and go on with the plain script
            print(f"  freeze/optimize_for_inference failed: {' '.join(str(exc).split())[:160]}")

    def step_of(module: torch.jit.ScriptModule) -> Step:
        def step(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(x)).numpy()
        return step

    return {name: step_of(module) for name, module in variants.items()}


def onnx_step(core: ExportCore, buffer: int, dynamic_time: bool, batch: int | None = None) -> Step:
    data, specs = export_graph(core, "forward", True, GraphShape(buffer, dynamic_time, batch))
    session = make_session(data, threads=1)
    k = core.latent_size
    feeds = {"temperature": np.array(0.0, np.float32), "latent_bias": np.zeros(k, np.float32),
             "latent_scale": np.ones(k, np.float32)}
    feeds.update({s.name: s.zeros(1) for s in specs})
    outputs = [OUTPUT] + [s.output_name for s in specs]

    def step(x: np.ndarray) -> np.ndarray:
        result = session.run(outputs, {**feeds, "x": x})
        for spec, value in zip(specs, result[1:]):
            feeds[spec.name] = value
        return result[0]

    return step


def agree(steps: dict[str, Step], signal: np.ndarray, buffer: int) -> dict[str, float]:
    """Max |difference| from the plain TorchScript over consecutive buffers (all from zero state)."""
    outputs = {name: np.concatenate([step(signal[..., i: i + buffer]) for i in range(0, signal.shape[-1], buffer)], -1)
               for name, step in steps.items()}
    reference = outputs["torchscript"]
    return {name: float(np.max(np.abs(out - reference))) for name, out in outputs.items()}


def bench_profile(profile: str, buffer: int, rounds: int) -> None:
    core = untrained_core(profile)
    print(f"\n== {profile}: compression {core.compression}, latent {core.latent_size}, "
          f"{sum(p.numel() for p in core.parameters()) / 1e6:.2f} M parameters, buffer {buffer}, 1 thread")
    make_steps = lambda: {**torchscript_steps(core, buffer),  # noqa: E731 (fresh state for each phase)
                          "onnx dynamic time": onnx_step(core, buffer, True),
                          "onnx fixed time *": onnx_step(core, buffer, False),
                          "onnx fixed shape": onnx_step(core, buffer, False, 1)}
    rng = np.random.default_rng(0)
    signal = (0.3 * rng.standard_normal((1, core.channels, 4 * buffer))).astype(np.float32)
    errors = agree(make_steps(), signal, buffer)
    steps = make_steps()
    x = signal[..., :buffer].copy()
    for step in steps.values():  # warm up (TorchScript profiles its first calls)
        for _ in range(5):
            step(x)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step(x)
            times[name].append(time.perf_counter() - start)
    seconds = buffer / core.sample_rate
    # the minimum is the run least disturbed by other processes; the median shows typical load
    best = {name: min(values) for name, values in times.items()}
    typical = {name: statistics.median(values) for name, values in times.items()}
    print(f"  {'':19s} {'best ms':>8s} {'x RT':>6s} {'vs TS':>6s}   {'median ms':>9s} {'x RT':>6s} {'vs TS':>6s}")
    for name in times:
        valid = "ok" if errors[name] <= 1e-4 else f"DIFFERS by {errors[name]:.1e}"
        print(f"  {name:19s} {1000 * best[name]:8.2f} {seconds / best[name]:6.1f} "
              f"{best['torchscript'] / best[name]:5.2f}x   {1000 * typical[name]:9.2f} "
              f"{seconds / typical[name]:6.1f} {typical['torchscript'] / typical[name]:5.2f}x   "
              f"(max |diff| {errors[name]:.1e} {valid})")


def summary_note() -> None:
    print("\n* = what `export_onnx` writes by default (time fixed to the buffer, dynamic batch).\n"
          "On a busy machine trust the best column: the median mixes in other processes' load.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["raspberry", "default"])
    parser.add_argument("--buffer", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for profile in args.profiles:
        bench_profile(profile, args.buffer, args.rounds)
    summary_note()


if __name__ == "__main__":
    main()

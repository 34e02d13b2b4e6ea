"""Per-profile speed, size and delay of the streaming model (random weights), one thread.

Prints, for each profile: parameters, GFLOP per second of audio, x-real-time at 48 kHz and
44.1 kHz (buffer 2048, TorchScript, 1 thread), achieved GFLOP/s, and delay in samples / ms.
Compare the figures with RAVE 2.3.1's streaming export on this machine (foundation issue):
v2 1.7x, v2_small 4.5x, onnx 10.8x, raspberry 32.7x at 44.1 kHz; timings of small models
vary ±20% between runs, so read ratios measured in one run. Profiles may be names or YAML paths.

    python benchmarks/models.py [--profiles small,causal,raspberry,default] [--seconds 3]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from tildekit.export.core import ExportCore
from tildekit.models.autoencoder import build_model
from tildekit.models.config import available_profiles, load_profile

BUFFER = 2048


def flops_per_buffer(core: ExportCore, buffer: int) -> float:
    x = torch.randn(1, core.channels, buffer)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        core(x)
    core.reset_state()
    return float(counter.get_total_flops())


def seconds_per_buffer(module: torch.jit.ScriptModule, channels: int, buffer: int, budget: float) -> float:
    """Mean time per buffer of the fastest of 5 blocks: the block least disturbed by other
    processes (this machine is shared; a plain mean mixes their load in)."""
    x = torch.randn(1, channels, buffer) * 0.1
    blocks = []
    with torch.no_grad():
        for _ in range(3):
            module(x)
        for _ in range(5):
            runs, start = 0, time.perf_counter()
            while time.perf_counter() - start < budget / 5 or runs < 3:
                module(x)
                runs += 1
            blocks.append((time.perf_counter() - start) / runs)
    return min(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", default=",".join(available_profiles()))
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per profile")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    header = (f"{'profile':<10} {'params':>8} {'GFLOP/s-audio':>13} {'x-rt 48k':>9} {'x-rt 44.1k':>10} "
              f"{'GFLOP/s':>8} {'delay':>7} {'ms@48k':>7} {'rate':>6}")
    print(f"buffer {BUFFER}, 1 thread, TorchScript, torch {torch.__version__}")
    print(header)
    for name in args.profiles.split(","):
        cfg = load_profile(name).model
        name = Path(name).stem  # a profile may be given as a YAML path
        model = build_model(cfg, streaming=True)
        core = ExportCore(model)
        params = sum(p.numel() for p in core.parameters())
        flops = flops_per_buffer(core, BUFFER)
        scripted = torch.jit.script(core)
        per_buffer = seconds_per_buffer(scripted, cfg.channels, BUFFER, args.seconds)
        gflop_audio = flops / 1e9 * cfg.sample_rate / BUFFER
        x48 = BUFFER / 48000 / per_buffer
        x44 = BUFFER / 44100 / per_buffer
        achieved = flops / 1e9 / per_buffer
        print(f"{name:<10} {params / 1e6:>7.2f}M {gflop_audio:>13.2f} {x48:>8.1f}x {x44:>9.1f}x "
              f"{achieved:>8.1f} {core.delay:>7d} {1000 * core.delay / cfg.sample_rate:>7.1f} "
              f"{cfg.sample_rate // 1000:>5}k")


if __name__ == "__main__":
    main()

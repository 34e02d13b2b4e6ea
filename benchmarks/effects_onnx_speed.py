"""Speed of the effect models in ONNX Runtime against their TorchScript (what nn~ runs), in one
run: 48 kHz, one thread, batch 1, the ONNX graph exported at the buffer it is played at.

    python benchmarks/effects_onnx_speed.py [--buffer 2048] [--rounds 5] [--seconds 0.5]

Every profile's FiLM model has random weights and the overdrive's knobs; rounds are interleaved
and the fastest round of each runtime is kept, so the ratio (ONNX over TorchScript speed) comes
from one run on one machine. x real time = audio seconds / wall seconds. The ONNX graph
computes every sample of the knob smoother (a trace cannot skip a smoother at rest, as the
TorchScript does), so a knob that moves costs TorchScript what it always costs ONNX.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tildekit.export import effect_export
from tildekit.export.onnx_runtime import OnnxStreamer
from tildekit.export.target_onnx import export_onnx
from tildekit.models.config import EffectConfig, load_profile
from tildekit.models.effects.model import build_effect_model
from tildekit.models.effects.reference import OVERDRIVE

RATE = 48000
PROFILES = ("effect-tcn", "effect-raspberry", "effect-gru")


def runtimes(profile: str, buffer: int, folder: Path) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    cfg = load_profile(profile).model
    assert isinstance(cfg, EffectConfig)
    torch.manual_seed(0)
    export = effect_export.exportable(build_effect_model(cfg, OVERDRIVE.knobs, streaming=True))
    card = effect_export.card(export, profile.replace("-", "_"), profile)
    export_onnx(export.module, card, folder, card.name, buffer=buffer, batch=1, quick=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(export.module)
    streamer = OnnxStreamer(folder / f"{card.name}.onnx")

    def torchscript(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return scripted(torch.from_numpy(x)).numpy()

    return {"TorchScript": torchscript, "ONNX Runtime": streamer.process}


def seconds_for(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, buffer: int) -> float:
    start = time.perf_counter()
    for i in range(0, x.shape[-1], buffer):
        run(x[..., i:i + buffer])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buffer", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--profiles", default=",".join(PROFILES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    samples = int(args.seconds * RATE) // args.buffer * args.buffer
    x = (0.3 * np.random.default_rng(0).standard_normal((1, 1, samples))).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        models = {p: runtimes(p, args.buffer, Path(tmp)) for p in args.profiles.split(",")}
        best: dict[tuple[str, str], float] = {}
        for _ in range(args.rounds):
            for profile, runs in models.items():
                for name, run in runs.items():
                    run(x[..., :args.buffer])  # warm
                    key = (profile, name)
                    best[key] = min(best.get(key, float("inf")), seconds_for(run, x, args.buffer))
    audio = samples / RATE
    print(f"buffer {args.buffer}, one thread, batch 1; x real time (best of {args.rounds} rounds)")
    print("| profile | TorchScript | ONNX Runtime | ONNX / TorchScript |")
    print("|---|---|---|---|")
    for profile in models:
        ts, ort = audio / best[profile, "TorchScript"], audio / best[profile, "ONNX Runtime"]
        print(f"| {profile} | {ts:.1f} | {ort:.1f} | {ort / ts:.2f} |")


if __name__ == "__main__":
    main()

"""Effect models on reference effects rendered here: {TCN, GRU} x {FiLM, concat}, one run.

For each effect (overdrive, compressor): renders training pairs with random knob settings per
segment and held-out pairs with knob sweeps (one knob at a time over its range, the others at
their defaults; other dry audio, so no held-out pair was seen in training), trains each of
the four models for ``--steps`` steps from its shipped profile (``effect-tcn``,
``effect-gru``, conditioning switched by ``model.conditioning``; both GRUs at the profile's
16 hidden units), then prints on held-out pairs: L1, multi-resolution STFT, |LUFS
diff|, crest factor, RMS and transient differences (dB), ESR, parameters, and x-real-time of
the scripted streaming model (48 kHz, one thread, buffer 512) and of its ONNX export (the
graph exported at that buffer, batch 1, in ONNX Runtime: what the headless engine and the Pi
bundle run) beside each row, each with its ratio to the ``raspberry`` autoencoder timed just
after it (the figure that survives machine load). See docs/effects.md.

    python benchmarks/effects.py [--steps 1500] [--segments 64] [--effects overdrive,compressor]
                                 [--models tcn-film,gru-film] [--set train.learning_rate=0.002 ...]
    python benchmarks/effects.py --quick     # 150 steps, 32 segments, short windows: minutes
    python benchmarks/effects.py --quick --steps 1500   # the short windows, more steps

The learning rate follows the profile's cosine over ``--steps`` (``train.max_steps`` is set to it).
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
from tildekit.models.config import ModelConfig, load_profile
from tildekit.models.effects.evaluate import effect_metrics
from tildekit.models.effects.model import EffectModel, build_effect_model
from tildekit.models.effects.pairs import render_pairs, sweep_knobs
from tildekit.models.effects.reference import EFFECTS
from tildekit.models.effects.train import EffectTrainer

BUFFER = 512
RATE = 48000
BASELINE, BASELINE_BUFFER = "raspberry", 2048
MODELS = [("tcn", "film"), ("tcn", "concat"), ("gru", "film"), ("gru", "concat")]


def best_factor(run: Callable[[], object], buffer: int, seconds: float, rounds: int) -> float:
    """x real time of ``run`` (one buffer per call) at 48 kHz: audio seconds / CPU seconds of
    this thread, the best of ``rounds`` (CPU time and the best round: what other processes
    disturb least; ONNX Runtime on one intra-op thread computes in the calling thread)."""
    count = max(1, int(seconds * RATE / buffer))
    for _ in range(5):
        run()
    best = 0.0
    for _ in range(rounds):
        began = time.thread_time()
        for _ in range(count):
            run()
        best = max(best, count * buffer / RATE / (time.thread_time() - began))
    return best


def realtime_factor(module: torch.nn.Module, buffer: int = BUFFER, seconds: float = 2.0, rounds: int = 3) -> float:
    """x real time of a scripted module (what nn~ and Neutone run)."""
    scripted = torch.jit.script(module)
    x = torch.randn(1, 1, buffer) * 0.1
    with torch.no_grad():
        return best_factor(lambda: scripted(x), buffer, seconds, rounds)


def onnx_realtime_factor(model: EffectModel, buffer: int = BUFFER, seconds: float = 2.0, rounds: int = 3) -> float:
    """x real time of the model's ONNX export (fixed buffer, batch 1) in ONNX Runtime, one thread."""
    export = effect_export.exportable(model)
    card = effect_export.card(export, "bench", "bench")
    x = (np.random.default_rng(0).standard_normal((1, 1, buffer)) * 0.1).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(export.module, card, folder, card.name, buffer=buffer, batch=1, quick=True)
        streamer = OnnxStreamer(Path(folder) / f"{card.name}.onnx")
        return best_factor(lambda: streamer.process(x), buffer, seconds, rounds)


def baseline_factor() -> float:
    """x real time of the ``raspberry`` autoencoder's exported streaming core at buffer 2048
    (random weights): the yardstick measured beside every row, so rows of runs at different
    machine loads compare as ratios to it."""
    from tildekit.export.core import ExportCore
    from tildekit.models.autoencoder import build_model

    torch.manual_seed(0)
    cfg = load_profile(BASELINE).model
    assert isinstance(cfg, ModelConfig)
    core = ExportCore(build_model(cfg, True)).eval()
    return realtime_factor(core, BASELINE_BUFFER, seconds=2.0)


def build_effect_model_like(model: EffectModel) -> EffectModel:
    stream = build_effect_model(model.cfg, model.knobs, streaming=True).eval()
    stream.load_state_dict(model.state_dict())
    return stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="training steps per model (1500; --quick: 150)")
    parser.add_argument("--segments", type=int, default=64, help="training segments per effect")
    parser.add_argument("--quick", action="store_true",
                        help="150 steps on 32 segments, batch 4 of 2048 samples (+512 warmup)")
    parser.add_argument("--seconds", type=float, default=0.5, help="length of a training segment")
    parser.add_argument("--sweep", type=int, default=3, help="held-out values per knob")
    parser.add_argument("--effects", default="overdrive,compressor")
    parser.add_argument("--models", default=",".join(f"{c}-{k}" for c, k in MODELS),
                        help="comma-separated subset of " + ", ".join(f"{c}-{k}" for c, k in MODELS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.segments = args.steps or 150, 32
        args.overrides = ["train.batch_size=4", "train.window=2048", "train.warmup=512",
                          "train.stft_scales=[256, 1024, 2048]", *args.overrides]
    args.steps = args.steps or 1500
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.jit.script's notice

    header = (f"{'effect':<11}{'model':<12}{'L1':>8}{'STFT':>7}{'LUFS':>6}{'crest':>7}{'RMS':>6}"
              f"{'trans':>7}{'ESR':>7}{'params':>8}{'x-rt':>7}{'/rasp':>7}{'onnx':>7}{'/rasp':>7}{'s/step':>8}")
    rows = []
    for name in args.effects.split(","):
        effect = EFFECTS[name]
        began = time.perf_counter()
        pairs = render_pairs(effect, args.segments, args.seconds, seed=0)
        held = render_pairs(effect, 0, 1.0, seed=1, settings=sweep_knobs(effect.knobs, args.sweep))
        print(f"{name}: rendered {len(pairs)} training and {len(held)} held-out pairs in "
              f"{time.perf_counter() - began:.1f} s", flush=True)
        for core, conditioning in (m.split("-") for m in args.models.split(",")):
            profile = load_profile(f"effect-{core}", [f"model.conditioning={conditioning}",
                                                      f"train.max_steps={args.steps}", *args.overrides])
            with tempfile.TemporaryDirectory() as run_dir:
                trainer = EffectTrainer(pairs, Path(run_dir), profile, None)
                # every training segment trains: the held-out pairs are the separate sweep set
                trainer.train_segments = np.arange(len(pairs))
                windows = trainer.windows(args.steps * profile.train.batch_size)
                began = time.perf_counter()
                for step in range(args.steps):
                    items = [windows[step * profile.train.batch_size + i] for i in range(profile.train.batch_size)]
                    dry, wet, knobs = (torch.stack(parts) for parts in zip(*items))
                    trainer.train_step(dry, wet, knobs)
                    trainer.step = step + 1
                per_step = (time.perf_counter() - began) / args.steps
                model = trainer.model.eval()
            with torch.no_grad():
                output = model.process(torch.from_numpy(held.dry).unsqueeze(1),
                                       torch.from_numpy(held.values))[:, 0].numpy()
            metrics = effect_metrics(held.wet, output, held.sample_rate)
            params = sum(p.numel() for p in model.parameters())
            speed = realtime_factor(build_effect_model_like(model))
            onnx_speed = onnx_realtime_factor(build_effect_model_like(model))
            base = baseline_factor()
            row = (f"{name:<11}{core + '-' + conditioning:<12}{metrics['l1']:>8.4f}{metrics['stft']:>7.3f}"
                   f"{metrics['lufs']:>6.2f}{metrics['crest']:>7.2f}{metrics['rms']:>6.2f}"
                   f"{metrics['transient']:>7.2f}{metrics['esr']:>7.3f}{params:>8}{speed:>7.1f}{speed / base:>7.3f}"
                   f"{onnx_speed:>7.1f}{onnx_speed / base:>7.3f}"
                   f"{per_step:>8.2f}")
            rows.append(row)
            print(row, flush=True)
    print(f"\n{args.steps} steps per model; held-out: knob sweeps ({args.sweep} values per knob), 1 s each; "
          f"x-rt: scripted streaming, 48 kHz, 1 thread, buffer {BUFFER}, thread CPU time; /rasp: x-rt over the "
          f"{BASELINE} autoencoder's (buffer {BASELINE_BUFFER}) measured just after it; onnx: the ONNX export "
          f"(buffer {BUFFER}, batch 1) in ONNX Runtime, one thread\n")
    print(header)
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()

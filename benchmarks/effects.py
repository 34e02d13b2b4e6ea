"""Effect models on reference effects rendered here: {TCN, GRU} x {FiLM, concat}, one run.

For each effect (overdrive, compressor): renders training pairs with random knob settings per
segment and held-out pairs with knob sweeps (one knob at a time over its range, the others at
their defaults; other dry audio, so no held-out pair was seen in training), trains each of
the four models for ``--steps`` steps from its shipped profile (``effect-tcn``,
``effect-gru``, conditioning switched by ``model.conditioning``), then prints on held-out
pairs: L1, multi-resolution STFT, |LUFS diff|, crest factor, RMS and transient differences
(dB), ESR, parameters, and x-real-time of the scripted streaming model (48 kHz, one thread,
buffer 512) beside each row. See docs/effects.md.

    python benchmarks/effects.py [--steps 1500] [--segments 64] [--effects overdrive,compressor]
                                 [--models tcn-film,gru-film] [--set train.learning_rate=0.002 ...]
    python benchmarks/effects.py --quick     # 150 steps, 32 segments, short windows: minutes

The learning rate follows the profile's cosine over ``--steps`` (``train.max_steps`` is set to it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from tildekit.models.config import load_profile
from tildekit.models.effects.evaluate import effect_metrics
from tildekit.models.effects.model import EffectModel, build_effect_model
from tildekit.models.effects.pairs import render_pairs, sweep_knobs
from tildekit.models.effects.reference import EFFECTS
from tildekit.models.effects.train import EffectTrainer

BUFFER = 512
MODELS = [("tcn", "film"), ("tcn", "concat"), ("gru", "film"), ("gru", "concat")]


def realtime_factor(model: EffectModel, seconds: float = 2.0) -> float:
    stream = build_effect_model_like(model)
    scripted = torch.jit.script(stream)
    x = torch.randn(1, 1, BUFFER) * 0.1
    with torch.no_grad():
        for _ in range(20):
            scripted(x)
        count = max(1, int(seconds * model.sample_rate / BUFFER))
        began = time.perf_counter()
        for _ in range(count):
            scripted(x)
        elapsed = time.perf_counter() - began
    return count * BUFFER / model.sample_rate / elapsed


def build_effect_model_like(model: EffectModel) -> EffectModel:
    stream = build_effect_model(model.cfg, model.knobs, streaming=True).eval()
    stream.load_state_dict(model.state_dict())
    return stream


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
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
        args.steps, args.segments = 150, 32
        args.overrides = ["train.batch_size=4", "train.window=2048", "train.warmup=512",
                          "train.stft_scales=[256, 1024, 2048]", *args.overrides]
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.jit.script's notice

    header = (f"{'effect':<11}{'model':<12}{'L1':>8}{'STFT':>7}{'LUFS':>6}{'crest':>7}{'RMS':>6}"
              f"{'trans':>7}{'ESR':>7}{'params':>8}{'x-rt':>7}{'s/step':>8}")
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
            speed = realtime_factor(model)
            row = (f"{name:<11}{core + '-' + conditioning:<12}{metrics['l1']:>8.4f}{metrics['stft']:>7.3f}"
                   f"{metrics['lufs']:>6.2f}{metrics['crest']:>7.2f}{metrics['rms']:>6.2f}"
                   f"{metrics['transient']:>7.2f}{metrics['esr']:>7.3f}{params:>8}{speed:>7.1f}{per_step:>8.2f}")
            rows.append(row)
            print(row, flush=True)
    print(f"\n{args.steps} steps per model; held-out: knob sweeps ({args.sweep} values per knob), 1 s each; "
          f"x-rt: scripted streaming, 48 kHz, 1 thread, buffer {BUFFER}\n")
    print(header)
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()

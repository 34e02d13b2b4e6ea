"""Training speed of the shipped profiles on this machine (steps per second, printed).

Generates a little audio at each profile's rate, preprocesses it and trains a few steps of
phase 1 and of phase 2 (adversarial) at the profile's own batch size, all threads. Phase 2 runs
twice: with the profile's critic crop (``train.discriminator_window``) and with the critic on the
whole window (as before the crop existed); the last column is their ratio, taken in one run.

    python benchmarks/training.py [--profiles small,default] [--steps 6]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tildekit.models.config import load_profile
from tildekit.models.preprocess import preprocess
from tildekit.models.synthetic import write_example_folder
from tildekit.models.trainer import train, training_window


def steps_per_second(name: str, steps: int, adversarial: bool, work: Path, whole_critic: bool = False) -> float:
    overrides = [f"train.adversarial_start={0 if adversarial else 10**9}"]
    if whole_critic:
        overrides.append(f"train.discriminator_window={load_profile(name).train.window}")
    profile = load_profile(name, overrides)
    rate = profile.model.sample_rate
    audio, data = work / f"audio-{rate}", work / f"data-{rate}"
    if not data.exists():
        write_example_folder(audio, seconds=40, sample_rate=rate)
        preprocess(audio, data, rate, min_samples=training_window(profile), progress=False)
    run = work / f"run-{name}-{adversarial}-{whole_critic}"
    # the first step pays for allocation and warm-up: time the rest
    train(data, run, profile, steps=1, progress=False)
    summary = train(data, run, None, steps=1 + steps, resume=True, progress=False)
    return float(summary.steps_per_second or 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", default="small,default")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'profile':<10} {'batch':>5} {'phase 1 steps/s':>16} {'phase 2 steps/s':>16} "
              f"{'whole-window critic':>20} {'phase 2 speed-up':>17}")
        for name in args.profiles.split(","):
            batch = load_profile(name).train.batch_size
            one = steps_per_second(name, args.steps, False, Path(tmp))
            two = steps_per_second(name, args.steps, True, Path(tmp))
            whole = steps_per_second(name, args.steps, True, Path(tmp), whole_critic=True)
            print(f"{name:<10} {batch:>5} {one:>16.3f} {two:>16.3f} {whole:>20.3f} {two / whole:>16.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()

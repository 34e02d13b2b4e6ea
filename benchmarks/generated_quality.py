"""Training choices at equal steps on generated audio: the setting of tests/test_quality.py, in minutes.

::

    python benchmarks/generated_quality.py WORK [--profile small] [--steps 500] [--threads 1]
        [--variant NAME=SECTION.FIELD=VALUE[,SECTION.FIELD=VALUE...]] ...

Trains the profile as shipped, then each ``--variant`` (the profile with those ``--set``
overrides), all from the same seed on the same generated folder (``write_example_folder``, 90 s
at the profile's rate), one after the other in this process. Each run is played as a host plays
it (the run dir's streaming model, buffers of 2048, aligned by its delay) on the held-out sounds
of the test (``alternating_levels``: tones, and full-band noise bursts) and judged with the
figures of ``tildekit eval``: loudness-envelope correlation and multi-scale log-STFT distance,
next to the two references (the input low-passed at 4 kHz; silence), and for the tones the eval's
f0 error (cents; pyin on input and output): a model that plays a tone's loudness but not its
pitch has a low loudness error and a large f0 error. Prints one markdown table
(also ``WORK/generated_quality.md``). Needs only tildekit; not run in CI.

A real-audio check of the same choice is ``benchmarks/quality.py`` on the corpus.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch

from tildekit.export.evaluate import SYSTEM_LABELS, open_model, play
from tildekit.models import metrics
from tildekit.models.config import load_profile
from tildekit.models.preprocess import preprocess
from tildekit.models.synthetic import alternating_levels, write_example_folder
from tildekit.models.trainer import train, training_window

KINDS = ("tones", "bursts")
BUFFER = 2048


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, settings = text.partition("=")
    if not name or not settings:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: write NAME=SECTION.FIELD=VALUE[,...]")
    return name, settings.split(",")


def tone_f0_error(output: np.ndarray, rate: int) -> float | None:
    """The eval's f0 error (cents) of ``output`` against the held-out tones (None: nothing voiced in both)."""
    tones = alternating_levels("tones", rate)
    error, _ = metrics.pitch_figures(metrics.pitch_track(tones, rate), metrics.pitch_track(output, rate))
    return error


def figures(run: Path, rate: int) -> tuple[dict[str, tuple[float | None, float]], float | None]:
    """Per kind (loudness correlation, log-STFT distance) of the run's streaming output; the tones' f0 error."""
    model = open_model(run, BUFFER)
    result = {}
    f0_error = None
    for kind in KINDS:
        audio = alternating_levels(kind, rate)
        output = play(model, audio[None], BUFFER)[0]
        correlation, _ = metrics.loudness_figures(metrics.loudness_db(audio, rate), metrics.loudness_db(output, rate))
        result[kind] = (correlation, metrics.stft_distance(audio, output))
        if kind == "tones":
            f0_error = tone_f0_error(output, rate)
    return result, f0_error


def references(rate: int) -> dict[str, tuple[dict[str, float], float | None]]:
    """Per reference of ``tildekit eval``: its label -> (per kind: log-STFT distance; the tones' f0 error)."""
    held_out = {kind: alternating_levels(kind, rate) for kind in KINDS}
    result = {}
    for name, make in metrics.REFERENCES.items():
        distances = {kind: metrics.stft_distance(audio, make(audio, rate)) for kind, audio in held_out.items()}
        result[SYSTEM_LABELS[name]] = (distances, tone_f0_error(make(held_out["tones"], rate), rate))
    return result


def _cell(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="working folder: audio, dataset, one run dir per row, the table")
    parser.add_argument("--profile", default="small", help="autoencoder profile [default: small]")
    parser.add_argument("--steps", type=int, default=500, help="training steps of every row [default: 500]")
    parser.add_argument("--threads", type=int, default=1, help="torch threads [default: 1]")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[],
                        help="NAME=SECTION.FIELD=VALUE[,...]: one more row, the profile with these settings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [("as shipped", [])] + list(args.variant)
    first = load_profile(args.profile)
    rate = first.model.sample_rate
    audio, data = args.work / "audio", args.work / "dataset"
    if not data.exists():
        write_example_folder(audio, seconds=90.0, sample_rate=rate, seed=0)
        preprocess(audio, data, sample_rate=rate, channels=1, min_samples=training_window(first), progress=False)
    heads = ["row", "settings", *[f"{k} loudness corr" for k in KINDS], *[f"{k} log-STFT" for k in KINDS],
             "tones f0 cents"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for name, settings in rows:
        profile = load_profile(args.profile, settings)
        if training_window(profile) != training_window(first):
            raise SystemExit(f"--variant {name}: changes the training window; rows must share the dataset")
        run = args.work / "runs" / name.replace(" ", "-")
        shutil.rmtree(run, ignore_errors=True)
        torch.manual_seed(0)
        print(f"{name}: {args.steps} steps of {args.profile} {' '.join(settings)} ...", flush=True)
        train(data, run, profile, steps=args.steps, progress=False)
        found, f0_error = figures(run, rate)
        cells = [_cell(found[k][0], 3) for k in KINDS] + [f"{found[k][1]:.3f}" for k in KINDS] + [_cell(f0_error, 1)]
        lines.append(f"| {name} | {', '.join(settings) or '-'} | " + " | ".join(cells) + " |")
    for label, (distances, f0_error) in references(rate).items():
        lines.append(f"| {label} | | | | " + " | ".join(f"{distances[k]:.3f}" for k in KINDS)
                     + f" | {_cell(f0_error, 1)} |")
    table = "\n".join([f"`{args.profile}`, {args.steps} steps, generated audio ({rate} Hz), "
                       f"{args.threads} thread(s)", "", *lines])
    (args.work / "generated_quality.md").write_text(table + "\n", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()

"""DDSP on real recordings: reconstruction, pitch and loudness following, timbre transfer.

::

    python benchmarks/ddsp_quality.py WORK [--quick] [--instruments violin,flute]
                                           [--profiles ddsp,ddsp-raspberry] [--steps 3000] [--batch 8]

One run does, for each instrument and DDSP profile:

1. the corpus (``benchmarks/corpus.py``, fixed train/test split) in ``WORK/corpus``, built once
   and reused (``--corpus DIR`` takes another);
2. ``tildekit preprocess`` of that instrument's training files, ``tildekit train --profile P``,
   ``tildekit export --target nn`` (the streaming nn~ file a host plays);
3. through that file, with ``tildekit eval``'s code (``export/evaluate.py``), on held-out melodies
   of the same instrument: multi-scale log-STFT distance, log-mel distance, loudness-envelope
   correlation, f0 error against the input (pyin), beside the two references (the input
   low-passed at 4 kHz; silence);
4. timbre transfer (``tildekit eval --transfer``) of out-of-domain input: the held-out speech and
   the other instruments' held-out melodies: loudness and pitch following;
5. the pitch tracker inside the file (its ``features`` method) against librosa's pyin on every
   pitched held-out file of the corpus: gross pitch error (share of frames voiced for pyin that
   are more than 50 cents off) and the median error in cents (frames aligned at the lag, within
   +-8 frames, that agrees best: the tracker reports f0 at the end of its window).

One table (printed, ``WORK/ddsp_quality.md`` and ``WORK/ddsp_quality.json``) and training steps/s.
Speed of the exported models: ``benchmarks/ddsp_speed.py``. Requirements as for the corpus
(``apt-get install fluidsynth fluid-soundfont-gm espeak-ng``). Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (benchmarks/quality.py: corpus folder, nice'd commands, thread env)

PROFILES = ("ddsp", "ddsp-raspberry")
INSTRUMENTS = ("violin", "flute")
QUICK_INSTRUMENTS = ("violin",)
STEPS, QUICK_STEPS = 3000, 4
GROSS_CENTS = 50.0  # a frame further off than this is a gross pitch error
MAX_LAG_FRAMES = 8
REFERENCES = quality.REFERENCES


def corpus_items(corpus: Path) -> list[dict]:
    return json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))["files"]


def train_one(instrument: str, profile: str, items: list[dict], corpus: Path, work: Path, steps: int,
              batch: int | None, threads: int, result: dict) -> Path:
    """Preprocess the instrument's training files, train, export: the exported nn~ file."""
    base = work / "runs" / f"{instrument}-{profile}"
    source, data, run_dir, export = base / "input", base / "data", base / "run", base / "export"
    logs = work / "logs"
    source.mkdir(parents=True, exist_ok=True)
    for item in items:
        if item["split"] == "train" and item["source"] == instrument:
            link = source / Path(item["path"]).name
            if not link.exists():
                link.symlink_to((corpus / item["path"]).resolve())
    env = quality.thread_env(threads)
    tk = quality.tildekit_command()
    name = f"{instrument}-{profile}"
    quality.run(tk + ["preprocess", str(source), str(data), "--profile", profile],
                f"preprocess ({name})", logs / f"{name}-preprocess.log", env)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run of exactly --steps
    text, wall = quality.run(tk + ["train", str(data), str(run_dir), "--profile", profile, "--steps", str(steps),
                                   "--quiet", *(["--batch-size", str(batch)] if batch else [])],
                             f"train ({name})", logs / f"{name}-train.log", env)
    result.update({"train_wall_seconds": wall, "steps_per_second": quality.training_speed(text)})
    return quality.export_nn(run_dir, export, name, logs / f"{name}-export.log", env)


def evaluate_files(model: Path, files: list[Path], out: Path, transfer: bool) -> dict:
    from tildekit.export.evaluate import evaluate

    report = evaluate(model, files, out, transfer=transfer).to_json()
    return {"figures": report["overall"]["model"],
            "references": {name: report["overall"].get(name) for name in REFERENCES}}


def pitch_tracking(model_path: Path, files: list[Path]) -> dict:
    """The exported tracker's f0 (``features``) against pyin's on pitched held-out audio."""
    import torch

    from tildekit.export.card_io import model_card
    from tildekit.models import metrics
    from tildekit.models.contract.audio import read_sound

    card = model_card(model_path)
    hop = card.methods["features"].out_ratio
    errors: list[np.ndarray] = []
    lags: list[int] = []
    for path in files:
        audio, _ = read_sound(path, 1, card.sample_rate)
        reference = metrics.pitch_track(audio[0], card.sample_rate)
        model = torch.jit.load(str(model_path)).eval()  # a fresh stream per file
        with torch.no_grad():
            f0 = model.features(torch.from_numpy(audio[None]))[0, 0].numpy()
        frame_times = (np.arange(len(f0)) + 1) * hop / card.sample_rate  # the end of each frame's window
        ref_times = np.arange(len(reference.f0)) * metrics.PITCH_HOP / metrics.PITCH_RATE
        voiced = reference.voiced & reference.active & np.isfinite(reference.f0)
        if not voiced.any():
            continue
        best: tuple[float, int, np.ndarray] | None = None
        step = metrics.PITCH_HOP / metrics.PITCH_RATE
        for lag in range(-MAX_LAG_FRAMES, MAX_LAG_FRAMES + 1):
            index = np.searchsorted(frame_times, ref_times[voiced] + lag * step).clip(0, len(f0) - 1)
            cents = 1200.0 * np.abs(np.log2(np.maximum(f0[index], 1e-3) / reference.f0[voiced]))
            gross = float(np.mean(cents > GROSS_CENTS))
            if best is None or gross < best[0]:
                best = (gross, lag, cents)
        assert best is not None
        lags.append(best[1])
        errors.append(best[2])
    if not errors:
        return {"files": 0}
    cents = np.concatenate(errors)
    return {"files": len(errors), "frames": int(cents.size), "gross_error": float(np.mean(cents > GROSS_CENTS)),
            "median_cents": float(np.median(cents)),
            "median_cents_fine": float(np.median(cents[cents <= GROSS_CENTS])) if (cents <= GROSS_CENTS).any()
            else None, "lag_frames_median": float(np.median(lags))}


def _cell(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def table(rows: list[dict]) -> str:
    lines = ["| instrument | profile | steps | steps/s | log-STFT L1 | log-mel dB | loudness corr | f0 cents "
             "| low-pass 4 kHz: STFT | silence: STFT | transfer: loudness corr | transfer: f0 cents "
             "| tracker gross error | tracker median cents |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row.get("error"):
            lines.append(f"| {row['instrument']} | {row['profile']} | {row['steps']} | failed: {row['error']} |"
                         + " |" * 10)
            continue
        own, refs = row["reconstruction"]["figures"], row["reconstruction"]["references"]
        moved, pitch = row["transfer"]["figures"], row["tracker"]
        lines.append(" | ".join([
            f"| {row['instrument']}", row["profile"], str(row["steps"]), _cell(row.get("steps_per_second")),
            _cell(own.get("stft_distance")), _cell(own.get("mel_distance_db")),
            _cell(own.get("loudness_correlation")), _cell(own.get("f0_error_cents")),
            _cell((refs.get("lowpass_4k") or {}).get("stft_distance")),
            _cell((refs.get("silence") or {}).get("stft_distance")),
            _cell(moved.get("loudness_correlation")), _cell(moved.get("f0_error_cents")),
            _cell(pitch.get("gross_error")), _cell(pitch.get("median_cents_fine"))]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="working folder (corpus, runs, exports, eval reports, the table)")
    parser.add_argument("--corpus", type=Path, help="an existing corpus folder (benchmarks/corpus.py)")
    parser.add_argument("--instruments", default=None, help=f"comma-separated (default {','.join(INSTRUMENTS)})")
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--steps", type=int, default=None, help=f"training steps (default {STEPS})")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the profile's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each command (default 1)")
    parser.add_argument("--quick", action="store_true", help="tiny corpus, a few steps: a smoke run")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = quality.corpus_folder(args.work, args.corpus, args.quick, args.seed)
    items = corpus_items(corpus)
    instruments = (args.instruments.split(",") if args.instruments
                   else list(QUICK_INSTRUMENTS if args.quick else INSTRUMENTS))
    known = {item["source"] for item in items if item["kind"] == "instrument"}
    unknown = [i for i in instruments if i not in known]
    if unknown:
        raise SystemExit(f"--instruments: {', '.join(unknown)} not in the corpus (it has {', '.join(sorted(known))})")
    steps = args.steps or (QUICK_STEPS if args.quick else STEPS)
    test = [item for item in items if item["split"] == "test"]
    pitched = [corpus / item["path"] for item in test if item.get("voiced_fraction", 0.0) >= 0.5]
    rows: list[dict] = []
    for instrument in instruments:
        own = [corpus / i["path"] for i in test if i["source"] == instrument]
        others = [corpus / i["path"] for i in test if i["source"] != instrument]
        for profile in args.profiles.split(","):
            row: dict = {"instrument": instrument, "profile": profile, "steps": steps}
            began = time.perf_counter()
            try:
                model = train_one(instrument, profile, items, corpus, args.work, steps, args.batch, args.threads, row)
                eval_dir = args.work / "eval" / f"{instrument}-{profile}"
                row["reconstruction"] = evaluate_files(model, own, eval_dir / "reconstruction", False)
                row["transfer"] = evaluate_files(model, others, eval_dir / "transfer", True)
                row["tracker"] = pitch_tracking(model, pitched)
            except quality.StageFailed as exc:
                row["error"] = str(exc)
            row["seconds"] = time.perf_counter() - began
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
    text = table(rows)
    title = ("Smoke run (--quick: tiny corpus, a few steps; the figures say nothing about quality)\n\n"
             if args.quick else "")
    (args.work / "ddsp_quality.md").write_text(title + text + "\n", encoding="utf-8")
    (args.work / "ddsp_quality.json").write_text(json.dumps({"steps": steps, "rows": rows}, indent=1),
                                                 encoding="utf-8")
    print(title + text)


if __name__ == "__main__":
    main()

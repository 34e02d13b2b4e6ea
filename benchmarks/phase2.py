"""Does phase 2 (adversarial fine-tuning) lower the held-out distance of a phase-1 model?

::

    python benchmarks/phase2.py WORK --corpus CORPUS [--profile raspberry]
                                     [--phase1-steps 600] [--more-steps 200] [--batch 4] [--threads 1]

One run, on the real-audio corpus (``benchmarks/corpus.py``):

1. ``tildekit preprocess`` of the train split and ``tildekit train`` of the profile for
   ``--phase1-steps`` steps (phase 1: the representation; the profile's own phase boundary is
   far later);
2. the run dir copied into two branches, each continued for ``--more-steps`` steps from that same
   checkpoint, side by side (one process per branch, ``--threads`` each, so both train under the
   same load):

   - ``phase 2``: ``--resume --set train.adversarial_start=N+1`` (the move a user makes while a run
     is in phase 1; step N itself is the last phase-1 step), then the critic, encoder frozen;
   - ``phase 1 only``: ``--resume`` unchanged, the same number of steps of phase 1 (the control:
     any gain of phase 2 must beat simply training longer);

3. the three models (the phase-1 checkpoint and both branches) exported as nn~ files and played
   through ``tildekit eval``'s code on the test split (one thread, buffers of 2048 samples,
   aligned by the card's delay), as ``benchmarks/quality.py`` does.

Prints one table (also ``WORK/phase2.md`` and ``WORK/phase2.json``): the eval figures, the steps
each model trained and the training speed of each branch. Needs only tildekit; not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import (  # noqa: E402  benchmarks/quality.py: the same commands and evaluation
    FIGURE_HEADS,
    FIGURES,
    REFERENCES,
    StageFailed,
    _cell,
    evaluate_export,
    export_nn,
    nice,
    run,
    settings,
    thread_env,
    tildekit_command,
    training_speed,
)

BRANCHES = ("phase 2", "phase 1 only")


def branch_dir(work: Path, branch: str) -> Path:
    return work / "runs" / branch.replace(" ", "-")


def train_branches(data: Path, base: Path, work: Path, total: int, first: int, threads: int) -> dict[str, dict]:
    """Copy ``base`` into one run dir per branch and continue both at once; speed and wall time of each."""
    env = thread_env(threads)
    started: dict[str, tuple[subprocess.Popen, Path, float]] = {}
    try:
        for branch in BRANCHES:
            run_dir = branch_dir(work, branch)
            if run_dir.exists():
                shutil.rmtree(run_dir)
            shutil.copytree(base, run_dir)
            extra = ["--set", f"train.adversarial_start={first + 1}"] if branch == "phase 2" else []
            log = work / "logs" / f"train-{run_dir.name}.log"
            command = tildekit_command("train", str(data), str(run_dir), "--resume", "--steps", str(total),
                                       "--quiet", *extra)
            with open(log, "w", encoding="utf-8") as out:
                out.write("$ " + " ".join(command) + "\n")
                out.flush()
                process = subprocess.Popen(nice(command), stdout=out, stderr=subprocess.STDOUT, env=env)
            started[branch] = (process, log, time.perf_counter())
        codes = {branch: (process.wait(), time.perf_counter() - began)
                 for branch, (process, _, began) in started.items()}
    finally:
        for process, _, _ in started.values():  # a failure or Ctrl-C leaves no training behind
            if process.poll() is None:
                process.kill()
                process.wait()
    results: dict[str, dict] = {}
    for branch, (code, wall) in codes.items():
        log = started[branch][1]
        if code != 0:
            raise StageFailed(f"tildekit train ({branch}) failed (exit {code}); log {log}")
        results[branch] = {"run": branch_dir(work, branch), "train_wall_seconds": wall,
                           "steps_per_second": training_speed(log.read_text(encoding="utf-8", errors="replace"))}
    return results


def table(rows: list[dict]) -> str:
    heads = ["model", "steps", "of which phase 2", *FIGURE_HEADS, "train steps/s"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in rows:
        lines.append("| " + " | ".join([row["label"], str(row["steps"]), str(row["phase2_steps"]),
                                        *[_cell(row["figures"].get(f)) for f in FIGURES],
                                        _cell(row["steps_per_second"])]) + " |")
    refs = rows[0]["references"]
    for name, label in REFERENCES.items():
        lines.append("| " + " | ".join([label, "", "", *[_cell(refs[name].get(f)) for f in FIGURES], ""]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="working folder: dataset, runs, exports, eval reports, phase2.md/json")
    parser.add_argument("--corpus", type=Path, required=True, help="a corpus folder (benchmarks/corpus.py)")
    parser.add_argument("--profile", default="raspberry", help="tildekit profile [default: raspberry]")
    parser.add_argument("--phase1-steps", type=int, default=600, help="steps before the branches [default: 600]")
    parser.add_argument("--more-steps", type=int, default=200, help="steps of each branch [default: 200]")
    parser.add_argument("--batch", type=int, default=4, help="batch size [default: 4]")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training [default: 1]")
    args = parser.parse_args()
    if not (args.corpus / "manifest.json").is_file():
        raise SystemExit(f"--corpus {args.corpus}: no manifest.json (build one with benchmarks/corpus.py)")
    if min(args.phase1_steps, args.more_steps, args.batch, args.threads) < 1:
        raise SystemExit("--phase1-steps, --more-steps, --batch and --threads must be at least 1")

    began = time.perf_counter()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus.resolve()
    pair = settings(args.profile, args.phase1_steps, args.batch, [])
    first, total = args.phase1_steps, args.phase1_steps + args.more_steps
    env = thread_env(args.threads)
    data, base = work / "data", work / "runs" / "phase-1"
    run(tildekit_command("preprocess", str(corpus / "train"), str(data), "--profile", args.profile, "--sample-rate",
           str(pair["sample_rate"]), "--min-seconds", str(pair["window"] / pair["sample_rate"])),
        "tildekit preprocess", work / "logs" / "preprocess.log", env)
    if base.exists():
        shutil.rmtree(base)
    print(f"{args.profile}: {first} steps of phase 1, batch {args.batch} ...", flush=True)
    text, wall = run(tildekit_command("train", str(data), str(base), "--profile", args.profile, "--steps",
                                      str(first), "--batch-size", str(args.batch), "--quiet"),
                     "tildekit train (phase 1)", work / "logs" / "train-phase-1.log", env)
    trained = {"phase 1": {"run": base, "steps_per_second": training_speed(text), "train_wall_seconds": wall}}
    print(f"both branches: {args.more_steps} more steps each, side by side ...", flush=True)
    trained.update(train_branches(data, base, work, total, first, args.threads))

    rows = []
    for label, info in trained.items():
        name = f"{args.profile}-{label.replace(' ', '-')}"
        model = export_nn(info["run"], work / "export" / name, name, work / "logs" / f"export-{name}.log", env)
        print(f"evaluating {label} ...", flush=True)
        evaluated = evaluate_export({"model": str(model), "system": name}, pair, corpus, work)
        rows.append({"label": label, "steps": first if label == "phase 1" else total,
                     # step N of the phase-2 branch is the last of phase 1 (adversarial_start = N + 1)
                     "phase2_steps": args.more_steps - 1 if label == "phase 2" else 0,
                     "steps_per_second": info["steps_per_second"],
                     "train_wall_seconds": info["train_wall_seconds"], **evaluated})
    text = table(rows)
    title = (f"`{args.profile}`, batch {args.batch}, {args.threads} thread(s) per training; "
             f"{(time.perf_counter() - began) / 60:.1f} min in all, {time.strftime('%Y-%m-%d')}")
    print("\n" + title + "\n\n" + text, flush=True)
    (work / "phase2.md").write_text(f"# Phase 2 against phase 1\n\n{title}\n\n{text}\n", encoding="utf-8")
    (work / "phase2.json").write_text(json.dumps({"profile": args.profile, "batch": args.batch,
                                                  "threads": args.threads, "rows": rows,
                                                  "host": os.uname().nodename}, indent=1, default=str),
                                      encoding="utf-8")


if __name__ == "__main__":
    main()

"""Does phase 2 (adversarial fine-tuning) lower the held-out distance of a phase-1 model?

::

    python benchmarks/phase2.py WORK --corpus CORPUS [--profile raspberry]
                                     [--phase1-steps 600] [--more-steps 200] [--batch 4] [--threads 1]
                                     [--branch-set SECTION.FIELD=VALUE ...]

One run, on the real-audio corpus (``benchmarks/corpus.py``):

1. ``tildekit preprocess`` of the train split and ``tildekit train`` of the profile for
   ``--phase1-steps`` steps (phase 1: the representation; the profile's own phase boundary is
   far later); a finished phase-1 run of the same profile, batch and steps already in
   ``WORK/runs/phase-1`` (from an earlier call) is reused, not trained again (whatever code
   trained it: after a change to the model, delete that folder);
2. the run dir copied into two branches, each continued for ``--more-steps`` steps from that same
   checkpoint, side by side (one process per branch, ``--threads`` each, so both train under the
   same load):

   - ``phase 2``: ``--resume --set train.adversarial_start=N+1`` (the move a user makes while a run
     is in phase 1; step N itself is the last phase-1 step), then the critic, encoder frozen;
   - ``phase 1 only``: ``--resume`` with no other change, the same number of steps of phase 1 (the
     control: any gain of phase 2 must beat simply training longer);

   each ``--branch-set SECTION.FIELD=VALUE`` (repeatable) is passed as ``--set`` to both branches,
   e.g. ``--branch-set train.learning_rate=0.0001`` to fine-tune at a lower rate (on resume the
   optimizers take the new rate: ``train.learning_rate`` sets the generator's and the critic's);

3. the three models (the phase-1 checkpoint and both branches) exported as nn~ files and played
   through ``tildekit eval``'s code on the test split (one thread, buffers of 2048 samples,
   aligned by the card's delay), as ``benchmarks/quality.py`` does.

Prints one table (also ``WORK/phase2.md`` and ``WORK/phase2.json``): the eval figures, the steps
each model trained and the training speed of each branch; its title names the ``--branch-set``
settings and a reused phase-1 run (whose speed is the one measured when it was trained). Needs only
tildekit; not run in CI.
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


def check_branch_sets(profile: str, items: list[str]) -> None:
    """Stop before any training on a --branch-set that `tildekit train --resume` would refuse."""
    from tildekit.models.config import RESUMABLE_SETTINGS, ProfileError, load_profile

    for item in items:
        name = item.partition("=")[0].strip()
        if name not in RESUMABLE_SETTINGS:  # the phase boundary is this benchmark's own move
            raise SystemExit(f"--branch-set {item}: {name} is not one of the settings --resume may change "
                             f"({', '.join(RESUMABLE_SETTINGS)})")
    try:
        load_profile(profile, items)
    except ProfileError as exc:
        raise SystemExit(f"--branch-set: {exc}") from None


def reusable_phase1(base: Path, profile: str, batch: int, steps: int) -> bool:
    """Whether ``base`` is a finished phase-1 run of this profile, batch and step count (training
    it again would give the same model at the cost of the longest stage)."""
    from tildekit.errors import TildekitError
    from tildekit.models.config import ProfileError, load_profile
    from tildekit.models.run import load_checkpoint, newest_checkpoint, read_profile

    newest = newest_checkpoint(base) if base.is_dir() else None
    if newest is None:
        return False
    try:
        same = read_profile(base).to_dict() == load_profile(profile, [f"train.batch_size={batch}"]).to_dict()
        return same and int(load_checkpoint(newest)["step"]) == steps
    except (TildekitError, ProfileError):  # unreadable or foreign: train a fresh one
        return False


def train_phase1(data: Path, base: Path, work: Path, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """The phase-1 run, trained here or reused from an earlier call: run dir, speed, wall time."""
    log = work / "logs" / "train-phase-1.log"
    if reusable_phase1(base, args.profile, args.batch, args.phase1_steps):
        print(f"{args.profile}: reusing the {args.phase1_steps}-step phase-1 run in {base} ...", flush=True)
        text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
        return {"run": base, "steps_per_second": training_speed(text), "train_wall_seconds": None, "reused": True}
    if base.exists():
        shutil.rmtree(base)
    print(f"{args.profile}: {args.phase1_steps} steps of phase 1, batch {args.batch} ...", flush=True)
    text, wall = run(tildekit_command("train", str(data), str(base), "--profile", args.profile, "--steps",
                                      str(args.phase1_steps), "--batch-size", str(args.batch), "--quiet"),
                     "tildekit train (phase 1)", log, env)
    return {"run": base, "steps_per_second": training_speed(text), "train_wall_seconds": wall, "reused": False}


def train_branches(data: Path, base: Path, work: Path, total: int, first: int, threads: int,
                   branch_sets: list[str]) -> dict[str, dict]:
    """Copy ``base`` into one run dir per branch and continue both at once; speed and wall time of each."""
    env = thread_env(threads)
    started: dict[str, tuple[subprocess.Popen, Path, float]] = {}
    try:
        for branch in BRANCHES:
            run_dir = branch_dir(work, branch)
            if run_dir.exists():
                shutil.rmtree(run_dir)
            shutil.copytree(base, run_dir)
            extra = [arg for item in branch_sets for arg in ("--set", item)]
            if branch == "phase 2":
                extra += ["--set", f"train.adversarial_start={first + 1}"]
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
    parser.add_argument("--branch-set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="a setting both branches resume with, e.g. train.learning_rate=0.0001 (repeatable)")
    args = parser.parse_args()
    if not (args.corpus / "manifest.json").is_file():
        raise SystemExit(f"--corpus {args.corpus}: no manifest.json (build one with benchmarks/corpus.py)")
    if min(args.phase1_steps, args.more_steps, args.batch, args.threads) < 1:
        raise SystemExit("--phase1-steps, --more-steps, --batch and --threads must be at least 1")
    check_branch_sets(args.profile, args.branch_set)

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
    trained = {"phase 1": train_phase1(data, base, work, args, env)}
    print(f"both branches: {args.more_steps} more steps each, side by side ...", flush=True)
    trained.update(train_branches(data, base, work, total, first, args.threads, args.branch_set))

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
    reused = trained["phase 1"]["reused"]
    branches = " ".join(f"--set {item}" for item in args.branch_set)
    title = (f"`{args.profile}`, batch {args.batch}, {args.threads} thread(s) per training; "
             + (f"both branches resumed with `{branches}`; " if branches else "")
             + ("phase-1 run reused from an earlier call (its steps/s as measured then); " if reused else "")
             + f"{(time.perf_counter() - began) / 60:.1f} min in all, {time.strftime('%Y-%m-%d')}")
    print("\n" + title + "\n\n" + text, flush=True)
    (work / "phase2.md").write_text(f"# Phase 2 against phase 1\n\n{title}\n\n{text}\n", encoding="utf-8")
    (work / "phase2.json").write_text(json.dumps({"profile": args.profile, "batch": args.batch,
                                                  "threads": args.threads, "branch_sets": args.branch_set,
                                                  "phase1_reused": reused, "rows": rows,
                                                  "host": os.uname().nodename}, indent=1, default=str),
                                      encoding="utf-8")


if __name__ == "__main__":
    main()

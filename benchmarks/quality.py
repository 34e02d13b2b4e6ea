"""Reconstruction quality of tildekit's profiles against RAVE 2.3.1's matching configs, at equal
steps, on real recordings, measured by the same code through each system's streaming export.

::

    python benchmarks/quality.py WORK [--quick] [--profiles raspberry,small,causal,default]
                                      [--steps 600 --steps default=150] [--batch B] [--threads 1]

One run does, for each tildekit profile and its RAVE counterpart (``PAIRS``):

1. the corpus (``benchmarks/corpus.py``: GM soundfont instruments and espeak-ng speech, fixed
   train/test split) in ``WORK/corpus``, built once and reused (``--corpus DIR`` takes another);
2. tildekit: ``tildekit preprocess`` of the train split, ``tildekit train --steps N --batch-size B``,
   ``tildekit export --target nn`` (its streaming nn~ file);
3. RAVE, from its own code in a side venv (``--rave-venv``): ``rave preprocess`` (lmdb) of the same
   files, RAVE's ``scripts/train.py`` with ``--config`` as in ``PAIRS``, the same steps, batch, window
   (``--n_signal``) and sample rate (``--override SAMPLING_RATE=`` the profile's rate), then RAVE's
   ``scripts/export.py --streaming`` (its default fidelity 0.95);
4. both ``.ts`` files through ``tildekit eval``'s code (``export/evaluate.py``) on the test split,
   one thread, buffers of 2048 samples, each output aligned by the file's delay (tildekit: its
   card; RAVE: measured with an impulse, as ``tildekit info`` does for any nn~ file);
5. one table (printed, ``WORK/quality.md`` and ``WORK/quality.json``): the eval figures (see
   ``tildekit eval --help``), the two references that give them a scale (the input low-passed at
   4 kHz; silence), training steps/s and wall time. Each eval report (spectrograms, excerpts) stays
   in ``WORK/eval/SYSTEM-PROFILE``.

The window: both systems train on the same window, the profile's ``train.window``, unless RAVE
cannot train on it. RAVE crops its receptive field from both ends of each window before its
sub-band STFT distance, whose largest frame (2048) needs more than 1024 samples per band left
(its reflect padding); the window is then doubled until it can, for both systems (tildekit with
``--set train.window=W``), and the table says so. With the 2.3.1 configs that raises `small`
(8192 samples at 16 kHz; ``v2_small``'s receptive field is about 20600 samples) to 65536 and
`causal` (65536; ``v2`` + ``causal``: about 51500) to 131072.

Training speed is the time of the optimisation steps alone for both systems (tildekit's
``speed`` line; a callback around RAVE's ``training_step``), one thread each (``--threads``);
wall time is the whole training command (start-up, data loading, validation, checkpoints). Each
command runs under ``nice``. By default the two systems train one after the other, so a busy
machine can load one more than the other; with ``--side-by-side`` they train at the same time
(give each a core: ``--threads 1`` on two cores), so both see the same load. The system that
finishes first then leaves the other alone for its last steps, which favours the slower one.

RAVE on a CPU (what the benchmark does so that RAVE 2.3.1's trainer runs here; nothing in RAVE is
edited, the fixes are flags, an environment, or wrappers applied by ``rave-train`` below):

- ``--gpu -1`` (otherwise it asks GPUtil for a GPU and stops), ``--channels 1`` (the default 0
  builds no model), ``--workers 0`` (no loader processes on a small CPU machine);
- ``tensorboardX`` in its venv (Lightning's logger; RAVE's no-deps install lacks it) and
  ``ffmpeg`` on the machine (``rave preprocess`` decodes with it);
- validation exactly once, at the last step (``check_val_every_n_epoch=None,
  val_check_interval=STEPS``): RAVE computes its latent PCA, which its exporter uses to choose the
  latent dimensions it keeps, only in validation; its own schedule (every 10000 steps, or every
  few epochs) would leave a short run without it, exported with one latent dimension;
- a validation part large enough for that PCA (at least as many latent frames as latent
  dimensions): with a tiny corpus (``--quick``) RAVE's 2 % holds one chunk, too few frames, and
  the validation part then takes the first chunks of the dataset (they overlap the training part;
  the benchmark's own test split stays unheard, and the full corpus keeps RAVE's split);
- ``--save_every`` past the last step: no periodic checkpoint, the export takes the last step's.

Requirements: ``apt-get install fluidsynth fluid-soundfont-gm espeak-ng ffmpeg`` and RAVE's side
venv (acids-rave 2.3.1 on the CPU torch, without its pinned CUDA dependencies; see
``docs/quality.md``). ``--systems tildekit`` runs tildekit alone. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

# tildekit profile -> RAVE 2.3.1 gin configs, in `rave train --config A --config B` order
PAIRS = {
    "raspberry": ("raspberry",),
    "small": ("v2_small",),
    "causal": ("v2", "causal"),
    "default": ("v2",),
}
STEPS = ["600", "default=150"]  # `default` vs `v2` on a short budget: both are slow on a CPU
QUICK_STEPS = ["3", "default=2"]
QUICK_BATCH = 2
DEFAULT_RAVE_VENV = Path.home() / "rave-venv"  # as docs/quality.md installs it
EVAL_BUFFER = 2048
FIGURES = ("stft_distance", "mel_distance_db", "loudness_correlation", "f0_error_cents")
FIGURE_HEADS = ("log-STFT L1", "log-mel dB", "loudness corr", "f0 cents")
REFERENCES = {"lowpass_4k": "reference: input low-passed at 4 kHz", "silence": "reference: silence"}
RESULT_FORMAT = "tildekit-quality-benchmark"


# ----------------------------------------------------------------------------- commands


class StageFailed(Exception):
    """One system's step failed (training, export, evaluation): the row says so, the run goes on."""


def nice(command: list[str]) -> list[str]:
    return (["nice", "-n", "10"] if shutil.which("nice") else []) + command


def run(command: list[str], what: str, log: Path, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> tuple[str, float]:
    """Run ``command`` (nice'd), its output into ``log``; (stdout + stderr, wall seconds) or a loud stop."""
    began = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        result = subprocess.run(nice(command), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    seconds = time.perf_counter() - began
    text = log.read_text(encoding="utf-8", errors="replace")
    if result.returncode != 0:
        last = [line for line in text.strip().splitlines()[1:] if line.strip()][-1:] or ["(no output)"]
        shown = log.relative_to(log.parent.parent)  # logs/NAME.log inside the working folder
        raise StageFailed(f"{what} failed (exit {result.returncode}): {last[0].strip()[:400]} (log {shown})")
    return text, seconds


def tildekit_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tildekit", *args]


def training_speed(text: str) -> float | None:
    """steps/s from `tildekit train`'s ``speed`` line (optimisation steps only), or None."""
    found = re.search(r"speed: ([0-9.]+(?:e[-+]?[0-9]+)?) steps/s", text)
    return float(found.group(1)) if found else None


def export_nn(run_dir: Path, out: Path, name: str, log: Path, env: dict[str, str]) -> Path:
    """`tildekit export --target nn` of ``run_dir`` into a fresh ``out``: the streaming nn~ file."""
    if out.exists():
        shutil.rmtree(out)
    run(tildekit_command("export", str(run_dir), "--target", "nn", "--out", str(out), "--name", name),
        f"tildekit export ({name})", log, env)
    return out / f"{name}.ts"


def thread_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env.update(extra or {})
    return env


# ----------------------------------------------------------------------------- settings


def parse_steps(items: list[str], profiles: list[str]) -> dict[str, int]:
    """``["600", "default=150"]`` -> steps per profile, in order (a bare number sets every profile)."""
    steps: dict[str, int] = {}
    for item in items:
        name, _, value = item.rpartition("=")
        try:
            count = int(value)
        except ValueError:
            raise SystemExit(f"--steps {item}: give N or PROFILE=N") from None
        if count < 1:
            raise SystemExit(f"--steps {item}: at least 1 step")
        if not name:
            steps.update({p: count for p in PAIRS})
        elif name in PAIRS:
            steps[name] = count
        else:
            raise SystemExit(f"--steps {item}: unknown profile {name!r} (one of {', '.join(PAIRS)})")
    return {p: steps[p] for p in profiles}


def settings(profile_name: str, steps: int, batch: int | None, overrides: list[str]) -> dict:
    """What both systems share for one pair: rate, window, steps, batch."""
    from tildekit.errors import TildekitError
    from tildekit.models.config import ProfileError, load_profile
    from tildekit.models.trainer import training_window

    try:
        profile = load_profile(profile_name, overrides)
    except (TildekitError, ProfileError) as exc:
        raise SystemExit(f"--set: {exc}") from None
    return {"profile": profile_name, "rave_configs": list(PAIRS[profile_name]),
            "sample_rate": profile.model.sample_rate, "window": training_window(profile),
            "steps": steps, "batch": batch or profile.train.batch_size, "profile_window": training_window(profile)}


# ----------------------------------------------------------------------------- corpus


def corpus_folder(work: Path, given: Path | None, quick: bool, seed: int) -> Path:
    """``--corpus`` as given, else WORK/corpus (built here unless it holds the same corpus)."""
    if given is not None:
        if not (given / "manifest.json").is_file():
            raise SystemExit(f"--corpus {given}: no manifest.json (build one with benchmarks/corpus.py)")
        return given
    folder = work / "corpus"
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        if manifest.get("quick") == quick and manifest.get("seed") == seed:
            return folder
    except (OSError, ValueError):
        pass
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import corpus  # benchmarks/corpus.py

    print(f"building the {'quick ' if quick else ''}corpus in {folder} ...", flush=True)
    corpus.build(folder, quick, seed)
    return folder


# ----------------------------------------------------------------------------- tildekit


def train_tildekit(pair: dict, corpus: Path, work: Path, threads: int, overrides: list[str], result: dict) -> None:
    """Preprocess, train and export; fills ``result`` as it goes (a failure keeps what was measured)."""
    name = pair["profile"]
    base = work / "tildekit" / name
    data, run_dir, export = base / "data", base / "run", base / "export"
    logs = work / "logs"
    env = thread_env(threads)
    tk = tildekit_command()
    run(tk + ["preprocess", str(corpus / "train"), str(data), "--profile", name, "--sample-rate",
              str(pair["sample_rate"]), "--min-seconds", str(pair["window"] / pair["sample_rate"])],
        f"tildekit preprocess ({name})", logs / f"tildekit-{name}-preprocess.log", env)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run: the same number of steps for both systems
    load = os.getloadavg()[0]
    text, wall = run(tk + ["train", str(data), str(run_dir), "--profile", name, "--steps", str(pair["steps"]),
                           "--batch-size", str(pair["batch"]), "--quiet",
                           *[a for o in overrides for a in ("--set", o)],
                           *(["--set", f"train.window={pair['window']}"]
                             if pair["window"] != pair["profile_window"] else [])],
                     f"tildekit train ({name})", logs / f"tildekit-{name}-train.log", env)
    result.update({"train_wall_seconds": wall, "steps_per_second": training_speed(text),
                   "loadavg_before_training": load})
    result["model"] = str(export_nn(run_dir, export, f"tildekit-{name}", logs / f"tildekit-{name}-export.log", env))


# ----------------------------------------------------------------------------- RAVE


def rave_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.is_file() or not (venv / "bin" / "rave").is_file():
        raise SystemExit(f"--rave-venv {venv}: no bin/python or bin/rave: install RAVE 2.3.1 there first "
                         f"(docs/quality.md), "
                         f"or pass --systems tildekit")
    check = subprocess.run([str(python), "-c", "import rave, scripts.export, tensorboardX"], capture_output=True,
                           text=True)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        raise SystemExit(f"--rave-venv {venv}: RAVE does not import ({last}): "
                         f"{venv}/bin/pip install tensorboardX, or see docs/quality.md")
    if shutil.which("ffmpeg") is None:
        raise SystemExit("rave preprocess decodes with ffmpeg: apt-get install ffmpeg")
    return python


def train_rave(pair: dict, corpus: Path, work: Path, threads: int, python: Path, result: dict) -> None:
    """RAVE's preprocess, train and export; fills ``result`` as it goes."""
    name = pair["profile"]
    rate, window, steps = pair["sample_rate"], pair["window"], pair["steps"]
    base = work / "rave" / name
    data = work / "rave" / f"data-{rate}-{window}"
    runs, export = base / "runs", base / "export"
    logs = work / "logs"
    env = thread_env(threads)
    if not (data / "metadata.yaml").is_file():
        # RAVE's default layout: chunks of 2 x num_signal samples, random windows of n_signal in them
        log = logs / f"rave-preprocess-{rate}-{window}.log"
        run([str(python.parent / "rave"), "preprocess", "--input_path", str(corpus / "train"),
             "--output_path", str(data), "--sampling_rate", str(rate), "--num_signal", str(window),
             "--channels", "1"], f"rave preprocess ({rate} Hz)", log, env)
        if not (data / "metadata.yaml").is_file():
            raise StageFailed(f"rave preprocess wrote no dataset in {data}: see {log}")
    if base.exists():
        shutil.rmtree(base)
    timings = base / "timings.json"
    command = [str(python), str(Path(__file__).resolve()), "rave-train", str(steps), str(threads), str(timings),
               "--name", name, "--db_path", str(data), "--out_path", str(runs),
               *[f"--config={c}" for c in PAIRS[name]], f"--override=SAMPLING_RATE={rate}",
               "--max_steps", str(steps), "--val_every", str(steps), "--save_every", str(10 * steps + 10),
               "--n_signal", str(window), "--batch", str(pair["batch"]),
               "--channels", "1", "--gpu", "-1", "--workers", "0", "--noprogress"]
    load = os.getloadavg()[0]
    _, wall = run(command, f"rave train ({'+'.join(PAIRS[name])})", logs / f"rave-{name}-train.log", env)
    timed = json.loads(timings.read_text())
    result.update({"train_wall_seconds": wall, "steps_per_second": timed["steps_per_second"],
                   "loadavg_before_training": load})
    if timed["steps"] != steps:
        raise StageFailed(f"rave train ({name}) ran {timed['steps']} steps instead of {steps}: see "
                         f"{logs / f'rave-{name}-train.log'}")
    run_dirs = [p for p in runs.iterdir() if p.is_dir()]
    if len(run_dirs) != 1:
        raise StageFailed(f"rave train ({name}): expected one run folder in {runs}, found {len(run_dirs)}")
    run([str(python), "-m", "scripts.export", f"--run={run_dirs[0]}", f"--output={export}", f"--name=rave-{name}",
         "--streaming"], f"rave export ({name})", logs / f"rave-{name}-export.log", env)
    result["model"] = str(export / f"rave-{name}_streaming.ts")


def rave_window(python: Path, pair: dict, work: Path) -> int:
    """The smallest window RAVE's config trains on, from the profile's (doubled until it fits)."""
    cache = work / "rave" / f"window-{'+'.join(PAIRS[pair['profile']])}-{pair['sample_rate']}.json"
    if not cache.is_file():
        command = [str(python), str(Path(__file__).resolve()), "rave-receptive-field", str(pair["sample_rate"]),
                   *PAIRS[pair["profile"]]]
        text, _ = run(command, f"RAVE's receptive field ({pair['profile']})",
                      work / "logs" / f"rave-{pair['profile']}-receptive-field.log", thread_env(1))
        cache.parent.mkdir(parents=True, exist_ok=True)
        lines = [line for line in text.splitlines() if line.startswith('{"left"')]
        if not lines:
            raise StageFailed(f"RAVE's receptive field ({pair['profile']}): no result; see the log in {work / 'logs'}")
        cache.write_text(lines[-1])
    field = json.loads(cache.read_text())
    window = pair["window"]
    while (window - field["left"] - field["right"]) // field["n_band"] <= field["largest_stft"] // 2:
        window *= 2
    return window


def rave_receptive_field_entry(argv: list[str]) -> None:
    """``quality.py rave-receptive-field RATE CONFIG...`` (RAVE's venv): one JSON line with RAVE's own
    receptive field measurement (rave.core.get_rave_receptive_field), band count and largest STFT."""
    import cached_conv as cc
    import gin
    import rave
    import rave.core
    import torch

    torch.set_num_threads(1)
    cc.use_cached_conv(False)  # as in training
    gin.parse_config_files_and_bindings([f"{c}.gin" for c in argv[1:]], [f"SAMPLING_RATE={int(argv[0])}"])
    left, right = rave.core.get_rave_receptive_field(rave.RAVE(n_channels=1), n_channels=1)
    print(json.dumps({"left": int(left), "right": int(right), "n_band": int(gin.query_parameter("%N_BAND")),
                      "largest_stft": max(gin.query_parameter("core.MultiScaleSTFT.scales"))}))


def rave_train_entry(argv: list[str]) -> None:
    """``quality.py rave-train STEPS THREADS TIMINGS [rave train flags]``, run by RAVE's venv python.

    RAVE's own ``scripts/train.py`` main, with the benchmark's wrappers (module docstring): one
    validation at the last step, a validation part large enough for RAVE's PCA, and a callback
    that times each ``training_step`` (written to TIMINGS at the end). Imports no tildekit.
    """
    steps, threads, timings = int(argv[0]), int(argv[1]), Path(argv[2])
    import gin
    import pytorch_lightning as pl
    import torch
    from absl import app
    from scripts import train as rave_train
    from torch.utils.data import DataLoader, Subset

    torch.set_num_threads(threads)

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.began = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.began = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.seconds.append(time.perf_counter() - self.began)

        def on_train_end(self, trainer, pl_module) -> None:
            total = sum(self.seconds)  # every step, as tildekit's `speed` counts them
            timings.write_text(json.dumps({
                "steps": len(self.seconds), "global_step": int(trainer.global_step),
                "steps_per_second": len(self.seconds) / total if total > 0 else None,
                "step_seconds": self.seconds}))

    timer = StepTimer()
    make_trainer = pl.Trainer.__init__

    def trainer_init(self, *args, **kwargs) -> None:
        kwargs["callbacks"] = [timer, *kwargs.get("callbacks", [])]
        kwargs.pop("val_check_interval", None)
        kwargs["check_val_every_n_epoch"] = None  # count batches across epochs: one validation, at the end
        kwargs["val_check_interval"] = steps
        make_trainer(self, *args, **kwargs)

    pl.Trainer.__init__ = trainer_init
    fit = pl.Trainer.fit

    def fit_with_pca_sized_validation(self, model, train_loader, val_loader, *args, **kwargs):
        # gin is parsed by now: RAVE's compression and latent size as the run uses them
        compression = math.prod(gin.query_parameter("%RATIOS")) * gin.query_parameter("%N_BAND")
        frames = max(1, rave_train.FLAGS.n_signal // compression)
        dataset = train_loader.dataset.dataset  # random_split's Subset -> the whole dataset
        needed = min(len(dataset), math.ceil(gin.query_parameter("%LATENT_SIZE") / frames))
        if len(val_loader.dataset) < needed:
            print(f"quality.py: RAVE's validation part ({len(val_loader.dataset)} chunk(s)) is too small for "
                  f"its latent PCA: validating on the first {needed} chunks of the dataset",
                  file=sys.stderr, flush=True)
            val_loader = DataLoader(Subset(dataset, range(needed)), val_loader.batch_size, False, num_workers=0)
        return fit(self, model, train_loader, val_loader, *args, **kwargs)

    pl.Trainer.fit = fit_with_pca_sized_validation
    sys.argv = ["rave-train", *argv[3:]]
    app.run(rave_train.main)


def train_system(result: dict, pair: dict, corpus: Path, work: Path, threads: int, overrides: list[str],
                 python: Path | None) -> None:
    """Train and export ``result["system"]``'s model of ``pair``; a failure lands in ``result["error"]``."""
    from tildekit.errors import TildekitError

    system = result["system"]
    print(f"{system} {pair['profile']}: {pair['steps']} steps, batch {pair['batch']}, window {pair['window']}, "
          f"{pair['sample_rate']} Hz ...", flush=True)
    try:
        if system == "tildekit":
            train_tildekit(pair, corpus, work, threads, overrides, result)
        else:
            assert python is not None, "RAVE's python is checked before any training"
            train_rave(pair, corpus, work, threads, python, result)
    except (StageFailed, TildekitError) as exc:
        result["error"] = str(exc)


# ----------------------------------------------------------------------------- evaluation


def evaluate_export(result: dict, pair: dict, corpus: Path, work: Path) -> dict:
    """The test split through the file's streaming model with `tildekit eval`'s code."""
    from tildekit.export.card_io import model_card
    from tildekit.export.evaluate import evaluate, resolve_audio

    path = Path(result["model"])
    card = model_card(path)  # a RAVE file: derived, its delay measured with an impulse
    ratio = card.highest_ratio
    buffer = ratio * math.ceil(EVAL_BUFFER / ratio)
    out = work / "eval" / f"{result['system']}-{pair['profile']}"
    began = time.perf_counter()
    report = evaluate(path, resolve_audio([corpus / "test"]), out, buffer=buffer)
    data = report.to_json()
    return {"eval_dir": str(out), "eval_seconds": time.perf_counter() - began, "buffer": buffer,
            "sample_rate": card.sample_rate, "delay": card.delay, "latent_size": card.latent_size,
            "figures": data["overall"]["model"],
            "references": {name: data["overall"][name] for name in REFERENCES}}


# ----------------------------------------------------------------------------- the table


def _cell(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.{digits}f}"


def table(rows: list[dict], quick: bool, overrides: list[str]) -> str:
    heads = ["system", "steps", "batch", "window", "rate", *FIGURE_HEADS, "train steps/s", "train wall s",
             "delay ms"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    references: dict[int, dict] = {}
    for row in rows:
        label = _label(row)
        figures = row["figures"]
        lines.append("| " + " | ".join([
            label, str(row["steps"]), str(row["batch"]),
            str(row["window"]) + (f" (raised from {row['profile_window']})" if row["window"] != row["profile_window"]
                                  else ""),
            f"{row['sample_rate'] // 1000} kHz",
            *[_cell(figures.get(name)) for name in FIGURES],
            _cell(row["steps_per_second"]),
            "n/a" if row["train_wall_seconds"] is None else f"{row['train_wall_seconds']:.0f}",
            "n/a" if row["delay"] is None else f"{1000 * row['delay'] / row['sample_rate']:.0f}"]) + " |")
        if row["references"]:
            references.setdefault(row["sample_rate"], row["references"])
    for rate, refs in sorted(references.items()):
        for name, label in REFERENCES.items():
            lines.append("| " + " | ".join([label, "", "", "", f"{rate // 1000} kHz",
                                            *[_cell(refs[name].get(f)) for f in FIGURES], "", "", ""]) + " |")
    title = ("Smoke run (--quick: tiny corpus, a few steps; the figures say nothing about quality)"
             if quick else "Quality at equal steps")
    if overrides:
        title += "; tildekit profiles with " + ", ".join(f"`--set {o}`" for o in overrides)
    failures = [f"- {_label(row)}: {row['error']}" for row in rows if row["error"]]
    notes = ("\n\nFailed (n/a in the table):\n\n" + "\n".join(failures)) if failures else ""
    return f"{title}\n\n" + "\n".join(lines) + notes


def _label(row: dict) -> str:
    return (f"tildekit `{row['profile']}`" if row["system"] == "tildekit"
            else f"RAVE `{'` + `'.join(row['rave_configs'])}`")


def markdown(result: dict) -> str:
    settings_line = (f"corpus `{Path(result['corpus']).name}` ({result['test_files']} test files, "
                     f"{result['test_seconds']:.0f} s), {result['threads']} thread(s) per system, "
                     f"{result['wall_seconds'] / 60:.1f} min in all, {result['date']}, {result['host']}")
    return "\n".join([f"# tildekit vs RAVE {result['rave_version'] or ''}".rstrip(), "", settings_line, "",
                      result["table"], "", "Figures: see `tildekit eval --help`. Eval reports: "
                      + ", ".join(f"`{Path(r['eval_dir']).name}`" for r in result["rows"] if r.get("eval_dir")), ""])


# ----------------------------------------------------------------------------- main


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "rave-train":
        rave_train_entry(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "rave-receptive-field":
        rave_receptive_field_entry(sys.argv[2:])
        return
    from tildekit.errors import TildekitError
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="working folder: corpus, datasets, runs, exports, eval reports, "
                                                "quality.md / quality.json")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny corpus, {'/'.join(QUICK_STEPS)} steps, batch {QUICK_BATCH}: a smoke run")
    parser.add_argument("--profiles", default=",".join(PAIRS),
                        help=f"tildekit profiles to compare (each with its RAVE config): {', '.join(PAIRS)}")
    parser.add_argument("--steps", action="append", metavar="N|PROFILE=N",
                        help=f"training steps of both systems, for every profile (N) or one (PROFILE=N); "
                             f"repeatable, applied after the defaults [default: {' '.join(STEPS)}; --quick: "
                             f"{' '.join(QUICK_STEPS)}]")
    parser.add_argument("--batch", type=int, help="batch size of both systems [default: the profile's; "
                                                  f"--quick: {QUICK_BATCH}]")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training [default: 1]")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", dest="overrides",
                        help="override a field of every tildekit profile, as `tildekit train --set` (repeatable; "
                             "recorded in the table's title)")
    parser.add_argument("--systems", default="tildekit,rave", help="tildekit, rave or both [default: both]")
    parser.add_argument("--side-by-side", action="store_true",
                        help="train the two systems of a profile at the same time (one core each): their "
                             "steps/s are then taken under the same load")
    parser.add_argument("--corpus", type=Path, help="an existing corpus folder (benchmarks/corpus.py)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed [default: 0]")
    parser.add_argument("--rave-venv", type=Path, default=DEFAULT_RAVE_VENV,
                        help=f"venv with acids-rave 2.3.1 [default: {DEFAULT_RAVE_VENV}]")
    args = parser.parse_args()

    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    unknown = [p for p in profiles if p not in PAIRS]
    if unknown or not profiles:
        raise SystemExit(f"--profiles: unknown {', '.join(unknown) or '(none given)'} (one of {', '.join(PAIRS)})")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not systems or any(s not in ("tildekit", "rave") for s in systems):
        raise SystemExit(f"--systems {args.systems}: tildekit, rave or tildekit,rave")
    if args.batch is not None and args.batch < 1 or args.threads < 1:
        raise SystemExit("--batch and --threads must be at least 1")
    steps = parse_steps((QUICK_STEPS if args.quick else STEPS) + (args.steps or []), profiles)
    batch = args.batch or (QUICK_BATCH if args.quick else None)
    python = rave_python(args.rave_venv) if "rave" in systems else None
    pairs = {name: settings(name, steps[name], batch, args.overrides) for name in profiles}  # --set checked first

    began = time.perf_counter()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    corpus = corpus_folder(work, args.corpus, args.quick, args.seed)
    manifest = json.loads((corpus / "manifest.json").read_text())
    rows = []
    for name in profiles:
        pair = pairs[name]
        if python is not None:
            try:
                pair["window"] = rave_window(python, pair, work)
            except StageFailed as exc:  # RAVE's row will say what fails; tildekit keeps the profile's window
                print(f"  could not measure RAVE's receptive field: {exc}", flush=True)
        results = {system: {"system": system, **pair, "steps_per_second": None, "train_wall_seconds": None,
                            "figures": {}, "references": None, "delay": None, "error": None}
                   for system in systems}

        if args.side_by_side:
            trainings = [threading.Thread(target=train_system, args=(results[system], pair, corpus, work, args.threads,
                                                                     args.overrides, python))
                         for system in systems]
            for training in trainings:
                training.start()
            for training in trainings:
                training.join()
        for system in systems:
            result = results[system]
            if not args.side_by_side:
                train_system(result, pair, corpus, work, args.threads, args.overrides, python)
            try:
                if result["error"] is None:
                    result.update(evaluate_export(result, pair, corpus, work))
            except (StageFailed, TildekitError) as exc:
                result["error"] = str(exc)
            if result["error"] is not None:
                print(f"  {system} {name} FAILED: {result['error']}", flush=True)
            else:
                print(f"  {system} {name}: {result['steps_per_second'] or 0:.3f} steps/s, trained in "
                      f"{result['train_wall_seconds']:.0f} s; "
                      + ", ".join(f"{h} {_cell(result['figures'].get(f))}" for h, f in zip(FIGURE_HEADS, FIGURES)),
                      flush=True)
            rows.append(result)

    rave_version = None
    if python is not None:
        rave_version = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                                       "print(m.version('acids-rave'))"], capture_output=True, text=True).stdout.strip()
    test = [f for f in manifest["files"] if f["split"] == "test"]
    result = {"format": RESULT_FORMAT, "quick": args.quick, "corpus": str(corpus), "test_files": len(test),
              "test_seconds": sum(f["seconds"] for f in test), "threads": args.threads,
              "rave_version": rave_version, "tildekit_overrides": args.overrides,
              "side_by_side": args.side_by_side, "date": time.strftime("%Y-%m-%d"),
              "host": os.uname().nodename,
              "wall_seconds": time.perf_counter() - began, "rows": rows}
    result["table"] = table(rows, args.quick, args.overrides)
    (work / "quality.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    (work / "quality.md").write_text(markdown(result), encoding="utf-8")
    print()
    print(result["table"])
    print(f"\nwrote {work / 'quality.md'} and {work / 'quality.json'}")
    if any(row["error"] for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

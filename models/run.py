"""The run dir: what ``tildekit train`` writes, and the reader every exporter uses.

::

    RUN_DIR/
      profile.yaml                  the profile the run trains (Profile.to_yaml())
      checkpoints/step-00001000.pt  the last two checkpoints
      checkpoints/last.pt           the newest of them (hard link or copy)
      metrics.jsonl                 one JSON record per line: {"kind": "train"|"validation", "step", ...}
      latent_stats.json             LatentStats, from the end of phase 1 (or of a shorter run)
      plots/losses.png, plots/spectrogram.png

A checkpoint holds only plain tensors, numbers, strings and lists, so it loads with
``torch.load(..., weights_only=True)``: ``format``, ``step``, ``model``, ``discriminator``,
``generator_optimizer``, ``discriminator_optimizer`` (state dicts), ``rng`` (torch, numpy and
python random states) and ``profile`` (the YAML text). Files are written under a temporary
name and renamed, so a run killed at any moment leaves only complete checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import yaml

from tildekit.errors import TildekitError
from tildekit.models.config import DDSPConfig, ModelConfig, Profile, ProfileError, profile_from_dict
from tildekit.models.latent_stats import FILE_NAME as LATENT_STATS_FILE
from tildekit.models.latent_stats import LatentStats

CHECKPOINT_FORMAT = 1
PROFILE_FILE = "profile.yaml"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
METRICS_FILE = "metrics.jsonl"
PLOTS_DIR = "plots"
KEEP_CHECKPOINTS = 2
_STEP_FILE = re.compile(r"^step-(\d{8,})\.pt$")


def step_file_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def read_profile(run_dir: Path) -> Profile:
    path = run_dir / PROFILE_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TildekitError(f"cannot read '{path}' ({exc})") from None
    except yaml.YAMLError as exc:
        raise TildekitError(f"'{path}' is not valid YAML ({exc}): the run dir is damaged") from None
    try:
        return profile_from_dict(data, origin=str(path))
    except ProfileError as exc:
        raise TildekitError(f"{exc} (the run's stored profile; was it edited by hand?)") from None


def step_checkpoints(run_dir: Path) -> list[Path]:
    """The ``step-*.pt`` checkpoints, oldest first."""
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        raise TildekitError(f"checkpoint '{path}' is unreadable ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "step" not in checkpoint:
        raise TildekitError(f"'{path}' is not a tildekit checkpoint")
    if int(checkpoint.get("format", 0)) > CHECKPOINT_FORMAT:
        raise TildekitError(f"checkpoint '{path}' was written by a newer tildekit: upgrade tildekit")
    return checkpoint


def newest_checkpoint(run_dir: Path) -> Path | None:
    """``last.pt``, or the newest step file when ``last.pt`` is missing."""
    last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    if last.is_file():
        return last
    steps = step_checkpoints(run_dir)
    return steps[-1] if steps else None


def _fsync_write(path: Path, write) -> None:
    with open(path, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def write_checkpoint(run_dir: Path, checkpoint: dict[str, Any]) -> Path:
    """Write ``step-XXXXXXXX.pt`` and ``last.pt`` atomically; keep the newest two step files."""
    folder = run_dir / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / step_file_name(int(checkpoint["step"]))
    temporary = folder / f".{target.name}.tmp"
    _fsync_write(temporary, lambda handle: torch.save(checkpoint, handle))
    os.replace(temporary, target)
    last_temporary = folder / f".{LAST_CHECKPOINT}.tmp"
    last_temporary.unlink(missing_ok=True)
    try:
        os.link(target, last_temporary)  # no second copy of a large file where links work
    except OSError:
        shutil.copyfile(target, last_temporary)
    os.replace(last_temporary, folder / LAST_CHECKPOINT)
    for old in step_checkpoints(run_dir)[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)
    return target


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a kill: the rest of the log is still good
    return records


class RunDir:
    """A training run on disk. Raises TildekitError when ``path`` is not a run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise TildekitError(f"run dir '{self.path}' does not exist: train one with "
                                "`tildekit train DATASET_DIR RUN_DIR --profile NAME`")
        if not (self.path / PROFILE_FILE).is_file():
            raise TildekitError(f"'{self.path}' is not a tildekit run dir (no {PROFILE_FILE}): "
                                "point to the folder given to `tildekit train`")
        self.profile: Profile = read_profile(self.path)
        self._checkpoint: dict[str, Any] | None = None

    @property
    def checkpoint_path(self) -> Path:
        path = newest_checkpoint(self.path)
        if path is None:
            raise TildekitError(f"run dir '{self.path}' has no checkpoint yet: train longer "
                                f"(one is written every {self.profile.train.checkpoint_every} steps) "
                                "or continue with `tildekit train ... --resume`")
        return path

    @property
    def checkpoint(self) -> dict[str, Any]:
        if self._checkpoint is None:
            self._checkpoint = load_checkpoint(self.checkpoint_path)
        return self._checkpoint

    @property
    def step(self) -> int:
        return int(self.checkpoint["step"])

    def load_model(self, streaming: bool):
        """The checkpoint's model in eval mode (an autoencoder's weight norm still applied)."""
        from tildekit.models.autoencoder import EarlierLayout, build_model, load_weights

        cfg = self.profile.model
        model: nn.Module
        if isinstance(cfg, DDSPConfig):
            from tildekit.models.ddsp.model import build_ddsp

            model = build_ddsp(cfg, streaming)
        elif isinstance(cfg, ModelConfig):
            model = build_model(cfg, streaming)
        else:  # its checkpoint carries the knobs the model is built with
            raise TildekitError(f"'{self.path}' is a run of the {self.profile.family} family: load it with "
                                "tildekit.models.effects.train.load_effect_run")
        try:
            load_weights(model, self.checkpoint["model"])
        except EarlierLayout as exc:
            raise TildekitError(f"checkpoint '{self.checkpoint_path}' was {exc}") from None
        except ValueError as exc:
            raise TildekitError(f"checkpoint '{self.checkpoint_path}' does not fit the run's profile "
                                f"({exc}): was {PROFILE_FILE} edited?") from None
        return model.eval()

    @property
    def latent_stats(self) -> LatentStats | None:
        path = self.path / LATENT_STATS_FILE
        return LatentStats.load(path) if path.is_file() else None

    @property
    def metrics(self) -> dict[str, Any]:
        """The last training losses and the last validation distance, merged."""
        last: dict[str, Any] = {}
        for record in read_metrics(self.path):
            kind = record.get("kind")
            if kind == "train":
                last.update({k: v for k, v in record.items() if k not in ("kind",)})
            elif kind == "validation" and "distance" in record:
                last["validation_distance"] = record["distance"]
                last["validation_step"] = record.get("step")
        return last

    def __repr__(self) -> str:
        return f"RunDir('{self.path}', profile={self.profile.name!r})"

"""Which trainer trains each model family: the one place that names them all.

``tildekit train`` (and the demo, and tests) call :func:`train` here; the shared training loop
(:func:`tildekit.models.trainer.train`) takes the mapping as an argument, so the loop imports
no family built on top of it.
"""

from __future__ import annotations

from pathlib import Path

from tildekit.models.config import Profile
from tildekit.models.ddsp.training import DDSPTrainer
from tildekit.models.trainer import Trainer, TrainSummary
from tildekit.models.trainer import train as train_loop

# Profile family -> its Trainer; the autoencoder's is the loop's own default.
FAMILY_TRAINERS: dict[str, type[Trainer]] = {"ddsp": DDSPTrainer}


def train(dataset_dir: str | Path, run_dir: str | Path, profile: Profile | None, steps: int | None = None,
          resume: bool = False, progress: bool = True, device: str = "auto") -> TrainSummary:
    """:func:`tildekit.models.trainer.train` with every family's trainer."""
    return train_loop(dataset_dir, run_dir, profile, steps=steps, resume=resume, progress=progress,
                      device=device, family_trainers=FAMILY_TRAINERS)

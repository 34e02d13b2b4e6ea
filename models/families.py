"""Which trainer trains each model family: the one place that names them all.

``tildekit train`` (and the demo, and tests) call :func:`train` here; the shared training loop
(:func:`tildekit.models.trainer.train`) takes the mapping as an argument, so the loop imports
no family built on top of it. The effect family trains on dry/wet pair sets with its own
one-process loop (:func:`tildekit.models.effects.train.train_effect`), chosen here by family.
"""

from __future__ import annotations

from pathlib import Path

from tildekit.models.config import Profile
from tildekit.models.ddsp.training import DDSPTrainer
from tildekit.models.effects.train import train_effect
from tildekit.models.run import PROFILE_FILE, read_profile
from tildekit.models.trainer import Trainer, TrainSummary
from tildekit.models.trainer import train as train_loop

# Profile family -> its Trainer; the autoencoder's is the loop's own default.
FAMILY_TRAINERS: dict[str, type[Trainer]] = {"ddsp": DDSPTrainer}
# Families with a loop of their own (not a Trainer in the shared loop).
OWN_LOOPS = {"effect": train_effect}


def train(dataset_dir: str | Path, run_dir: str | Path, profile: Profile | None, steps: int | None = None,
          resume: bool = False, progress: bool = True, device: str = "auto") -> TrainSummary:
    """:func:`tildekit.models.trainer.train` with every family's trainer (an effect run: its own loop)."""
    family = profile.family if profile is not None else None
    if family is None and resume and (Path(run_dir) / PROFILE_FILE).is_file():
        family = read_profile(Path(run_dir)).family
    if family in OWN_LOOPS:
        return OWN_LOOPS[family](dataset_dir, run_dir, profile, steps=steps, resume=resume, progress=progress)
    return train_loop(dataset_dir, run_dir, profile, steps=steps, resume=resume, progress=progress,
                      device=device, family_trainers=FAMILY_TRAINERS)

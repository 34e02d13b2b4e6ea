"""The loudness range of a DDSP run's training data, saved in the run dir as ``controls.json``.

A synth played from notes (the synth patches, OSC notes) maps velocity onto the loudness the
model learned: the range is the training frames' loudness between two percentiles
(``contract/synth_controls.LOUDNESS_PERCENTILES``), measured with the model's own features.
The export copies it into the card's ``extra["loudness_range"]``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tildekit.errors import TildekitError
from tildekit.models.contract.atomic import atomic_write_text
from tildekit.models.contract.synth_controls import LOUDNESS_LIMITS, LOUDNESS_PERCENTILES, LOUDNESS_RANGE_KEY
from tildekit.models.ddsp.model import DDSP

FILE_NAME = "controls.json"


@torch.no_grad()
def loudness_range(model: DDSP, windows: Sequence[torch.Tensor], batch_size: int) -> list[float]:
    """[low, high] dB of the windows' frames (percentiles), within the card's limits."""
    # a window's first frames analyse the zeros before its start: not a level of the data
    skip = -(-int(model.analysis.loudness_window) // int(model.hop))
    values = []
    for start in range(0, len(windows), batch_size):
        x = torch.stack(list(windows[start:start + batch_size]))
        values.append(model.features(x)[:, 1, skip:].flatten().double().numpy())
    loudness = np.concatenate(values)
    low, high = (float(np.clip(v, *LOUDNESS_LIMITS)) for v in np.percentile(loudness, LOUDNESS_PERCENTILES))
    high = max(high, low + 1.0)  # a dataset of one level still gives velocities a range
    return [round(low, 2), round(min(high, LOUDNESS_LIMITS[1]), 2)]


def save(run_dir: Path, span: list[float]) -> None:
    atomic_write_text(run_dir / FILE_NAME, json.dumps({LOUDNESS_RANGE_KEY: span}) + "\n")


def card_extra(run_dir: Path) -> dict[str, Any]:
    """What the card's ``extra`` gets from the run (nothing for a run trained before this file)."""
    path = run_dir / FILE_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {LOUDNESS_RANGE_KEY: data[LOUDNESS_RANGE_KEY]}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise TildekitError(f"{path}: unreadable ({type(exc).__name__}: {str(exc)[:80]}); delete it "
                            f"(the export then uses a default loudness range) or train again") from None

"""Every model family the export targets must take, each as a tiny random model and its card.

One entry per family: tests/test_targets.py runs every target against each of them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tildekit.export.exportable import Exportable
from tildekit.models.contract.card import ModelCard


def tiny_autoencoder() -> tuple[Exportable, ModelCard]:
    from tildekit.export.core import ExportCore
    from tildekit.export.model_card import card_from_core, exportable
    from tildekit.models.autoencoder import build_model
    from tildekit.models.config import load_profile

    torch.manual_seed(0)
    cfg = load_profile("small", ["model.capacity=4", "model.max_channels=16", "model.latent_size=4"]).model
    core = ExportCore(build_model(cfg, True))
    return exportable(core), card_from_core(core, "tinyae", None, "small", 0)


FAMILIES: dict[str, Callable[[], tuple[Exportable, ModelCard]]] = {
    "autoencoder": tiny_autoencoder,
}

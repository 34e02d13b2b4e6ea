"""The nn~ target: ``NAME.ts``, the scripted nn~ module (export/nn_tilde.py) with the card,
checked as nn~ loads and calls it (export/check.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tildekit.errors import TildekitError
from tildekit.export.card_io import card_extra_files
from tildekit.export.check_result import CheckResult
from tildekit.export.core import ExportCore
from tildekit.export.exportable import Exportable
from tildekit.export.target import Target, write_checked
from tildekit.models.contract.card import ModelCard


class NnTarget(Target):
    name = "nn"

    def files(self, model_name: str) -> list[str]:
        return [f"{model_name}.ts"]

    def write(self, model: Exportable, card: ModelCard, folder: Path, quick: bool = False) -> list[Path]:
        core = model.module if model.family == "autoencoder" and isinstance(model.module, ExportCore) else model
        return [export_nn(core, card, folder / self.files(card.name)[0], quick=quick)]

    def check(self, paths: Sequence[Path], card: ModelCard | None = None, quick: bool = False) -> list[CheckResult]:
        from tildekit.export.check import check_file

        return [r for path in paths for r in check_file(path, quick=quick)]


def export_nn(core: ExportCore | Exportable, card: ModelCard, path: str | Path, quick: bool = False) -> Path:
    """Script ``core`` (the autoencoder's ExportCore, or any family's Exportable) as an nn~
    module and write it to ``path`` (``.ts``), checked before it is renamed into place; a
    failing check raises TildekitError naming each failed item."""
    from tildekit.export.nn_tilde import script_nn_tilde

    path = Path(path)
    if path.suffix != ".ts":
        raise TildekitError(f"{path}: nn~ looks for *.ts files: name the output *.ts")
    if not path.parent.is_dir():
        raise TildekitError(f"{path.parent} does not exist: create the output folder first")
    if not isinstance(core, ExportCore) and not hasattr(core, "methods"):
        raise TildekitError(f"{card.name}: the nn~ module routes an ExportCore or an Exportable, "
                            f"got {type(core).__name__}")
    scripted = script_nn_tilde(core, card)

    def save(temporaries: list[Path]) -> None:
        torch.jit.save(scripted, str(temporaries[0]), _extra_files=card_extra_files(card))

    write_checked([path], save, lambda temps: NnTarget().check(temps, card, quick), path.name)
    module: Any = core if isinstance(core, ExportCore) else core.module
    module.reset_state()
    return path

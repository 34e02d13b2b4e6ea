"""Export a run to one or several targets: the function behind `tildekit export`.

The targets (export/target.py) are registered in :func:`target_types`. Each writes its files and
loads them back the way its host does to check them; the files of every
target are moved into place together once all passed, so a returned path is a checked file and
a failing target leaves ``--out`` as it was.
"""

from __future__ import annotations

import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tildekit.errors import TildekitError
from tildekit.export.core import ExportCore
from tildekit.export.exportable import Exportable
from tildekit.export.model_card import exportable
from tildekit.export.target import Target
from tildekit.models.contract.card import ModelCard
from tildekit.models.contract.hosts import DEFAULT_BUFFER
from tildekit.models.contract.names import check_name
from tildekit.models.outputs import (
    output_dir,
    pid_alive,
    refuse_foreign_file,
    remove_owned,
    stale_folders,
    write_error,
    write_marker,
)

STAGE_PREFIX = ".tildekit-export-"  # hidden staging folder inside --out, removed on every exit
STAGE_KIND = "export-stage"  # its marker (models/outputs.py); a killed export's stage is removed later


def target_types() -> dict[str, type[Target]]:
    """Every export target by name: a new target is one module and one entry here."""
    from tildekit.export.target_neutone import NeutoneTarget
    from tildekit.export.target_nn import NnTarget
    from tildekit.export.target_onnx import OnnxTarget

    return {t.name: t for t in (NnTarget, NeutoneTarget, OnnxTarget)}


TARGETS = ("nn", "neutone", "onnx")  # the names, without importing torch


def make_target(name: str, buffer: int = DEFAULT_BUFFER) -> Target:
    types = target_types()
    if name not in types:
        raise TildekitError(f"unknown export target {name!r}: choose from {', '.join(types)} or all")
    return types[name](buffer)


def export_core(core: ExportCore | Exportable, card: ModelCard, targets: tuple[str, ...] | list[str],
                out_dir: str | Path, on_written: Callable[[Path], None] | None = None,
                buffer: int = DEFAULT_BUFFER, quick: bool = False) -> list[Path]:
    """Write ``core`` for every target in ``targets`` into ``out_dir``; returns the checked files.

    All or nothing: every target is written and checked in a hidden staging folder inside
    ``out_dir``; only when all of them pass are the files moved into place. A file already
    in ``out_dir`` under one of their names is replaced only when it is a tildekit export.
    """
    chosen = [make_target(t, buffer) for t in targets]
    model = exportable(core) if isinstance(core, ExportCore) else core
    name = check_name(card.name, "model name")
    out = output_dir(out_dir, "--out")
    for planned in planned_files(targets, name):  # fail before any work; checked again at the end
        refuse_foreign_file(out / planned, is_tildekit_export, "--out")
    for stale in stale_folders(out, f"{STAGE_PREFIX}*", STAGE_KIND, pid_alive):  # from killed exports
        remove_owned(stale, STAGE_KIND)
    try:
        stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=out))
        write_marker(stage, STAGE_KIND, building=os.getpid())
    except OSError as exc:
        raise write_error(out, exc) from None
    try:
        staged: list[Path] = []
        for target in chosen:
            _reset(model)
            try:
                staged += target.write(model, card, stage, quick)
            except TildekitError as exc:
                raise TildekitError(f"{str(exc).replace(str(stage), str(out))}"
                                    + ("" if len(chosen) == 1 else f" (--target {target.name}; no target was written)")
                                    ) from None
            except OSError as exc:
                raise write_error(out, exc) from None
        finals = [out / path.name for path in staged]
        for final in finals:
            refuse_foreign_file(final, is_tildekit_export, "--out")
        try:
            for path, final in zip(staged, finals):
                os.replace(path, final)
        except OSError as exc:
            raise write_error(out, exc) from None
    finally:
        remove_owned(stage, STAGE_KIND)
        _reset(model)
    for final in finals:
        if on_written is not None:
            on_written(final)
    return finals


def _reset(model: Exportable) -> None:
    """Each target starts from the initial streaming state (every streaming module has reset_state)."""
    module: Any = model.module
    module.reset_state()


def planned_files(targets: tuple[str, ...] | list[str], name: str) -> list[str]:
    """Every file name the writers of ``targets`` may produce for model ``name``."""
    return [n for target in targets for n in make_target(target).files(name)]


def is_tildekit_export(path: Path) -> bool:
    """Does ``path`` hold a tildekit export (a model file with its card, or an ONNX state file)?"""
    if path.suffix == ".npz":  # initial streaming state next to an .onnx: arrays only
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return False
        return bool(names) and all(n.endswith(".npy") and "/" not in n for n in names)
    from tildekit.export.card_io import read_card

    try:
        read_card(path)
    except TildekitError:
        return False
    return True


def export_run(run_dir: str | Path, targets: tuple[str, ...] | list[str], out_dir: str | Path,
               name: str | None = None, latent_dims: int | None = None, fidelity: float | None = None,
               on_written: Callable[[Path], None] | None = None,
               buffer: int = DEFAULT_BUFFER, quick: bool = False) -> tuple[ModelCard, list[Path]]:
    """Export the newest checkpoint of ``run_dir`` (any family with an export adapter).

    ``targets`` may contain "all": every target that takes the run's family; the targets left
    out are named in one warning.
    """
    from tildekit.export.prepare import exportable_from_run

    if Path(out_dir).exists() and not Path(out_dir).is_dir():  # before loading anything
        output_dir(out_dir, "--out")
    model, card = exportable_from_run(run_dir, latent_dims=latent_dims, fidelity=fidelity, name=name)
    chosen = tuple(targets)
    if "all" in targets:
        chosen = supported_targets(card.family)
        left = [t for t in TARGETS if t not in chosen]
        if left:
            warnings.warn(f"{card.name}: {', '.join(left)} export of {card.family} models is not available "
                          f"yet: --target all exported {', '.join(chosen)}", stacklevel=2)
    return card, export_core(model, card, chosen, out_dir, on_written, buffer, quick)


def supported_targets(family: str) -> tuple[str, ...]:
    """The targets that export models of ``family``."""
    return tuple(name for name, kind in target_types().items() if kind().takes(family))

"""Export a run to one or several targets: the function behind `tildekit export`.

Each target writer loads its file back the way its host does and checks it; the files of every
target are moved into place together once all passed, so a returned path is a checked file and
a failing target leaves ``--out`` as it was.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from tildekit.errors import TildekitError
from tildekit.export.core import ExportCore
from tildekit.models.contract.attributes import METHODS
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

TARGETS = ("nn", "neutone", "onnx")
STAGE_PREFIX = ".tildekit-export-"  # hidden staging folder inside --out, removed on every exit
STAGE_KIND = "export-stage"  # its marker (models/outputs.py); a killed export's stage is removed later




def _write_nn(core: ExportCore, card: ModelCard, out_dir: Path, name: str, buffer: int) -> list[Path]:
    from tildekit.export.nn_tilde import export_nn

    return [export_nn(core, card, out_dir / f"{name}.ts")]


def _write_neutone(core: ExportCore, card: ModelCard, out_dir: Path, name: str, buffer: int) -> list[Path]:
    from tildekit.export.neutone import TildekitW2W, export_neutone

    path = out_dir / f"{name}.nm"
    export_neutone(TildekitW2W(core, card), card, path)
    return [path]


def _write_onnx(core: ExportCore, card: ModelCard, out_dir: Path, name: str, buffer: int) -> list[Path]:
    """ONNX graphs have a fixed time axis of ``buffer`` samples (the fastest in ONNX Runtime)."""
    from tildekit.export.onnx_export import export_onnx

    return list(export_onnx(core, card, out_dir, name, buffer=buffer))


WRITERS: dict[str, Callable[[ExportCore, ModelCard, Path, str, int], list[Path]]] = {
    "nn": _write_nn, "neutone": _write_neutone, "onnx": _write_onnx,
}


def export_core(core: ExportCore, card: ModelCard, targets: tuple[str, ...] | list[str],
                out_dir: str | Path, on_written: Callable[[Path], None] | None = None,
                buffer: int = DEFAULT_BUFFER) -> list[Path]:
    """Write ``core`` for every target in ``targets`` into ``out_dir``; returns the checked files.

    All or nothing: every target is written and checked in a hidden staging folder inside
    ``out_dir``; only when all of them pass are the files moved into place. A file already
    in ``out_dir`` under one of their names is replaced only when it is a tildekit export.
    """
    unknown = [t for t in targets if t not in WRITERS]
    if unknown:
        raise TildekitError(f"unknown export target(s) {unknown}: choose from {', '.join(TARGETS)} or all")
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
        for target in targets:
            core.reset_state()
            try:
                staged += WRITERS[target](core, card, stage, name, buffer)
            except TildekitError as exc:
                raise TildekitError(f"{str(exc).replace(str(stage), str(out))}"
                                    + ("" if len(targets) == 1 else f" (--target {target}; no target was written)")
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
        core.reset_state()
    for final in finals:
        if on_written is not None:
            on_written(final)
    return finals


def planned_files(targets: tuple[str, ...] | list[str], name: str) -> list[str]:
    """Every file name the writers of ``targets`` may produce for model ``name``."""
    from tildekit.export.onnx_runtime import method_file_name, state_file_name

    names = {"nn": [f"{name}.ts"], "neutone": [f"{name}.nm"],
             "onnx": [f(name, m) for m in METHODS
                      for f in (method_file_name, state_file_name)]}
    return [n for target in targets for n in names.get(target, [])]


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
               buffer: int = DEFAULT_BUFFER) -> tuple[ModelCard, list[Path]]:
    """Export the newest checkpoint of ``run_dir``; ``targets`` may contain "all"."""
    from tildekit.export.prepare import core_from_run

    chosen = TARGETS if "all" in targets else tuple(targets)
    if Path(out_dir).exists() and not Path(out_dir).is_dir():  # before loading anything
        output_dir(out_dir, "--out")
    core, card = core_from_run(run_dir, latent_dims=latent_dims, fidelity=fidelity, name=name)
    return card, export_core(core, card, chosen, out_dir, on_written, buffer)

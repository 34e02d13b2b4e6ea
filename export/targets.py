"""Export a run to one or several targets: the function behind `tildekit export`.

Each target writer loads its file back the way its host does and checks it before moving it
into place, so a returned path is a checked file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tildekit.errors import TildekitError
from tildekit.export.core import ExportCore
from tildekit.models.card import ModelCard

TARGETS = ("nn", "neutone", "onnx")


DEFAULT_ONNX_BUFFER = 2048


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
                buffer: int = DEFAULT_ONNX_BUFFER) -> list[Path]:
    """Write ``core`` for every target in ``targets`` into ``out_dir``; returns the checked files."""
    unknown = [t for t in targets if t not in WRITERS]
    if unknown:
        raise TildekitError(f"unknown export target(s) {unknown}: choose from {', '.join(TARGETS)} or all")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for target in targets:
        core.reset_state()
        for path in WRITERS[target](core, card, out, card.name, buffer):
            written.append(path)
            if on_written is not None:
                on_written(path)
    core.reset_state()
    return written


def export_run(run_dir: str | Path, targets: tuple[str, ...] | list[str], out_dir: str | Path,
               name: str | None = None, latent_dims: int | None = None, fidelity: float | None = None,
               on_written: Callable[[Path], None] | None = None,
               buffer: int = DEFAULT_ONNX_BUFFER) -> tuple[ModelCard, list[Path]]:
    """Export the newest checkpoint of ``run_dir``; ``targets`` may contain "all"."""
    from tildekit.export.prepare import core_from_run

    chosen = TARGETS if "all" in targets else tuple(targets)
    core, card = core_from_run(run_dir, latent_dims=latent_dims, fidelity=fidelity, name=name)
    return card, export_core(core, card, chosen, out_dir, on_written, buffer)

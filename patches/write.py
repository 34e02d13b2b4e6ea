"""``write_patches``: the Python API behind ``tildekit patch``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from tildekit.errors import TildekitError
from tildekit.models.card import ModelCard
from tildekit.scripting.oscmap import model_slug
from tildekit.patches.build import forward_graph, osc_graph, transfer_graph
from tildekit.patches.graph import Graph
from tildekit.patches.spec import DEFAULT_BUFFER, DEFAULT_OSC_PORT, HOSTS, PatchSpec, build_spec, model_reference


def _renderers(host: str) -> list[tuple[str, Callable[[Graph], str]]]:
    hosts = list(HOSTS) if host == "both" else [host]
    if any(h not in HOSTS for h in hosts):
        raise TildekitError(f"--host {host!r}: choose pd, max or both")
    out = []
    for h in hosts:
        if h == "pd":
            from tildekit.patches.pd import render_pd
            out.append(("pd", render_pd))
        else:
            from tildekit.patches.maxpat import render_maxpat
            out.append(("max", render_maxpat))
    return out


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def patch_graphs(spec: PatchSpec, host: str) -> dict[str, Graph]:
    """File stem suffix -> graph, for the patches this model supports."""
    graphs: dict[str, Graph] = {}
    if spec.encode and spec.decode:
        graphs["transfer"] = transfer_graph(spec, host)
    if spec.forward:
        graphs["forward"] = forward_graph(spec, host)
    if not graphs:
        methods = ", ".join(spec.card.methods) or "none"
        raise TildekitError(f"model '{spec.card.name}' has neither encode+decode nor forward "
                            f"(methods: {methods}): nothing to patch; re-export it with `tildekit export`")
    graphs["osc"] = osc_graph(spec, host)
    return graphs


def write_patches(model_path_or_card: str | Path | ModelCard, out_dir: str | Path | None = None,
                  host: str = "both", buffer: int = DEFAULT_BUFFER, osc_port: int = DEFAULT_OSC_PORT,
                  model_file: str | Path | None = None) -> list[Path]:
    """Write ``STEM-transfer``, ``STEM-forward`` and ``STEM-osc`` patches for each host.

    ``model_path_or_card`` is an exported ``.ts`` (its card is read from the file, or derived
    from its nn~ methods when it has none, e.g. a RAVE export) or a
    :class:`ModelCard`; with a card, ``model_file`` is where the model is or will be
    (default ``NAME.ts`` in ``out_dir``). Patches go to ``out_dir`` (default: next to the
    model) and name the model relative to themselves, as nn~ resolves it.
    """
    if isinstance(model_path_or_card, ModelCard):
        card = model_path_or_card
        base = Path(out_dir) if out_dir is not None else Path.cwd()
        model = Path(model_file) if model_file is not None else base / f"{model_slug(card.name)}.ts"
        if not model.is_absolute():
            model = base / model
    else:
        from tildekit.export.foreign_nn import model_card

        model = Path(model_path_or_card)
        card = model_card(model)  # an nn~ file without a tildekit card: derived from its methods
        if model.suffix.lower() == ".json":  # a bare card: the model sits beside it
            model = Path(model_file) if model_file is not None else model.with_suffix(".ts")
    out = Path(out_dir) if out_dir is not None else model.parent
    if out.exists() and not out.is_dir():
        raise TildekitError(f"--out {out}: is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    renderers = _renderers(host)
    written: list[Path] = []
    for name, render in renderers:
        spec = build_spec(card, model_reference(model, out), model.stem, buffer, osc_port)
        suffix = ".pd" if name == "pd" else ".maxpat"
        for kind, graph in patch_graphs(spec, name).items():
            path = out / f"{spec.stem}-{kind}{suffix}"
            _write_atomic(path, render(graph))
            written.append(path)
    return written

"""``write_patches``: the Python API behind ``tildekit patch``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tildekit.errors import TildekitError
from tildekit.models.contract.atomic import atomic_write_text
from tildekit.models.contract.card import ModelCard
from tildekit.models.contract.names import check_name
from tildekit.models.contract.oscmap import model_slug
from tildekit.models.contract.synth_controls import has_synth
from tildekit.models.outputs import output_dir, refuse_foreign_file, write_error
from tildekit.patches.build import forward_graph, osc_graph, transfer_graph
from tildekit.patches.graph import Graph
from tildekit.patches.spec import (
    DEFAULT_BUFFER,
    DEFAULT_OSC_HOST,
    DEFAULT_OSC_PORT,
    HOSTS,
    PatchSpec,
    build_spec,
    model_reference,
)

PATCH_SIGNATURE = b"tildekit"


def _renderers(host: str) -> list[tuple[str, Callable[[Graph], str]]]:
    hosts = list(HOSTS) if host == "both" else [host]
    if any(h not in HOSTS for h in hosts):
        raise TildekitError(f"--host {host!r}: choose pd, max or both")
    out: list[tuple[str, Callable[[Graph], str]]] = []
    for h in hosts:
        if h == "pd":
            from tildekit.patches.pd import render_pd
            out.append(("pd", render_pd))
        else:
            from tildekit.patches.maxpat import render_maxpat
            out.append(("max", render_maxpat))
    return out


def is_generated_patch(path: Path) -> bool:
    """Was ``path`` written by `tildekit patch`? (Every generated patch names tildekit in a comment.)"""
    try:
        with open(path, "rb") as handle:
            return PATCH_SIGNATURE in handle.read(1 << 16)
    except OSError:
        return False


def patch_graphs(spec: PatchSpec, host: str) -> dict[str, Graph]:
    """File stem suffix -> graph, for the patches this model supports."""
    graphs: dict[str, Graph] = {}
    if spec.encode and spec.decode:
        graphs["transfer"] = transfer_graph(spec, host)
    if spec.forward:
        graphs["forward"] = forward_graph(spec, host)
    if has_synth(spec.card.methods):
        from tildekit.patches.synth import synth_graph

        graphs["synth"] = synth_graph(spec, host)
    if not graphs:
        methods = ", ".join(spec.card.methods) or "none"
        raise TildekitError(f"model '{spec.card.name}' has neither encode+decode nor forward "
                            f"(methods: {methods}): nothing to patch; re-export it with `tildekit export`")
    graphs["osc"] = osc_graph(spec, host)
    return graphs


def write_patches(model_path_or_card: str | Path | ModelCard, out_dir: str | Path | None = None,
                  host: str = "both", buffer: int = DEFAULT_BUFFER, osc_port: int = DEFAULT_OSC_PORT,
                  model_file: str | Path | None = None, osc_host: str = DEFAULT_OSC_HOST) -> list[Path]:
    """Write ``STEM-transfer``, ``STEM-forward``, ``STEM-synth`` and ``STEM-osc`` patches for each host.

    ``model_path_or_card`` is an exported ``.ts`` (its card is read from the file, or derived
    from its nn~ methods when it has none, e.g. a RAVE export) or a
    :class:`ModelCard`; with a card, ``model_file`` is where the model is or will be
    (default ``NAME.ts`` in ``out_dir``). Patches go to ``out_dir`` (default: next to the
    model) and name the model relative to themselves, as nn~ resolves it. The Pd OSC receiver
    binds ``osc_host`` (this machine only by default).

    Every patch is rendered (and every word checked) before the first file is written; a file
    of the same name is replaced only when tildekit generated it.
    """
    if isinstance(model_path_or_card, ModelCard):
        card = model_path_or_card
        base = Path(out_dir) if out_dir is not None else Path.cwd()
        model = Path(model_file) if model_file is not None else base / f"{model_slug(card.name)}.ts"
        if not model.is_absolute():
            model = base / model
    else:
        from tildekit.export.card_io import model_card

        model = Path(model_path_or_card)
        card = model_card(model)  # an nn~ file without a tildekit card: derived from its methods
        if model.suffix.lower() == ".json":  # a bare card: the model sits beside it
            model = Path(model_file) if model_file is not None else model.with_suffix(".ts")
    out = Path(out_dir) if out_dir is not None else model.parent
    if out.exists() and not out.is_dir():
        raise TildekitError(f"--out {out}: is a file, not a folder: name a folder (it is created when missing)")
    reference = model_reference(model, out)
    # The model file's stem names the patches and the [STEM-osc] abstraction inside them.
    stem = check_name(model.stem, "model file name")
    renderers = _renderers(host)
    rendered: list[tuple[Path, str]] = []
    for name, render in renderers:
        spec = build_spec(card, reference, stem, buffer, osc_port, osc_host)
        suffix = ".pd" if name == "pd" else ".maxpat"
        for kind, graph in patch_graphs(spec, name).items():
            rendered.append((out / f"{spec.stem}-{kind}{suffix}", render(graph)))
    out = output_dir(out, "--out")
    for path, _ in rendered:
        refuse_foreign_file(path, is_generated_patch, "--out")
    try:
        for path, text in rendered:
            atomic_write_text(path, text, durable=False)
    except OSError as exc:
        raise write_error(out, exc) from None
    return [path for path, _ in rendered]

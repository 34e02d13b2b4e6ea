"""The Neutone FX target: ``NAME.nm``, the SDK's module layout around the streaming model
(export/neutone.py, export/neutone_queue.py) with metadata.json and the card, checked with the
call sequence the plugin and the SDK's save-time self-test make."""

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from tildekit.errors import TildekitError
from tildekit.export.card_io import card_extra_files
from tildekit.export.check_result import CheckResult
from tildekit.export.exportable import Exportable
from tildekit.export.neutone import NeutoneW2WBase, TildekitW2W, generic_w2w
from tildekit.export.neutone_check import NeutoneCheck, check_neutone_file
from tildekit.export.neutone_metadata import METADATA_FILE_NAME, validate_metadata, with_sounds
from tildekit.export.neutone_queue import NeutoneRoot
from tildekit.export.ops import HOSTS, require_host_operators
from tildekit.export.target import Target, write_checked
from tildekit.models.contract.card import ModelCard


class NeutoneTarget(Target):
    name = "neutone"

    def files(self, model_name: str) -> list[str]:
        return [f"{model_name}.nm"]

    def write(self, model: Exportable, card: ModelCard, folder: Path, quick: bool = False) -> list[Path]:
        path = folder / self.files(card.name)[0]
        w2w = (TildekitW2W(model.module, card) if model.family == "autoencoder"
               else generic_w2w(model, card))
        export_neutone(w2w, card, path, quick=quick)
        return [path]

    def check(self, paths: Sequence[Path], card: ModelCard | None = None, quick: bool = False) -> list[CheckResult]:
        from tildekit.export.check import check_file

        return [r for path in paths for r in check_file(path, quick=quick)]


def export_neutone(w2w_module: NeutoneW2WBase, card: ModelCard, path: str | Path, *,
                   sample_sound_files: list[dict[str, str]] | None = None, quick: bool = False) -> NeutoneCheck:
    """Script ``NeutoneRoot(w2w_module)``, save it to ``path`` (``.nm``) with metadata.json and the card.

    The file is loaded back the way the plugin loads it and exercised (`check_neutone_file`)
    under its temporary name (:func:`~tildekit.export.target.write_checked`).
    """
    path = Path(path)
    if path.suffix != ".nm":
        raise TildekitError(f"{path}: Neutone FX loads .nm files: name the output *.nm")
    if not path.parent.is_dir():
        raise TildekitError(f"{path.parent} does not exist: create the output folder first")
    metadata = w2w_module.to_metadata()
    embedded = with_sounds(metadata, sample_sound_files)
    validate_metadata(embedded)
    for param in w2w_module.parameters():
        param.requires_grad_(False)  # inference only: no autograd graph in the host
    root = NeutoneRoot(w2w_module.eval())
    try:
        scripted = torch.jit.script(root)
    except Exception as exc:  # TorchScript's errors are long: keep the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TildekitError(f"{card.name}: the Neutone wrapper does not compile to TorchScript "
                            f"({first}): check that the streaming core is scriptable") from exc
    if not quick:  # the plugin's libtorch is older than ours: refuse operators it would not know
        neutone_hosts = [host for host in HOSTS if host.startswith("Neutone")]
        require_host_operators(scripted, f"{card.name} (Neutone FX export)", neutone_hosts or None)
    extra = {METADATA_FILE_NAME: json.dumps(embedded), **card_extra_files(card)}
    measured: list[NeutoneCheck] = []

    def save(temporaries: list[Path]) -> None:
        torch.jit.save(scripted, str(temporaries[0]), _extra_files=extra)

    def check(temporaries: list[Path]) -> list[CheckResult]:
        measured.append(check_neutone_file(temporaries[0], quick))  # raises on a failure
        return [CheckResult("Neutone host call sequence", True)]

    write_checked([path], save, check, str(path))
    return measured[0]

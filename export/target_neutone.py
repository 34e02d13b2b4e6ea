"""The Neutone FX target: ``NAME.nm``, the SDK's module layout around the streaming model
(export/neutone.py, export/neutone_queue.py) with metadata.json and the card, checked with the
call sequence the plugin and the SDK's save-time self-test make."""

# No `from __future__ import annotations`: NeutoneCheck is a plain dataclass read at runtime.
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from tildekit.errors import TildekitError
from tildekit.export.card_io import card_extra_files
from tildekit.export.check_result import CheckResult
from tildekit.export.exportable import Exportable
from tildekit.export.neutone import NeutoneW2WBase, TildekitW2W, generic_w2w
from tildekit.export.neutone_contract import neutone_structure_checks
from tildekit.export.neutone_metadata import METADATA_FILE_NAME, validate_metadata, with_sounds
from tildekit.export.neutone_queue import N_PARAMS, ROOT_PRESERVED_ATTRIBUTES, NeutoneRoot
from tildekit.export.ops import HOSTS, require_host_operators
from tildekit.export.target import Target, write_checked
from tildekit.models.contract.card import ModelCard
from tildekit.models.contract.hosts import NEUTONE_DAW_BUFFERS


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


@dataclass(frozen=True)
class NeutoneCheck:
    """What the post-save self-check measured on the reloaded file (in DAW samples)."""

    buffering_delay_48k_512: int
    model_delay_48k_512: int
    resampling_at_48k: bool
    preserved: list[str]


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


def check_neutone_file(path: str | Path, quick: bool = False) -> NeutoneCheck:
    """Load a ``.nm`` as the host does and run the SDK's own save-time checks on it.

    Raises TildekitError naming what is wrong; returns the delays it measured. ``quick``
    leaves out the other DAW buffer sizes and the offline pass.
    """
    path = Path(path)
    extra = {METADATA_FILE_NAME: ""}
    try:
        model = torch.jit.load(str(path), _extra_files=extra)
    except Exception as exc:
        raise TildekitError(f"{path}: torch.jit.load failed ({str(exc).splitlines()[0]})") from exc
    try:
        embedded = json.loads(extra[METADATA_FILE_NAME])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TildekitError(f"{path}: metadata.json is missing or not JSON ({exc})") from None
    validate_metadata(embedded)
    expected = {k: v for k, v in embedded.items() if k != "sample_sound_files"}
    if model.to_metadata() != expected:
        raise TildekitError(f"{path}: metadata.json differs from the model's to_metadata()")
    if json.loads(model.get_metadata_json()) != expected:
        raise TildekitError(f"{path}: get_metadata_json() differs from metadata.json")
    preserved = list(model.get_preserved_attributes())
    for name in sorted(set(preserved) | set(ROOT_PRESERVED_ATTRIBUTES) | {"forward", "forward_offline"}):
        if not hasattr(model, name):
            raise TildekitError(f"{path}: the root module has no {name!r}, which the Neutone host calls")
    if not model.realtime:
        raise TildekitError(f"{path}: the root module's realtime flag is False")

    try:
        check = _exercise(model, preserved, quick)
    except TildekitError:
        raise
    except Exception as exc:  # an exception here is a dropped buffer in the plugin
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        raise TildekitError(f"{path}: the reloaded model fails the host's call sequence: "
                            f"{lines[-1] if lines else type(exc).__name__}") from exc
    failed = [r for r in neutone_structure_checks(model) if not r.passed]
    if failed:
        raise TildekitError(f"{path}: not structured as the SDK's files: "
                            + "; ".join(f"{r.item}: {r.reason}" for r in failed))
    return check


def _exercise(model: torch.jit.ScriptModule, preserved: list[str], quick: bool = False) -> NeutoneCheck:
    """The SDK's save-time calls: 48 kHz / 512 buffers, mono and stereo, then offline at 44.1 kHz."""
    channels_in = 1 if model.is_input_mono() else 2
    model.set_daw_sample_rate_and_buffer_size(48000, 512)
    model.reset()
    resampling = bool(model.is_resampling())
    buffering = int(model.calc_buffering_delay_samples())
    model_delay = int(model.calc_model_delay_samples())
    generator = torch.Generator().manual_seed(0)
    for daw_channels in (2, 1, channels_in):
        audio = 0.1 * torch.randn(daw_channels, 512, generator=generator)
        for params in (None, model.get_default_param_values().expand(N_PARAMS, 512)):
            for _ in range(3):
                _check_audio("forward", model.forward(audio, params), audio.shape)
    if quick:
        return NeutoneCheck(buffering, model_delay, resampling, preserved)
    for daw_bs in NEUTONE_DAW_BUFFERS:
        model.set_daw_sample_rate_and_buffer_size(48000, daw_bs)
        audio = 0.1 * torch.randn(2, daw_bs, generator=generator)
        for _ in range(2):
            _check_audio("forward", model.forward(audio), audio.shape)
    model.set_daw_sample_rate_and_buffer_size(44100, 4096)
    clip = 0.1 * torch.randn(2, 44100, generator=generator)
    _check_audio("forward_offline", model.forward_offline(clip), clip.shape)
    return NeutoneCheck(buffering, model_delay, resampling, preserved)


def _check_audio(method: str, out: Tensor, shape: torch.Size) -> None:
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{method} returned shape {tuple(out.shape)} for input {tuple(shape)}")
    if not torch.isfinite(out).all():
        raise ValueError(f"{method} returned NaN or infinite samples")

"""The Neutone host, emulated: load a ``.nm`` as the plugin does and make the calls the plugin
and the SDK's save-time self-test make (docs/contracts.md §2). Used by the Neutone target right
after it writes a file, and by ``tildekit check`` on any ``.nm``."""

# No `from __future__ import annotations`: NeutoneCheck is a plain dataclass read at runtime.
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from tildekit.errors import TildekitError
from tildekit.export.neutone_contract import neutone_structure_checks
from tildekit.export.neutone_metadata import METADATA_FILE_NAME, validate_metadata
from tildekit.export.neutone_queue import N_PARAMS, ROOT_PRESERVED_ATTRIBUTES
from tildekit.models.contract.hosts import NEUTONE_DAW_BUFFERS


@dataclass(frozen=True)
class NeutoneCheck:
    """What the post-save self-check measured on the reloaded file (in DAW samples)."""

    buffering_delay_48k_512: int
    model_delay_48k_512: int
    resampling_at_48k: bool
    preserved: list[str]


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

"""The nn~ export: a TorchScript root module around ExportCore, laid out as nn~ discovers it.

What the host reads (CONTRACTS.md §1, nn~'s backend): ``get_methods()``, one int buffer
``<method>_params = [in_channels, in_ratio, out_channels, out_ratio]`` per method, the label
lists ``<method>_input_labels`` / ``<method>_output_labels``, ``get_attributes()`` and, per
attribute, ``get_NAME()``, ``set_NAME(v1, ..., vN) -> int`` (nn~ passes one positional argument
per value, parsed with the type codes of the buffer ``NAME_params``) and 0 on success.

``latent_bias`` / ``latent_scale`` take one float per exported latent dimension, so their setters'
signatures depend on K: they are generated from a template for each K (see
:func:`_vector_setters`). All arithmetic lives in ExportCore; this module only routes calls.
"""

# No `from __future__ import annotations`: TorchScript reads the class annotations as types.
import linecache
from pathlib import Path
from typing import List

import torch
from torch import Tensor, nn

from tildekit.errors import TildekitError
from tildekit.export.card_io import card_extra_files
from tildekit.export.core import ExportCore
from tildekit.models.atomic import atomic_path
from tildekit.models.card import ModelCard
from tildekit.models.streaming import MAX_BATCH_SIZE

METHODS = ("forward", "encode", "decode")
ATTRIBUTES = ("temperature", "latent_bias", "latent_scale", "reset")


class NNTildeBase(nn.Module):
    """Methods and attributes whose signatures do not depend on the latent size."""

    forward_input_labels: List[str]
    forward_output_labels: List[str]
    encode_input_labels: List[str]
    encode_output_labels: List[str]
    decode_input_labels: List[str]
    decode_output_labels: List[str]

    def __init__(self, core: ExportCore, card: ModelCard) -> None:
        super().__init__()
        _check_core_matches_card(core, card)
        self.core = core
        self.sample_rate = card.sample_rate
        self.latent_size = card.latent_size
        self.max_batch = MAX_BATCH_SIZE
        self.temperature_max = float(card.attribute("temperature").maximum or 10.0)
        for method in METHODS:
            spec = card.methods[method]
            self.register_buffer(f"{method}_params", torch.tensor(spec.params, dtype=torch.int))
            setattr(self, f"{method}_input_labels", list(spec.input_labels))
            setattr(self, f"{method}_output_labels", list(spec.output_labels))
        for attribute in card.attributes:
            self.register_buffer(f"{attribute.name}_params",
                                 torch.tensor(attribute.type_codes, dtype=torch.int))
        self.method_names = list(METHODS)
        self.attribute_names = [a.name for a in card.attributes]

    # -- methods -------------------------------------------------------------------------------

    def _check_batch(self, x: Tensor) -> None:
        if x.dim() != 3:
            raise ValueError("tildekit: expected a (batch, channels, time) tensor, got "
                             + str(x.dim()) + " dimensions")
        if x.size(0) > self.max_batch:
            raise ValueError("tildekit: at most " + str(self.max_batch)
                             + " voices (batch rows) per model, got " + str(x.size(0)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, channels, T) audio -> (B, channels, T) audio: encode, scale/bias, decode."""
        self._check_batch(x)
        return self.core.forward(x)

    @torch.jit.export
    def encode(self, x: Tensor) -> Tensor:
        """(B, channels, T) audio -> (B, K, T / compression) latents, most important first."""
        self._check_batch(x)
        return self.core.encode(x)

    @torch.jit.export
    def decode(self, z: Tensor) -> Tensor:
        """(B, K, F) latents -> (B, channels, F * compression) audio."""
        self._check_batch(z)
        return self.core.decode(z)

    @torch.jit.export
    def get_methods(self) -> List[str]:
        return self.method_names

    @torch.jit.export
    def get_attributes(self) -> List[str]:
        return self.attribute_names

    @torch.jit.export
    def set_sample_rate(self, sample_rate: int) -> int:
        if sample_rate != self.sample_rate:
            raise ValueError("tildekit: this model runs at " + str(self.sample_rate)
                             + " Hz, the host asked for " + str(sample_rate)
                             + " Hz: set the audio device to " + str(self.sample_rate) + " Hz")
        return 0

    # -- attributes ----------------------------------------------------------------------------

    @torch.jit.export
    def get_temperature(self) -> List[float]:
        return [self.core.temperature]

    @torch.jit.export
    def set_temperature(self, temperature: float) -> int:
        if not (0.0 <= temperature <= self.temperature_max):
            raise ValueError("tildekit: temperature must be in 0.." + str(self.temperature_max)
                             + ", got " + str(temperature))
        self.core.temperature = temperature
        return 0

    @torch.jit.export
    def get_latent_bias(self) -> List[float]:
        values: List[float] = self.core.latent_bias.tolist()
        return values

    @torch.jit.export
    def get_latent_scale(self) -> List[float]:
        values: List[float] = self.core.latent_scale.tolist()
        return values

    @torch.jit.export
    def store_latent_bias(self, values: List[float]) -> int:
        self.core.latent_bias.copy_(torch.tensor(values, dtype=torch.float))
        return 0

    @torch.jit.export
    def store_latent_scale(self, values: List[float]) -> int:
        self.core.latent_scale.copy_(torch.tensor(values, dtype=torch.float))
        return 0

    @torch.jit.export
    def get_reset(self) -> List[bool]:
        return [False]  # a trigger, not a state

    @torch.jit.export
    def set_reset(self, reset: bool) -> int:
        if reset:
            self.core.reset_state()
        return 0


_SETTERS_TEMPLATE = '''
class VectorSetters:
    @torch.jit.export
    def set_latent_bias(self, {args}) -> int:
        return self.store_latent_bias([{values}])

    @torch.jit.export
    def set_latent_scale(self, {args}) -> int:
        return self.store_latent_scale([{values}])
'''


def _vector_setters(latent_size: int) -> type:
    """A mixin whose setters take ``latent_size`` float arguments, as nn~ passes them.

    TorchScript compiles from source text, so the generated source is registered with
    :mod:`linecache` under a unique file name for the compiler (and tracebacks) to find.
    """
    names = [f"v{i}" for i in range(latent_size)]
    source = _SETTERS_TEMPLATE.format(args=", ".join(f"{n}: float" for n in names),
                                      values=", ".join(names))
    filename = f"<tildekit-nn-setters-{latent_size}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict = {"torch": torch}
    exec(compile(source, filename, "exec"), namespace)
    return namespace["VectorSetters"]


def nn_tilde_module(core: ExportCore, card: ModelCard) -> nn.Module:
    """The (unscripted) nn~ root module for ``core``."""
    cls = type("TildekitNN", (NNTildeBase, _vector_setters(card.latent_size)), {})
    return cls(core, card).eval()


def script_nn_tilde(core: ExportCore, card: ModelCard) -> torch.jit.ScriptModule:
    module = nn_tilde_module(core, card)
    try:
        return torch.jit.script(module)
    except Exception as exc:  # TorchScript errors run over many lines: keep the first
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TildekitError(f"{card.name}: the nn~ module does not compile to TorchScript "
                            f"({first}): check that the streaming model is scriptable") from exc


def export_nn(core: ExportCore, card: ModelCard, path: str | Path) -> Path:
    """Script, save under a temporary name, run every contract check on that file, then rename.

    A failing check raises TildekitError naming each failed item, and no file is left behind.
    """
    from tildekit.export.check import check_file, failures_message

    path = Path(path)
    if path.suffix != ".ts":
        raise TildekitError(f"{path}: nn~ looks for *.ts files: name the output *.ts")
    if not path.parent.is_dir():
        raise TildekitError(f"{path.parent} does not exist: create the output folder first")
    scripted = script_nn_tilde(core, card)
    with atomic_path(path) as temp:  # checked under its temporary name, renamed only when it passes
        torch.jit.save(scripted, str(temp), _extra_files=card_extra_files(card))
        failed = [r for r in check_file(temp) if not r.passed]
        if failed:
            raise TildekitError(f"{path.name}: export failed its contract check, nothing written: "
                                f"{failures_message(failed)}")
    core.reset_state()
    return path


def _check_core_matches_card(core: ExportCore, card: ModelCard) -> None:
    for name in ("compression", "latent_size", "sample_rate", "channels"):
        if getattr(core, name) != getattr(card, name):
            raise TildekitError(
                f"the streaming core's {name} is {getattr(core, name)} but the model card says "
                f"{getattr(card, name)}: derive the card from this core (export.model_card)")
    missing = [m for m in METHODS if m not in card.methods]
    if missing:
        raise TildekitError(f"the model card lacks the method(s) {', '.join(missing)}")

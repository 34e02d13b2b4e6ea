"""The nn~ export: a TorchScript root module around ExportCore, laid out as nn~ discovers it.

What the host reads (docs/contracts.md §1, nn~'s backend): ``get_methods()``, one int buffer
``<method>_params = [in_channels, in_ratio, out_channels, out_ratio]`` per method, the label
lists ``<method>_input_labels`` / ``<method>_output_labels``, ``get_attributes()`` and, per
attribute, ``get_NAME()``, ``set_NAME(v1, ..., vN) -> int`` (nn~ passes one positional argument
per value, parsed with the type codes of the buffer ``NAME_params``) and 0 on success.

``latent_bias`` / ``latent_scale`` take one float per exported latent dimension, so their setters'
signatures depend on K: they are generated from a template for each K (see
:func:`_vector_setters`). All arithmetic lives in ExportCore; this module only routes calls.

Host sample rate. nn~ 1.6 never tells a model the host's rate on load, and on ``[reload(`` it
calls ``set_sample_rate`` with an uninitialised value, where an exception would abort Pd. So:

- ``set_host_sample_rate(rate)`` (attribute ``host_sample_rate``, sent by the generated patches on
  load and whenever DSP starts) switches every method to resample between the host's rate and
  the model's (plans of :mod:`tildekit.models.resample_plan`, baked in for ``HOST_RATES``); the
  same rate again changes nothing. A rate the file cannot play raises: nn~ catches exceptions
  from setters and prints them in the console, and the model stays silent until a playable
  rate arrives (silence, rather than the wrong pitch).
- ``set_sample_rate(rate)`` never raises and returns 0: it records the value, adopts a playable
  rate like the attribute does, ignores values that cannot be a rate (``PLAUSIBLE_RATES``), and
  for a real but unplayable rate goes silent and prints the reason on the host's standard
  output (the only channel it has: nn~ ignores its return value).
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
from tildekit.models.contract.atomic import atomic_path
from tildekit.models.contract.attributes import METHODS
from tildekit.models.contract.card import ModelCard
from tildekit.models.contract.nn_host import HOST_RATE_ATTRIBUTE, PLAUSIBLE_RATES
from tildekit.models.resample import ResamplePath
from tildekit.models.resample_plan import method_plans
from tildekit.models.streaming import MAX_BATCH_SIZE


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
        host = [HOST_RATE_ATTRIBUTE] if card.host_rates else []  # cards of older exports list none
        self.attribute_names = [a.name for a in card.attributes] + host
        self.register_buffer(f"{HOST_RATE_ATTRIBUTE}_params", torch.tensor([1], dtype=torch.int))
        self._init_host_rates(card)

    def _init_host_rates(self, card: ModelCard) -> None:
        """One resampling path per method, and per playable host rate the tensors to configure them."""
        self.channels = card.channels
        self.compression = card.compression
        self.host_rate = card.sample_rate  # until told otherwise, the host runs at the model's rate
        self.reported_rate = 0  # the last value passed to set_sample_rate (0: never called)
        self.resampling = False
        self.silenced = False
        self.forward_path = ResamplePath(card.channels, card.channels)
        self.encode_path = ResamplePath(card.channels, card.latent_size)
        self.decode_path = ResamplePath(card.latent_size, card.channels)
        rates = [card.sample_rate] + [h.rate for h in card.host_rates if h.rate != card.sample_rate]
        self.playable_rates: List[int] = rates
        self.plausible_rates: List[int] = list(PLAUSIBLE_RATES)
        # path_ints[3 r + m], path_banks[2 (3 r + m)] (pre) and [.. + 1] (post): rate r, METHODS[m]
        self.path_ints: List[List[int]] = []
        self.path_banks: List[torch.Tensor] = []
        for rate in rates:
            plans = method_plans(card.sample_rate, rate, card.methods, card.compression)
            for method in METHODS:
                plan = plans[method]
                self.path_ints.append(plan.ints())
                self.path_banks.append(torch.from_numpy(plan.pre.prototype.bank()))
                self.path_banks.append(torch.from_numpy(plan.post.prototype.bank()))

    # -- methods -------------------------------------------------------------------------------

    def _check_batch(self, x: Tensor) -> None:
        if x.dim() != 3:
            raise ValueError("tildekit: expected a (batch, channels, time) tensor, got "
                             + str(x.dim()) + " dimensions")
        if x.size(0) > self.max_batch:
            raise ValueError("tildekit: at most " + str(self.max_batch)
                             + " voices (batch rows) per model, got " + str(x.size(0)))

    # Each method calls the model once: TorchScript inlines every call site, and a second one
    # would double the graph the optimiser works through on the first buffers.
    def forward(self, x: Tensor) -> Tensor:
        """(B, channels, T) audio -> (B, channels, T) audio: encode, scale/bias, decode."""
        self._check_batch(x)
        if self.silenced:
            return torch.zeros(x.size(0), self.channels, x.size(-1))
        ready = self.forward_path.enter(x) if self.resampling else x
        if ready.size(-1) > 0:
            y = self.core.forward(ready)
        else:
            y = torch.zeros(x.size(0), self.channels, 0)
        return self.forward_path.leave(y, x.size(-1)) if self.resampling else y

    @torch.jit.export
    def encode(self, x: Tensor) -> Tensor:
        """(B, channels, T) audio -> (B, K, T / compression) latents, most important first."""
        self._check_batch(x)
        frames = x.size(-1) // self.compression
        if self.silenced:
            return torch.zeros(x.size(0), self.latent_size, frames)
        ready = self.encode_path.enter(x) if self.resampling else x
        if ready.size(-1) > 0:
            z = self.core.encode(ready)
        else:
            z = torch.zeros(x.size(0), self.latent_size, 0)
        return self.encode_path.leave(z, frames) if self.resampling else z

    @torch.jit.export
    def decode(self, z: Tensor) -> Tensor:
        """(B, K, F) latents -> (B, channels, F * compression) audio."""
        self._check_batch(z)
        samples = z.size(-1) * self.compression
        if self.silenced:
            return torch.zeros(z.size(0), self.channels, samples)
        ready = self.decode_path.enter(z) if self.resampling else z
        if ready.size(-1) > 0:
            y = self.core.decode(ready)
        else:
            y = torch.zeros(z.size(0), self.channels, 0)
        return self.decode_path.leave(y, samples) if self.resampling else y

    @torch.jit.export
    def get_methods(self) -> List[str]:
        return self.method_names

    @torch.jit.export
    def get_attributes(self) -> List[str]:
        return self.attribute_names

    @torch.jit.export
    def set_sample_rate(self, sample_rate: int) -> int:
        """Never raises (nn~ 1.6 aborts Pd on an exception here); always returns 0."""
        self.reported_rate = sample_rate
        if self._switch_host_rate(sample_rate):
            return 0
        if self.plausible_rates[0] <= sample_rate <= self.plausible_rates[1]:
            self.silenced = True
            print(self._unplayable(sample_rate))
        return 0

    @torch.jit.export
    def get_host_sample_rate(self) -> List[int]:
        return [self.host_rate]

    @torch.jit.export
    def set_host_sample_rate(self, rate: int) -> int:
        if self._switch_host_rate(rate):
            return 0
        self.silenced = True
        raise ValueError(self._unplayable(rate))

    def _unplayable(self, rate: int) -> str:
        return ("tildekit: the host runs at " + str(rate) + " Hz; this model plays at "
                + ", ".join([str(r) for r in self.playable_rates])
                + " Hz: set the audio device to one of them (the model is silent until then)")

    def _switch_host_rate(self, rate: int) -> bool:
        """Resample for ``rate`` if it is playable (a fresh state unless it is already the rate)."""
        index = -1
        for i, playable in enumerate(self.playable_rates):
            if playable == rate:
                index = i
        if index < 0:
            return False
        if rate == self.host_rate and not self.silenced:
            return True  # Pd re-sends the rate whenever its DSP graph changes: keep playing
        first = 3 * index
        self.forward_path.configure(self.path_banks[2 * first], self.path_banks[2 * first + 1],
                                    self.path_ints[first])
        self.encode_path.configure(self.path_banks[2 * first + 2], self.path_banks[2 * first + 3],
                                   self.path_ints[first + 1])
        self.decode_path.configure(self.path_banks[2 * first + 4], self.path_banks[2 * first + 5],
                                   self.path_ints[first + 2])
        self.host_rate = rate
        self.resampling = rate != self.sample_rate
        self.silenced = False
        self.core.reset_state()
        return True

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
            self.forward_path.reset_state()
            self.encode_path.reset_state()
            self.decode_path.reset_state()
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

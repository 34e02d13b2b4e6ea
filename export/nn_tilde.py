"""The nn~ export: a TorchScript root module around any family's streaming module, laid out as
nn~ discovers it.

What the host reads (docs/contracts.md §1, nn~'s backend): ``get_methods()``, one int buffer
``<method>_params = [in_channels, in_ratio, out_channels, out_ratio]`` per method, the label
lists ``<method>_input_labels`` / ``<method>_output_labels``, ``get_attributes()`` and, per
attribute, ``get_NAME()``, ``set_NAME(v1, ..., vN) -> int`` (nn~ passes one positional argument
per value, parsed with the type codes of the buffer ``NAME_params``) and 0 on success.

``latent_bias`` / ``latent_scale`` take one float per exported latent dimension, so their setters'
signatures depend on K: they are generated from a template for each K (see
:func:`_vector_setters`). All arithmetic lives in ExportCore; this module only routes calls.

Any other family (an :class:`~tildekit.export.exportable.Exportable`) gets the same root
(:class:`NNTildeHost`) with its methods routed to ``module.NAME`` and a generated
``set_NAME(value) -> int`` / ``get_NAME()`` per attribute of its card, setting the module's plain
attribute ``NAME`` (range-checked): :func:`generic_nn_tilde_module`.

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
from typing import TYPE_CHECKING, Any, Dict, List, Sequence

import torch
from torch import Tensor, nn

from tildekit.errors import TildekitError
from tildekit.export.core import ExportCore
from tildekit.export.exportable import Exportable, require_matches_card
from tildekit.models.contract.attributes import METHODS, RESET
from tildekit.models.contract.card import AttributeSpec, ModelCard
from tildekit.models.contract.names import identifier_problem
from tildekit.models.contract.nn_host import HOST_RATE_ATTRIBUTE, PLAUSIBLE_RATES
from tildekit.models.resample import ResamplePath
from tildekit.models.resample_plan import method_plans
from tildekit.models.streaming import MAX_BATCH_SIZE


class NNTildeHost(nn.Module):
    """What every nn~ export has, whatever its family: the ``*_params`` buffers and labels,
    get_methods / get_attributes, the host-rate machinery (one ResamplePath per method) and
    ``set_reset``. The wrapped streaming module is ``self.core``; the per-method routes
    (:func:`_routes`) and the attribute setters are generated per model."""

    def __init__(self, core: nn.Module, card: ModelCard, methods: Sequence[str]) -> None:
        super().__init__()
        self.core = core
        self.sample_rate = card.sample_rate
        self.max_batch = MAX_BATCH_SIZE
        for method in methods:
            spec = card.methods[method]
            self.register_buffer(f"{method}_params", torch.tensor(spec.params, dtype=torch.int))
            setattr(self, f"{method}_input_labels", list(spec.input_labels))
            setattr(self, f"{method}_output_labels", list(spec.output_labels))
        for attribute in card.attributes:
            self.register_buffer(f"{attribute.name}_params",
                                 torch.tensor(attribute.type_codes, dtype=torch.int))
        self.method_names = list(methods)
        host = [HOST_RATE_ATTRIBUTE] if card.host_rates else []  # cards of older exports list none
        self.attribute_names = [a.name for a in card.attributes] + host
        self.register_buffer(f"{HOST_RATE_ATTRIBUTE}_params", torch.tensor([1], dtype=torch.int))
        self._init_host_rates(card, methods)

    def _init_host_rates(self, card: ModelCard, methods: Sequence[str]) -> None:
        """One resampling path per method, and per playable host rate the tensors to configure them."""
        self.channels = card.channels
        self.compression = card.compression
        self.host_rate = card.sample_rate  # until told otherwise, the host runs at the model's rate
        self.reported_rate = 0  # the last value passed to set_sample_rate (0: never called)
        self.resampling = False
        self.silenced = False
        self.n_methods = len(methods)
        for method in methods:
            spec = card.methods[method]
            setattr(self, f"{method}_path", ResamplePath(spec.in_channels, spec.out_channels))
        rates = [card.sample_rate] + [h.rate for h in card.host_rates if h.rate != card.sample_rate]
        self.playable_rates: List[int] = rates
        self.plausible_rates: List[int] = list(PLAUSIBLE_RATES)
        # path_ints[n r + m], path_banks[2 (n r + m)] (pre) and [.. + 1] (post): rate r, method m of n
        self.path_ints: List[List[int]] = []
        self.path_banks: List[torch.Tensor] = []
        for rate in rates:
            plans = method_plans(card.sample_rate, rate, card.methods, card.compression)
            for method in methods:
                plan = plans[method]
                self.path_ints.append(plan.ints())
                self.path_banks.append(torch.from_numpy(plan.pre.prototype.bank()))
                self.path_banks.append(torch.from_numpy(plan.post.prototype.bank()))

    def _check_batch(self, x: Tensor) -> None:
        if x.dim() != 3:
            raise ValueError("tildekit: expected a (batch, channels, time) tensor, got "
                             + str(x.dim()) + " dimensions")
        if x.size(0) > self.max_batch:
            raise ValueError("tildekit: at most " + str(self.max_batch)
                             + " voices (batch rows) per model, got " + str(x.size(0)))

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
        self._configure_paths(self.n_methods * index)
        self.host_rate = rate
        self.resampling = rate != self.sample_rate
        self.silenced = False
        self.core.reset_state()
        return True

    def _configure_paths(self, first: int) -> None:  # generated per model (_routes)
        raise NotImplementedError

    def _reset_paths(self) -> None:  # generated per model (_routes)
        raise NotImplementedError

    @torch.jit.export
    def get_reset(self) -> List[bool]:
        return [False]  # a trigger, not a state

    @torch.jit.export
    def set_reset(self, reset: bool) -> int:
        if reset:
            self.core.reset_state()
            self._reset_paths()
        return 0


class AutoencoderAttributes:
    """The autoencoder's attributes (temperature, latent bias / scale) over an ExportCore; the
    vector setters, whose signatures depend on K, come from :func:`_vector_setters`."""

    if TYPE_CHECKING:  # set by nn_tilde_module; not class annotations, which TorchScript would read
        core: ExportCore
        temperature_max: float

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


_SETTERS_TEMPLATE = '''
class VectorSetters:
    @torch.jit.export
    def set_latent_bias(self, {args}) -> int:
        return self.store_latent_bias([{values}])

    @torch.jit.export
    def set_latent_scale(self, {args}) -> int:
        return self.store_latent_scale([{values}])
'''


def _compiled(source: str, filename: str, name: str) -> type:
    """Class ``name`` from generated ``source``. TorchScript compiles from source text, so the
    source is registered with :mod:`linecache` under a unique file name for the compiler (and
    tracebacks) to find."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: Dict[str, Any] = {"torch": torch, "Tensor": Tensor, "List": List}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]


def _vector_setters(latent_size: int) -> type:
    """A mixin whose setters take ``latent_size`` float arguments, as nn~ passes them."""
    names = [f"v{i}" for i in range(latent_size)]
    source = _SETTERS_TEMPLATE.format(args=", ".join(f"{n}: float" for n in names),
                                      values=", ".join(names))
    return _compiled(source, f"<tildekit-nn-setters-{latent_size}>", "VectorSetters")


_ROUTE_TEMPLATE = '''
    {export}def {name}(self, x: Tensor) -> Tensor:
        self._check_batch(x)
        count = x.size(-1) * {in_ratio} // {out_ratio}
        if self.silenced:
            return torch.zeros(x.size(0), {out_channels}, count)
        ready = self.{name}_path.enter(x) if self.resampling else x
        if ready.size(-1) > 0:
            y = self.core.{name}(ready)
        else:
            y = torch.zeros(x.size(0), {out_channels}, 0)
        return self.{name}_path.leave(y, count) if self.resampling else y
'''


def _routes(card: ModelCard, methods: Sequence[str]) -> type:
    """A mixin with one method per name in ``methods`` that runs ``self.core.NAME`` through its
    host-rate path (silent while the host rate is unplayable), plus the path bookkeeping.

    Each method calls the model once: TorchScript inlines every call site, and a second one
    would double the graph the optimiser works through on the first buffers.
    """
    lines = ["class Routes:"]
    for method in methods:
        spec = card.methods[method]
        lines.append(f"    {method}_input_labels: List[str]")
        lines.append(f"    {method}_output_labels: List[str]")
        lines.append(_ROUTE_TEMPLATE.format(
            export="" if method == "forward" else "@torch.jit.export\n    ", name=method,
            in_ratio=spec.in_ratio, out_ratio=spec.out_ratio, out_channels=spec.out_channels))
    lines.append("    def _configure_paths(self, first: int) -> None:")
    for m, method in enumerate(methods):
        lines.append(f"        self.{method}_path.configure(self.path_banks[2 * (first + {m})], "
                     f"self.path_banks[2 * (first + {m}) + 1], self.path_ints[first + {m}])")
    lines.append("    def _reset_paths(self) -> None:")
    lines += [f"        self.{method}_path.reset_state()" for method in methods]
    source = "\n".join(lines) + "\n"
    key = "-".join(f"{m}{card.methods[m].params}" for m in methods).replace(" ", "")
    return _compiled(source, f"<tildekit-nn-routes-{key}>", "Routes")


_TYPES = {"float": "float", "int": "int", "bool": "bool"}
# Attribute names whose get_/set_ the host wrapper defines itself (reset is routed there too).
_HOST_ATTRIBUTES = ("sample_rate", HOST_RATE_ATTRIBUTE, "methods", "attributes")


def _attribute_source(spec: AttributeSpec) -> str:
    """get_NAME / set_NAME for a plain module attribute ``self.core.NAME`` (one value: a
    float, int or bool attribute; several values of one type: a list attribute)."""
    kinds = set(spec.types)
    if len(kinds) != 1 or spec.types[0] not in _TYPES:
        raise TildekitError(f"attribute {spec.name} has values of type(s) {', '.join(spec.types)}: "
                            f"the nn~ export sets float, int or bool attributes (one type each)")
    kind = _TYPES[spec.types[0]]
    args = ["value"] if len(spec.types) == 1 else [f"v{i}" for i in range(len(spec.types))]
    checks = []
    if kind != "bool":
        for arg in args:
            if spec.minimum is not None:
                checks.append(f"        if {arg} < {float(spec.minimum)!r}:\n"
                              f"            raise ValueError(\"tildekit: {spec.name} must be at least "
                              f"{spec.minimum:g}, got \" + str({arg}))")
            if spec.maximum is not None:
                checks.append(f"        if {arg} > {float(spec.maximum)!r}:\n"
                              f"            raise ValueError(\"tildekit: {spec.name} must be at most "
                              f"{spec.maximum:g}, got \" + str({arg}))")
    value = "value" if len(args) == 1 else f"[{', '.join(args)}]"
    get = f"[self.core.{spec.name}]" if len(args) == 1 else f"list(self.core.{spec.name})"
    return (f"    @torch.jit.export\n"
            f"    def get_{spec.name}(self) -> List[{kind}]:\n"
            f"        return {get}\n\n"
            f"    @torch.jit.export\n"
            f"    def set_{spec.name}(self, {', '.join(f'{a}: {kind}' for a in args)}) -> int:\n"
            + "".join(c + "\n" for c in checks)
            + f"        self.core.{spec.name} = {value}\n"
            f"        return 0\n")


def _attribute_setters(card: ModelCard) -> type:
    """A mixin with nn~'s get_NAME / set_NAME for every attribute of the card (``reset`` and
    the host rate are the host wrapper's own)."""
    body = [_attribute_source(a) for a in card.attributes if a.name != RESET]
    source = "class AttributeSetters:\n" + ("\n".join(body) if body else "    pass\n")
    return _compiled(source, f"<tildekit-nn-attributes-{card.name}-{len(body)}>", "AttributeSetters")


def _concrete(name: str, bases: tuple) -> type:
    """The root class (generated mixins first: they override the host's placeholders);
    TorchScript reads a class's own annotations only, so they are merged."""
    annotations: Dict[str, Any] = {}
    for base in reversed([c for b in bases for c in b.__mro__]):
        annotations.update(base.__dict__.get("__annotations__", {}))
    return type(name, bases, {"__annotations__": annotations})


def nn_tilde_module(core: ExportCore, card: ModelCard) -> nn.Module:
    """The (unscripted) nn~ root module of the autoencoder ``core``."""
    require_matches_card(core, card, methods=METHODS)
    cls = _concrete("TildekitNN", (_routes(card, METHODS), AutoencoderAttributes,
                                   _vector_setters(card.latent_size), NNTildeHost))
    module = cls(core, card, METHODS)
    module.latent_size = card.latent_size
    module.temperature_max = float(card.attribute("temperature").maximum or 10.0)
    return module.eval()


def generic_nn_tilde_module(model: Exportable, card: ModelCard) -> nn.Module:
    """The (unscripted) nn~ root module of any family: ``model.module`` must have a scriptable
    method per name of ``model.methods`` and a plain float/int/bool attribute (or list of them)
    per attribute of the card other than ``reset``, and ``reset_state()``."""
    require_matches_card(model, card, fields=("sample_rate", "channels"), methods=("forward",))
    methods = list(model.methods)
    for name in methods + [a.name for a in card.attributes]:
        problem = identifier_problem(name)
        if problem:
            raise TildekitError(f"{card.name}: {name!r} {problem}")
    taken = [m for m in methods if m != "forward" and (hasattr(NNTildeHost, m) or m.startswith(("get_", "set_")))]
    taken += [a.name for a in card.attributes if a.name in _HOST_ATTRIBUTES]
    if taken:
        raise TildekitError(f"{card.name}: {', '.join(taken)} would shadow what nn~ calls on every export "
                            f"(get_/set_ methods, {', '.join(_HOST_ATTRIBUTES)}): rename them")
    missing = [m for m in methods if not callable(getattr(model.module, m, None))]
    missing += [a.name for a in card.attributes if a.name != RESET and not hasattr(model.module, a.name)]
    if missing:
        raise TildekitError(f"{card.name}: the {model.family} module has no {', '.join(missing)}, which "
                            f"its card lists")
    cls = _concrete(f"TildekitNN_{model.family}", (_routes(card, methods), _attribute_setters(card), NNTildeHost))
    return cls(model.module, card, methods).eval()


def script_nn_tilde(core: ExportCore | Exportable, card: ModelCard) -> torch.jit.ScriptModule:
    """Script the nn~ root of an ExportCore (the autoencoder) or of any Exportable."""
    if isinstance(core, ExportCore):
        module = nn_tilde_module(core, card)
    elif isinstance(getattr(core, "module", None), ExportCore) and getattr(core, "family", "") == "autoencoder":
        module = nn_tilde_module(core.module, card)  # type: ignore[union-attr]
    else:
        module = generic_nn_tilde_module(core, card)  # type: ignore[arg-type]
    try:
        return torch.jit.script(module)
    except Exception as exc:  # TorchScript errors run over many lines: keep the first
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TildekitError(f"{card.name}: the nn~ module does not compile to TorchScript "
                            f"({first}): check that the streaming model is scriptable") from exc

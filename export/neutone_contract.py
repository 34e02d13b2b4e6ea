"""What a Neutone FX file must expose, as neutone_sdk 1.5.2 builds it, and the check of a loaded file.

The plugin and the SDK's tools reach into a ``.nm`` by name: the root (the SDK's sample-queue
wrapper) and its submodule ``w2w_base`` (the SDK's ``WaveformToWaveformBase``). This module is
the one home of those names, of the TorchScript signatures they must have (argument types,
defaults and return type; the host calls them positionally through libtorch, so names are not
part of the contract), and of the behaviour the SDK gives them:

- ``w2w_base.get_core_preserved_attributes()`` names ``model`` and the core getters;
  ``get_preserved_attributes()`` is that list followed by the wrapper's own methods.
- ``w2w_base.to_core_metadata()`` holds the fields of the model itself; ``to_metadata()`` adds
  the six realtime fields (channels, model type, native rates and buffers, look-behind).
- ``w2w_base.is_resampling()`` is always False: the inner model never resamples; the root does.
- ``w2w_base.set_daw_sample_rate_and_buffer_size(sr, bs, ...)`` returns None and only forwards
  ``(sr, bs)`` to ``set_sample_rate_and_buffer_size``: a rate or buffer the model does not take
  is refused there (False), never raised. The root's own setter is the path that resamples a
  DAW rate the model was not trained at.

:func:`neutone_structure_checks` runs these on a loaded file, one CheckResult per item.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import torch

from tildekit.export.check_result import CheckResult
from tildekit.export.neutone_queue import ROOT_PRESERVED_ATTRIBUTES
from tildekit.models.contract.neutone_host import resampled_buffer_size, select_model_sample_rate

# The SDK's NeutoneModel.get_core_preserved_attributes, in its order.
CORE_PRESERVED_ATTRIBUTES: list[str] = [
    "model",
    "get_neutone_parameters_metadata",
    "get_numerical_params_default_values_0to1",
    "get_wet_default_value",
    "get_dry_default_value",
    "get_input_gain_default_value",
    "get_output_gain_default_value",
    "get_core_preserved_attributes",
    "to_core_metadata",
]

# WaveformToWaveformBase.get_preserved_attributes: the core list, then these.
W2W_PRESERVED_ATTRIBUTES: list[str] = CORE_PRESERVED_ATTRIBUTES + [
    "is_input_mono",
    "is_output_mono",
    "get_native_sample_rates",
    "get_native_buffer_sizes",
    "is_resampling",
    "calc_model_delay_samples",
    "set_sample_rate_and_buffer_size",
    "set_daw_sample_rate_and_buffer_size",
    "reset",
    "get_preserved_attributes",
    "to_metadata",
    "get_metadata_json",
]

# NeutoneModel.to_core_metadata keys; to_metadata adds W2W_METADATA_KEYS.
CORE_METADATA_KEYS: tuple[str, ...] = (
    "model_name", "model_authors", "model_short_description", "model_long_description",
    "neutone_parameters", "wet_default_value", "dry_default_value", "input_gain_default_value",
    "output_gain_default_value", "technical_description", "technical_links", "tags",
    "model_version", "sdk_version", "pytorch_version", "date_created", "citation",
    "is_experimental",
)
W2W_METADATA_KEYS: tuple[str, ...] = (
    "is_input_mono", "is_output_mono", "model_type", "native_buffer_sizes",
    "native_sample_rates", "look_behind_samples",
)

_KNOBS = "Dict(str, Dict(str, Union(bool, float, int, int[], str, str[])))"
_AUDIO = "(Tensor, Tensor?=None)"
_SETTER = "(int, int, int?=None, int?=None)"

# TorchScript signatures, without ``self`` and argument names: "(types[=default]) -> return".
W2W_SIGNATURES: dict[str, str] = {
    "forward": f"{_AUDIO} -> Tensor",
    "is_input_mono": "() -> bool",
    "is_output_mono": "() -> bool",
    "get_native_sample_rates": "() -> int[]",
    "get_native_buffer_sizes": "() -> int[]",
    "is_resampling": "() -> bool",
    "calc_model_delay_samples": "() -> int",
    "set_sample_rate_and_buffer_size": "(int, int) -> bool",
    "set_daw_sample_rate_and_buffer_size": f"{_SETTER} -> NoneType",
    "reset": "() -> bool",
    "get_preserved_attributes": "() -> str[]",
    "get_core_preserved_attributes": "() -> str[]",
    "to_metadata": "() -> Dict(str, Any)",
    "to_core_metadata": "() -> Dict(str, Any)",
    "get_metadata_json": "() -> str",
    "get_neutone_parameters_metadata": f"() -> {_KNOBS}",  # members sorted
    "get_numerical_params_default_values_0to1": "() -> Tensor",
    "get_wet_default_value": "() -> float",
    "get_dry_default_value": "() -> float",
    "get_input_gain_default_value": "() -> float",
    "get_output_gain_default_value": "() -> float",
}

ROOT_SIGNATURES: dict[str, str] = {
    "forward": f"{_AUDIO} -> Tensor",
    "forward_offline": f"{_AUDIO} -> Tensor",
    "forward_bt": f"{_AUDIO} -> Tensor?",
    "set_daw_sample_rate_and_buffer_size": f"{_SETTER} -> int",
    "reset": "() -> NoneType",
    "is_resampling": "() -> bool",
    "calc_buffering_delay_samples": "() -> int",
    "calc_model_delay_samples": "() -> int",
    "is_input_mono": "() -> bool",
    "is_output_mono": "() -> bool",
    "get_native_sample_rates": "() -> int[]",
    "get_native_buffer_sizes": "() -> int[]",
    "get_default_param_values": "() -> Tensor",
    "get_wet_default_value": "() -> float",
    "get_dry_default_value": "() -> float",
    "get_input_gain_default_value": "() -> float",
    "get_output_gain_default_value": "() -> float",
    "to_metadata": "() -> Dict(str, Any)",
    "get_metadata_json": "() -> str",
    "get_preserved_attributes": "() -> str[]",
}

N_PARAM_ROWS = 4
_ARGUMENT = re.compile(r"^(?P<type>.+?) \w+(?P<default>=.*)?$")


def method_signature(module: Any, name: str) -> str | None:
    """``"(int, int?=None) -> bool"`` for a method of a loaded ScriptModule; None if it has none."""
    if not module._c._has_method(name):
        return None
    schema = module._c._get_method(name).schema
    text = str(schema)
    inner = text[text.index("(") + 1:text.rindex(") -> ")]
    parts = _split_arguments(inner)[1:]  # drop self
    types = []
    for part in parts:
        match = _ARGUMENT.match(part.strip())
        types.append(match.group("type") + (match.group("default") or "") if match else part.strip())
    return _sorted_unions(f"({', '.join(types)}) -> {text[text.rindex(') -> ') + 5:]}")


def _sorted_unions(text: str) -> str:
    """TorchScript prints Union members in its own order: compare them sorted."""
    out: list[str] = []
    i = 0
    while True:
        start = text.find("Union(", i)
        if start < 0:
            return "".join(out) + text[i:]
        depth, end = 0, start + len("Union(")
        while end < len(text) and (depth or text[end] != ")"):
            depth += text[end] == "("
            depth -= text[end] == ")"
            end += 1
        members = sorted(p.strip() for p in _split_arguments(text[start + len("Union("):end]))
        out.append(text[i:start] + "Union(" + ", ".join(members) + ")")
        i = end + 1


def _split_arguments(text: str) -> list[str]:
    """Split on the commas that are not inside brackets (``Dict(str, int) x``)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def neutone_structure_checks(model: Any) -> list[CheckResult]:
    """Every root and ``w2w_base`` name, its signature, and the SDK's behaviour on the plugin's calls.

    ``model`` is a ``.nm`` loaded with ``torch.jit.load``. The calls leave it configured for
    48 kHz / 512 and reset.
    """
    items: list[CheckResult] = []
    w2w = getattr(model, "w2w_base", None)
    if w2w is None:
        return [CheckResult("w2w_base submodule", False, "the root has no w2w_base: the SDK's tools "
                            "reach the wrapped model through it")]
    items.append(_signatures("root", model, ROOT_SIGNATURES, ROOT_PRESERVED_ATTRIBUTES))
    items.append(_signatures("w2w_base", w2w, W2W_SIGNATURES, W2W_PRESERVED_ATTRIBUTES))
    for item, test in _behaviour(model, w2w):
        items.append(_run(item, test))
    return items


def _signatures(where: str, module: Any, expected: dict[str, str], preserved: list[str]) -> CheckResult:
    item = f"{where}: every preserved name, with the SDK's TorchScript signature"
    problems = []
    for name in preserved:
        if name not in expected and not hasattr(module, name):
            problems.append(f"no {name}")
    for name, want in expected.items():
        got = method_signature(module, name)
        if got is None:
            problems.append(f"no method {name}{want}")
        elif got != want:
            problems.append(f"{name}{got}, the SDK has {name}{want}")
    return CheckResult(item, not problems, "; ".join(problems))


def _run(item: str, test: Callable[[], str | None]) -> CheckResult:
    try:
        reason = test()
    except Exception as exc:  # a raise here is a dropped buffer or a crash in the plugin
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        return CheckResult(item, False, (lines[-1] if lines else type(exc).__name__)[:300])
    return CheckResult(item, not reason, reason or "")


def _behaviour(model: Any, w2w: Any) -> list[tuple[str, Callable[[], str | None]]]:
    def preserved() -> str | None:
        core = list(w2w.get_core_preserved_attributes())
        if core != CORE_PRESERVED_ATTRIBUTES:
            return f"get_core_preserved_attributes() is {core}, the SDK's is {CORE_PRESERVED_ATTRIBUTES}"
        full = list(w2w.get_preserved_attributes())
        if full != W2W_PRESERVED_ATTRIBUTES:
            return f"get_preserved_attributes() is {full}, the SDK's is {W2W_PRESERVED_ATTRIBUTES}"
        missing = [n for n in full if not hasattr(w2w, n)]
        return f"w2w_base lacks {missing}" if missing else None

    def metadata() -> str | None:
        meta = dict(w2w.to_metadata())
        core = dict(w2w.to_core_metadata())
        if set(core) != set(CORE_METADATA_KEYS):
            return f"to_core_metadata() keys {sorted(core)} are not the SDK's {sorted(CORE_METADATA_KEYS)}"
        if set(meta) != set(CORE_METADATA_KEYS) | set(W2W_METADATA_KEYS):
            extra = sorted(set(meta) ^ (set(CORE_METADATA_KEYS) | set(W2W_METADATA_KEYS)))
            return f"to_metadata() keys differ from the SDK's by {extra}"
        if any(meta[k] != core[k] for k in CORE_METADATA_KEYS):
            return "to_metadata() disagrees with to_core_metadata() on the core fields"
        if meta != dict(model.to_metadata()):
            return "w2w_base.to_metadata() differs from the root's to_metadata()"
        if json.loads(w2w.get_metadata_json()) != meta:
            return "w2w_base.get_metadata_json() differs from to_metadata()"
        if dict(w2w.get_neutone_parameters_metadata()) != meta["neutone_parameters"]:
            return "get_neutone_parameters_metadata() differs from to_metadata()['neutone_parameters']"
        if meta["is_input_mono"] != bool(w2w.is_input_mono()) or \
                meta["is_output_mono"] != bool(w2w.is_output_mono()):
            return "to_metadata() channel flags disagree with is_input_mono() / is_output_mono()"
        return None

    def queries() -> str | None:
        model.set_daw_sample_rate_and_buffer_size(48000, 512)
        model.reset()
        if w2w.is_resampling() is not False:
            return "w2w_base.is_resampling() must be False: the inner model never resamples"
        for name in ("is_input_mono", "is_output_mono", "get_native_sample_rates",
                     "get_native_buffer_sizes", "get_wet_default_value", "get_dry_default_value",
                     "get_input_gain_default_value", "get_output_gain_default_value"):
            if getattr(model, name)() != getattr(w2w, name)():
                return f"root.{name}() differs from w2w_base.{name}()"
        defaults = w2w.get_numerical_params_default_values_0to1()
        if defaults.dim() != 2 or defaults.size(1) != 1 or defaults.size(0) > N_PARAM_ROWS:
            return f"get_numerical_params_default_values_0to1() has shape {tuple(defaults.shape)}, not (n<=4, 1)"
        if bool(((defaults < 0) | (defaults > 1)).any()):
            return "get_numerical_params_default_values_0to1() leaves [0, 1]"
        if not model.is_resampling() and model.calc_model_delay_samples() != w2w.calc_model_delay_samples():
            return "without resampling the root and w2w_base report different model delays"
        return None

    def daw_setter() -> str | None:
        rates = list(w2w.get_native_sample_rates())
        sizes = list(w2w.get_native_buffer_sizes())
        native_sr = rates[0] if rates else 48000
        native_bs = sizes[0] if sizes else 512
        if w2w.set_daw_sample_rate_and_buffer_size(native_sr, native_bs) is not None:
            return "w2w_base.set_daw_sample_rate_and_buffer_size() must return None, as the SDK's"
        if not isinstance(w2w.set_sample_rate_and_buffer_size(native_sr, native_bs), bool):
            return "set_sample_rate_and_buffer_size() must return a bool"
        if not isinstance(w2w.reset(), bool):
            return "w2w_base.reset() must return a bool"
        channels = 1 if w2w.is_input_mono() else 2
        x = 0.1 * torch.randn(channels, native_bs, generator=torch.Generator().manual_seed(1))
        params = w2w.get_numerical_params_default_values_0to1()
        rows = torch.zeros(N_PARAM_ROWS, native_bs)
        rows[:params.size(0)] = params.expand(params.size(0), native_bs)
        y = w2w.forward(x, rows)  # plain mode, as the root calls it (state must stay writable)
        out_channels = 1 if w2w.is_output_mono() else 2
        if tuple(y.shape) != (out_channels, native_bs) or not bool(torch.isfinite(y).all()):
            return (f"w2w_base.forward on a native buffer of {native_bs} returned {tuple(y.shape)}"
                    f"{'' if bool(torch.isfinite(y).all()) else ' with NaN'}, expected ({out_channels}, {native_bs})")
        # A rate the model was not trained at, with an odd buffer: refused, never raised.
        foreign_sr = 44100 if native_sr != 44100 else 22050
        if w2w.set_daw_sample_rate_and_buffer_size(foreign_sr, 333) is not None:
            return "w2w_base.set_daw_sample_rate_and_buffer_size() must return None"
        if w2w.is_resampling():
            return "w2w_base.is_resampling() turned True after a DAW rate change"
        # The root's path for that rate resamples, and the model still streams through it.
        model.set_daw_sample_rate_and_buffer_size(foreign_sr, 333)
        model.reset()
        io_bs = resampled_buffer_size(foreign_sr, select_model_sample_rate(foreign_sr, rates), 333)
        if model.is_resampling() != (io_bs != 333):
            return f"root.is_resampling() is {model.is_resampling()} at {foreign_sr} Hz for a model at {rates}"
        daw = 0.1 * torch.randn(2, 333, generator=torch.Generator().manual_seed(2))
        for _ in range(3):
            out = model.forward(daw)
        if tuple(out.shape) != (2, 333) or not bool(torch.isfinite(out).all()):
            return f"root.forward at {foreign_sr} Hz returned {tuple(out.shape)}, expected (2, 333)"
        model.set_daw_sample_rate_and_buffer_size(48000, 512)
        model.reset()
        return None

    return [
        ("w2w_base: get_core_preserved_attributes / get_preserved_attributes as the SDK's", preserved),
        ("w2w_base: to_core_metadata / to_metadata / get_metadata_json consistent", metadata),
        ("w2w_base: is_resampling False, queries agree with the root", queries),
        ("w2w_base: set_daw_sample_rate_and_buffer_size forwards, native and foreign rates", daw_setter),
    ]

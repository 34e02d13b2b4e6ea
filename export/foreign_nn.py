"""Model cards for nn~ TorchScript files that tildekit did not write (RAVE's exports and others).

Everything a tildekit tool needs is in such a file, by nn~'s own convention (docs/contracts.md §1):

- the methods: ``get_methods()``, or every method with a ``<method>_params`` buffer
  ``[in_channels, in_ratio, out_channels, out_ratio]``;
- the labels ``<method>_input_labels`` / ``<method>_output_labels`` when present;
- the attributes: ``get_attributes()`` (or every ``<name>_params`` with a ``set_<name>``), their
  type codes in ``<name>_params`` and their current values from ``get_<name>()``;
- the sample rate, when the file says it (``get_sample_rate()``, or an int ``sr`` /
  ``sample_rate`` attribute as RAVE and nn_tilde's Python module set it).

What the file does not say is measured: each method's delay, with an impulse. The model is run
from a fresh load on consecutive buffers twice with the same random seed, once on silence and
once with a unit impulse; the difference is exactly the impulse's effect even for a stochastic
model (noise for dropped latent dimensions, sampling). The delay is the lag of that response's
peak (where the impulse comes out loudest), as the median over impulse positions spread across
one latent frame. The card records that it was derived (``extra["card_source"]``), so every
tool can say so.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from tildekit.errors import TildekitError
from tildekit.export.model_card import channel_labels
from tildekit.export.nn_load import load_like_nn
from tildekit.models.contract.card import DERIVED_CARD_SOURCE, NN_TYPE_CODES, AttributeSpec, MethodSpec, ModelCard
from tildekit.models.contract.hosts import DEFAULT_BUFFER

ASSUMED_SAMPLE_RATE = 44100  # when the file names no rate (nn~ 1.6 has no standard for it)
SEED = 1234
IMPULSE_BUFFER = DEFAULT_BUFFER  # host buffer of the impulse runs (raised to the highest ratio)
IMPULSE_PHASES = 4  # impulse positions spread over one frame of the highest ratio
IMPULSE_WINDOW = 2 ** 16  # samples of response searched after the impulse
UNKNOWN_VALUE = {"bool": False, "int": 0, "float": 0.0, "str": ""}
SETTABLE_CODES = {code: name for name, code in NN_TYPE_CODES.items() if name in ("bool", "int", "float", "str")}

_CACHE: dict[tuple[str, int, int, bool], ModelCard] = {}


def derive_card(path: str | Path, *, measure_delays: bool = True) -> ModelCard:
    """A ModelCard read from an nn~ TorchScript file's methods, buffers and attributes."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, measure_delays)
    if key in _CACHE:
        return _CACHE[key]
    data = path.read_bytes()
    model = load_like_nn(path)
    methods = _methods(model, path)
    attributes, skipped = _attributes(model, path)
    sample_rate, rate_source = _sample_rate(model)
    channels, latent_size, compression = _shape(methods)
    extra: dict[str, Any] = {"card_source": DERIVED_CARD_SOURCE, "sample_rate_source": rate_source,
                             "delay_source": "not measured"}
    if skipped:
        extra["skipped_attributes"] = skipped
    if measure_delays:
        delays, notes = {}, []
        for name, spec in methods.items():
            delay, note = measure_delay(data, name, spec)
            delays[name] = delay
            if note:
                notes.append(f"{name}: {note}")
        methods = {name: replace(spec, delay=delays[name]) for name, spec in methods.items()}
        extra["delay_source"] = "impulse" + (f" ({'; '.join(notes)})" if notes else "")
        extra["stochastic"] = is_stochastic(data, _first_method(methods), methods[_first_method(methods)])
    delay = _card_delay(methods)
    card = ModelCard(name=path.stem, sample_rate=sample_rate, channels=channels, compression=compression,
                     latent_size=latent_size, methods=methods, attributes=attributes, delay=delay,
                     torch_version="", tildekit_version="", extra=extra)
    _CACHE[key] = card
    return card


# ----------------------------------------------------------------------------- discovery


def _has_method(model: Any, name: str) -> bool:
    return bool(model._c._has_method(name))


def _methods(model: Any, path: Path) -> dict[str, MethodSpec]:
    if _has_method(model, "get_methods"):
        names = [str(n) for n in model.get_methods()]
    else:  # nn~'s fallback: every method with a <name>_params buffer
        names = [n for n in model._c._method_names() if hasattr(model, f"{n}_params")]
    methods: dict[str, MethodSpec] = {}
    for name in names:
        if not _has_method(model, name):
            continue  # listed but absent: `tildekit check` reports it
        params = getattr(model, f"{name}_params", None)
        if not isinstance(params, torch.Tensor) or params.dtype.is_floating_point or params.numel() != 4:
            raise TildekitError(f"{path}: method {name!r} has no valid {name}_params buffer (nn~ reads "
                                f"[in_channels, in_ratio, out_channels, out_ratio] from it): "
                                f"this is not an nn~ model")
        in_ch, in_ratio, out_ch, out_ratio = (int(v) for v in params.flatten().tolist())
        if min(in_ch, in_ratio, out_ch, out_ratio) < 1:
            raise TildekitError(f"{path}: {name}_params is {[in_ch, in_ratio, out_ch, out_ratio]}: "
                                f"nn~ needs positive channel counts and ratios")
        inputs = _labels(model, f"{name}_input_labels", in_ch, "in" if in_ratio == 1 else "latent")
        outputs = _labels(model, f"{name}_output_labels", out_ch, "out" if out_ratio == 1 else "latent")
        methods[name] = MethodSpec(in_ch, in_ratio, out_ch, out_ratio, inputs, outputs)
    if not methods:
        raise TildekitError(f"{path}: not an nn~ model: no get_methods() and no method with a "
                            f"<method>_params buffer")
    return methods


def _labels(model: Any, attribute: str, count: int, kind: str) -> list[str]:
    labels = getattr(model, attribute, None)
    if isinstance(labels, (list, tuple)) and len(labels) == count and all(isinstance(x, str) for x in labels):
        return list(labels)
    return channel_labels(kind, count)


def _attributes(model: Any, path: Path) -> tuple[list[AttributeSpec], list[str]]:
    if _has_method(model, "get_attributes"):
        names = [str(n) for n in model.get_attributes() if n != "none"]
    else:
        names = [n for n, _ in model.named_buffers() if n.endswith("_params")]
        names = [n[:-len("_params")] for n in names if _has_method(model, f"set_{n[:-len('_params')]}")]
    specs, skipped = [], []
    for name in names:
        codes = getattr(model, f"{name}_params", None)
        if not isinstance(codes, torch.Tensor) or not _has_method(model, f"set_{name}"):
            skipped.append(name)  # nn~ cannot set it either
            continue
        codes = [int(c) for c in codes.flatten().tolist()]
        if not codes or any(c not in SETTABLE_CODES for c in codes):
            skipped.append(name)  # tensors and audio buffers: not settable from a message
            continue
        types = [SETTABLE_CODES[c] for c in codes]
        values = _current_values(model, name, types)
        description = f"attribute of the file ({', '.join(types)})"
        if values is None:  # nn~'s Pd object never calls getters, so files may lack them
            values = [UNKNOWN_VALUE[t] for t in types]
            description += f"; no get_{name}(): current value unknown"
        specs.append(AttributeSpec(name, types, values, description=description))
    return specs, skipped


def has_known_default(spec: AttributeSpec) -> bool:
    return "current value unknown" not in spec.description


def attribute_values(value: Any) -> list[Any]:
    """A getter's result as a list: nn~ accepts a list, a tuple or (RAVE) a single value."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _current_values(model: Any, name: str, types: list[str]) -> list[Any] | None:
    """The getter's values cast to the attribute's types; None without a working getter."""
    cast = {"bool": bool, "int": int, "float": float, "str": str}
    if not _has_method(model, f"get_{name}"):
        return None
    try:
        values = attribute_values(getattr(model, f"get_{name}")())
    except Exception:
        return None
    if len(values) != len(types):
        return None
    return [cast[t](v) for t, v in zip(types, values)]


def _sample_rate(model: Any) -> tuple[int, str]:
    if _has_method(model, "get_sample_rate"):
        try:
            rate = int(model.get_sample_rate())
            if rate > 0:
                return rate, "get_sample_rate()"
        except Exception:
            pass
    for name in ("sr", "sample_rate"):
        value = getattr(model, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, f"attribute {name}"
    return ASSUMED_SAMPLE_RATE, "assumed (the file names no rate)"


def _shape(methods: dict[str, MethodSpec]) -> tuple[int, int, int]:
    """(audio channels, latent size, compression) from the methods nn~ would show."""
    encode, decode, forward = methods.get("encode"), methods.get("decode"), methods.get("forward")
    audio_in = [m for m in (forward, encode) if m is not None and m.in_ratio == 1]
    audio_any = [m for m in methods.values() if m.in_ratio == 1] + [m for m in methods.values() if m.out_ratio == 1]
    channels = (audio_in[0].in_channels if audio_in
                else (audio_any[0].in_channels if audio_any and audio_any[0].in_ratio == 1
                      else audio_any[0].out_channels if audio_any else 1))
    if encode is not None and encode.in_ratio == 1:
        return channels, encode.out_channels, encode.out_ratio
    if decode is not None and decode.out_ratio == 1:
        return channels, decode.in_channels, decode.in_ratio
    highest = max(max(m.in_ratio, m.out_ratio) for m in methods.values())
    return channels, 0, highest


def _first_method(methods: dict[str, MethodSpec]) -> str:
    return "forward" if "forward" in methods else next(iter(methods))


def _card_delay(methods: dict[str, MethodSpec]) -> int:
    if "forward" in methods:
        return methods["forward"].delay
    if "encode" in methods and "decode" in methods:
        return methods["encode"].delay + methods["decode"].delay
    return 0


# ----------------------------------------------------------------------------- measurement


def fresh_model(data: bytes) -> Any:
    """The model as just loaded (initial streaming state), from the file's bytes."""
    model = torch.jit.load(io.BytesIO(data), map_location="cpu")
    model.eval()
    return model


Call = Callable[[torch.Tensor], torch.Tensor]


def _stream(call: Call, x: torch.Tensor, step: int, seed: int) -> torch.Tensor:
    """Consecutive buffers of ``step`` frames through ``call``, random draws seeded."""
    torch.manual_seed(seed)
    with torch.inference_mode():
        return torch.cat([call(x[..., i:i + step]) for i in range(0, x.shape[-1], step)], -1)


def _method_call(data: bytes, method: str) -> Callable[[], Call]:
    return lambda: getattr(fresh_model(data), method)


def impulse_buffer(spec: MethodSpec) -> int:
    highest = max(spec.in_ratio, spec.out_ratio)
    buffer = IMPULSE_BUFFER
    while buffer < highest or buffer % highest:
        buffer *= 2
    return buffer


def measure_delay(data: bytes, method: str, spec: MethodSpec) -> tuple[int, str]:
    """Samples from an impulse into ``method`` to the peak of its response, and a note if unsure."""
    return impulse_delay(_method_call(data, method), spec)


def impulse_delay(make_call: Callable[[], Call], spec: MethodSpec) -> tuple[int, str]:
    """The delay of ``make_call()`` (a fresh callable on (1, channels, frames) tensors per run).

    Silence and an impulse, same seed, consecutive host buffers; the lag of the difference's
    peak, median over impulse positions across one frame of the highest ratio.
    """
    buffer = impulse_buffer(spec)
    step = buffer // spec.in_ratio
    start = 2 * buffer  # past the start-up transient of cached paddings
    total = start + IMPULSE_WINDOW + buffer
    total += (-total) % buffer
    silence = torch.zeros(1, spec.in_channels, total // spec.in_ratio)
    base = _stream(make_call(), silence, step, SEED)
    highest = max(spec.in_ratio, spec.out_ratio)
    phases = sorted({(k * highest) // IMPULSE_PHASES for k in range(IMPULSE_PHASES)})
    lags = []
    for phase in phases:
        position = (start + phase) // spec.in_ratio
        x = silence.clone()
        x[..., position] = 1.0
        response = (_stream(make_call(), x, step, SEED) - base).abs().sum(dim=(0, 1))
        if not bool(response.gt(0).any()):
            continue
        lags.append(int(response.argmax()) * spec.out_ratio - position * spec.in_ratio)
    if not lags:
        return 0, f"no response to an impulse within {IMPULSE_WINDOW} samples: delay taken as 0"
    delay = max(0, int(statistics.median(lags)))
    spread = max(lags) - min(lags)
    return delay, (f"varies by {spread} samples with the impulse position" if spread > highest else "")


def is_stochastic(data: bytes, method: str, spec: MethodSpec) -> bool:
    """True when two runs on the same input differ only by the random seed."""
    buffer = impulse_buffer(spec)
    step = buffer // spec.in_ratio
    generator = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(1, spec.in_channels, 2 * step, generator=generator)
    make = _method_call(data, method)
    return not torch.equal(_stream(make(), x, step, 1), _stream(make(), x, step, 2))

"""The one validation point of model cards read from files.

Every card that comes from outside (a ``.ts``/``.nm`` archive, ONNX metadata, a ``.json`` file)
goes through :func:`check_card_data` before a :class:`~tildekit.models.contract.card.ModelCard` is built,
so every consumer (info, patch, serve, bench, check, osc) only ever sees cards whose

- fields have the right JSON types (an int is an int, not ``"abc"``, ``true`` or ``16000.5``),
- numbers are finite and in range (rates, channel counts, ratios, delays, latent statistics),
- names use a safe alphabet (the model name is a file stem and a Pd/Max word; attribute and
  method names are identifiers), and free text has no control or invisible characters,
- parts agree with each other: ``forward``/``encode``/``decode``, when present, have the channel
  counts and ratios that ``channels``, ``latent_size`` and ``compression`` imply (a family
  other than the autoencoder names its own methods: ``features``, ``synth``, ...), per-dimension attributes
  and latent statistics have ``latent_size`` entries, defaults fit their types and ranges.

A problem raises :class:`CardError` naming the field (``methods.encode.out_ratio``); the reader
adds the file. Exporters run the same check on the cards they write, so what tildekit writes,
tildekit reads back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tildekit.models.contract.attributes import PER_DIMENSION_ATTRIBUTES
from tildekit.models.contract.card_format import CARD_FORMAT, NN_TYPE_CODES, CardError
from tildekit.models.contract.names import NAME_ALPHABET, identifier_problem, name_problem, shown, text_problem
from tildekit.models.contract.synth_controls import LOUDNESS_LIMITS, LOUDNESS_RANGE_KEY

# Ranges: generous for any real model, small enough that nothing downstream can blow up.
SAMPLE_RATE_RANGE = (1000, 768000)
MAX_CHANNELS = 64  # audio channels
MAX_LATENT_SIZE = 1024
MAX_RATIO = 1 << 16  # compression and method ratios
MAX_DELAY_SECONDS = 60
MAX_METHODS = 32
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_VALUES = MAX_LATENT_SIZE
LATENT_LIMIT = 1e4  # |mean|, std, |min|, |max| of a latent dimension
ATTRIBUTE_LIMIT = 1e9  # |minimum|, |maximum|, |default| of a numeric attribute
MAX_STEP = 10 ** 12
MAX_LABEL = 64
MAX_DESCRIPTION = 500
MAX_SHORT_TEXT = 64  # profile, versions, extra keys, string values
MAX_EXTRA_KEYS = 64
MAX_EXTRA_ITEMS = 4096
MAX_EXTRA_DEPTH = 4
MAX_CARD_BYTES = 1 << 20  # a card is a few kB; bigger is not a card

TOP_FIELDS = {"name", "sample_rate", "channels", "compression", "latent_size", "methods", "attributes",
              "delay", "latents", "profile", "step", "torch_version", "tildekit_version", "card_format",
              "extra", "host_rates", "family"}
REQUIRED = ("name", "sample_rate", "channels", "compression", "latent_size", "methods", "delay")
METHOD_FIELDS = {"in_channels", "in_ratio", "out_channels", "out_ratio", "input_labels", "output_labels",
                 "delay"}
ATTRIBUTE_FIELDS = {"name", "types", "default", "minimum", "maximum", "description"}
LATENT_FIELDS = {"mean", "std", "minimum", "maximum", "variance_ratio"}
HOST_RATE_FIELDS = {"rate", "delays", "added_ms", "buffer_delays"}
MAX_BUFFER_DELAYS = 16  # buffer sizes with their own delays, per host rate
MAX_HOST_RATES = 16


def _fail(field: str, problem: str) -> CardError:
    return CardError(f"model card field {field!r} {problem}")


def _int(data: dict, key: str, field: str, low: int, high: int, default: Any = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(field, f"must be a whole number, got {shown(value)}")
    if not low <= value <= high:
        raise _fail(field, f"is {value}, outside {low}..{high}")
    return value


def _number(value: Any, field: str, limit: float, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(field, f"must be a number, got {shown(value)}")
    if not math.isfinite(value):
        raise _fail(field, f"must be a finite number, got {value!r}")
    if abs(value) > limit:
        raise _fail(field, f"is {value:g}, beyond +-{limit:g}")
    if low is not None and value < low:
        raise _fail(field, f"is {value:g}, must be >= {low:g}")
    return float(value)


def _text(value: Any, field: str, max_length: int) -> str:
    problem = text_problem(value, max_length)
    if problem:
        raise _fail(field, problem)
    return value


def _object(value: Any, field: str, allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        raise _fail(field, f"must be an object, got {type(value).__name__}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise _fail(field, f"has unknown entries {shown(unknown)}: this tildekit cannot read it; "
                           f"re-export the model")
    return value


def _list(value: Any, field: str, max_items: int) -> list:
    if not isinstance(value, list):
        raise _fail(field, f"must be a list, got {type(value).__name__}")
    if len(value) > max_items:
        raise _fail(field, f"holds {len(value)} entries (at most {max_items})")
    return value


def check_card_data(data: Any) -> None:
    """Raise CardError (naming the field) unless ``data`` is a well-formed, consistent card."""
    if not isinstance(data, dict):
        raise CardError("model card is not a JSON object")
    fmt = data.get("card_format", CARD_FORMAT)
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > CARD_FORMAT:
        raise CardError(f"model card format {fmt} is newer than this tildekit understands "
                        f"({CARD_FORMAT}): upgrade tildekit (pip install -U tildekit)")
    _int(data, "card_format", "card_format", 0, CARD_FORMAT, CARD_FORMAT)
    _object(data, "card", TOP_FIELDS)
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise CardError(f"model card lacks the field(s) {', '.join(missing)}: re-export the model")

    problem = name_problem(data["name"])
    if problem:
        raise _fail("name", f"{shown(data['name'])} {problem}")
    rate = _int(data, "sample_rate", "sample_rate", *SAMPLE_RATE_RANGE)
    channels = _int(data, "channels", "channels", 1, MAX_CHANNELS)
    compression = _int(data, "compression", "compression", 1, MAX_RATIO)
    # 0: a forward-only model (no encode/decode; their method specs need channels >= 1)
    latent_size = _int(data, "latent_size", "latent_size", 0, MAX_LATENT_SIZE)
    max_delay = MAX_DELAY_SECONDS * rate
    delay = _int(data, "delay", "delay", 0, max_delay)
    _int(data, "step", "step", 0, MAX_STEP, 0)
    for key in ("profile", "torch_version", "tildekit_version"):
        _text(data.get(key, ""), key, MAX_SHORT_TEXT)
    family = data.get("family", "autoencoder")
    problem = identifier_problem(family)
    if problem:
        raise _fail("family", f"{shown(family)} {problem}")

    methods = data["methods"]
    if not isinstance(methods, dict) or not methods:
        raise _fail("methods", "must be a non-empty object of method name -> [channels, ratios]")
    if len(methods) > MAX_METHODS:
        raise _fail("methods", f"holds {len(methods)} methods (at most {MAX_METHODS})")
    for name, spec in methods.items():
        _check_method(name, spec, max_delay)
    _check_known_methods(methods, channels, latent_size, compression, delay)

    attributes = _list(data.get("attributes", []), "attributes", MAX_ATTRIBUTES)
    seen: set[str] = set()
    for i, attr in enumerate(attributes):
        name = _check_attribute(i, attr, latent_size)
        if name in seen:
            raise _fail(f"attributes[{i}].name", f"repeats the attribute {name!r}")
        seen.add(name)

    latents = _list(data.get("latents", []), "latents", MAX_LATENT_SIZE)
    if latents and len(latents) != latent_size:
        raise _fail("latents", f"describes {len(latents)} dimensions but latent_size is {latent_size}")
    for i, dim in enumerate(latents):
        _check_latent(i, dim)

    _check_extra(data.get("extra", {}), latent_size)

    rates = _list(data.get("host_rates", []), "host_rates", MAX_HOST_RATES)
    for i, entry in enumerate(rates):
        _check_host_rate(i, entry, methods, max_delay)


def _check_host_rate(i: int, entry: Any, methods: dict, max_delay: int) -> None:
    """One host rate: its rate, and per method its delay (host samples) and the added milliseconds."""
    field = f"host_rates[{i}]"
    entry = _object(entry, field, HOST_RATE_FIELDS)
    _int(entry, "rate", f"{field}.rate", *SAMPLE_RATE_RANGE)
    for key in ("delays", "added_ms"):
        _check_method_numbers(entry.get(key), f"{field}.{key}", methods, max_delay)
    buffers = entry.get("buffer_delays", {})
    if not isinstance(buffers, dict) or len(buffers) > MAX_BUFFER_DELAYS:
        raise _fail(f"{field}.buffer_delays", f"must map at most {MAX_BUFFER_DELAYS} buffer sizes to delays")
    for size, table in buffers.items():
        if not (isinstance(size, str) and size.isdigit() and size.isascii() and 0 < int(size) <= MAX_RATIO):
            raise _fail(f"{field}.buffer_delays", f"has a key {shown(size)}, not a buffer size in samples")
        _check_method_numbers(table, f"{field}.buffer_delays.{size}", methods, max_delay)


def _check_method_numbers(table: Any, field: str, methods: dict, max_delay: int) -> None:
    """A table from some of the card's methods to non-negative numbers (delays, milliseconds)."""
    if not isinstance(table, dict) or set(table) - set(methods):
        raise _fail(field, "must map the card's methods to numbers")
    for method, value in table.items():
        _number(value, f"{field}.{method}", float(max_delay) * 10, low=0.0)


def _check_method(name: Any, spec: Any, max_delay: int) -> None:
    problem = identifier_problem(name)
    if problem:
        raise _fail("methods", f"has a method named {shown(name)}, which {problem}")
    field = f"methods.{name}"
    spec = _object(spec, field, METHOD_FIELDS)
    for key in ("in_channels", "in_ratio", "out_channels", "out_ratio"):
        if key not in spec:
            raise _fail(field, f"lacks {key}")
    in_channels = _int(spec, "in_channels", f"{field}.in_channels", 1, MAX_LATENT_SIZE)
    out_channels = _int(spec, "out_channels", f"{field}.out_channels", 1, MAX_LATENT_SIZE)
    _int(spec, "in_ratio", f"{field}.in_ratio", 1, MAX_RATIO)
    _int(spec, "out_ratio", f"{field}.out_ratio", 1, MAX_RATIO)
    _int(spec, "delay", f"{field}.delay", 0, max_delay, 0)
    for key, count in (("input_labels", in_channels), ("output_labels", out_channels)):
        labels = _list(spec.get(key, []), f"{field}.{key}", MAX_LATENT_SIZE)
        if labels and len(labels) != count:
            raise _fail(f"{field}.{key}", f"holds {len(labels)} labels for {count} channels")
        for k, label in enumerate(labels):
            _text(label, f"{field}.{key}[{k}]", MAX_LABEL)


def _check_known_methods(methods: dict, channels: int, latent_size: int, compression: int,
                         delay: int) -> None:
    """forward/encode/decode must match the card's channels, latent size and compression."""
    expected = {
        "forward": (channels, 1, channels, 1),
        "encode": (channels, 1, latent_size, compression),
        "decode": (latent_size, compression, channels, 1),
    }
    names = ("in_channels", "in_ratio", "out_channels", "out_ratio")
    for method, want in expected.items():
        if method not in methods:
            continue
        got = tuple(methods[method][k] for k in names)
        if got != want:
            raise _fail(f"methods.{method}", f"is [in_channels, in_ratio, out_channels, out_ratio] = "
                                             f"{list(got)}, but channels {channels}, latent_size {latent_size} "
                                             f"and compression {compression} give {list(want)}")
    forward = methods.get("forward")
    if forward is not None and forward.get("delay", 0) != delay:
        raise _fail("delay", f"is {delay} but methods.forward.delay is {forward.get('delay', 0)}: "
                             f"they are the same delay")


def _check_value(value: Any, kind: str, field: str) -> None:
    if kind == "bool":
        if not isinstance(value, bool):
            raise _fail(field, f"must be true or false, got {shown(value)}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > ATTRIBUTE_LIMIT:
            raise _fail(field, f"must be a whole number within +-{ATTRIBUTE_LIMIT:g}, got {shown(value)}")
    elif kind == "float":
        _number(value, field, ATTRIBUTE_LIMIT)
    elif kind == "str":  # sent as one word in a Pd/Max message: a plain word or nothing
        if not isinstance(value, str) or (value and name_problem(value)):
            raise _fail(field, f"must be one plain word ({NAME_ALPHABET}) or empty, got {shown(value)}")
    else:  # "tensor": nn~ cannot set it from a message; nothing to check but its presence
        if value is not None:
            raise _fail(field, f"a tensor attribute has no default, got {shown(value)}")


def _check_attribute(i: int, attr: Any, latent_size: int) -> str:
    field = f"attributes[{i}]"
    attr = _object(attr, field, ATTRIBUTE_FIELDS)
    for key in ("name", "types", "default"):
        if key not in attr:
            raise _fail(field, f"lacks {key}")
    name = attr["name"]
    problem = identifier_problem(name)
    if problem:
        raise _fail(f"{field}.name", f"{shown(name)} {problem}")
    field = f"attributes.{name}"
    types = _list(attr["types"], f"{field}.types", MAX_ATTRIBUTE_VALUES)
    if not types:
        raise _fail(f"{field}.types", "is empty: an attribute takes at least one value")
    for k, kind in enumerate(types):
        if not isinstance(kind, str) or kind not in NN_TYPE_CODES:
            raise _fail(f"{field}.types[{k}]", f"is {shown(kind)}, not one of {', '.join(NN_TYPE_CODES)}")
    default = _list(attr["default"], f"{field}.default", MAX_ATTRIBUTE_VALUES)
    if len(default) != len(types):
        raise _fail(f"{field}.default", f"holds {len(default)} values for {len(types)} types")
    for k, (value, kind) in enumerate(zip(default, types)):
        _check_value(value, kind, f"{field}.default[{k}]")
    bounds = []
    for key in ("minimum", "maximum"):
        value = attr.get(key)
        bounds.append(None if value is None else _number(value, f"{field}.{key}", ATTRIBUTE_LIMIT))
    low, high = bounds
    if low is not None and high is not None and low > high:
        raise _fail(f"{field}.minimum", f"{low:g} is above the maximum {high:g}")
    for k, (value, kind) in enumerate(zip(default, types)):
        if kind in ("int", "float") and ((low is not None and value < low) or (high is not None and value > high)):
            raise _fail(f"{field}.default[{k}]", f"{value:g} is outside the attribute's range")
    _text(attr.get("description", ""), f"{field}.description", MAX_DESCRIPTION)
    if name in PER_DIMENSION_ATTRIBUTES and (len(types) != latent_size or set(types) != {"float"}):
        raise _fail(f"{field}.types", f"must be {latent_size} floats (one per latent dimension), "
                                      f"got {len(types)} value(s)")
    return name


def _check_latent(i: int, dim: Any) -> None:
    field = f"latents[{i}]"
    dim = _object(dim, field, LATENT_FIELDS)
    for key in ("mean", "std", "minimum", "maximum"):
        if key not in dim:
            raise _fail(field, f"lacks {key}")
    _number(dim["mean"], f"{field}.mean", LATENT_LIMIT)
    _number(dim["std"], f"{field}.std", LATENT_LIMIT, low=0.0)
    low = _number(dim["minimum"], f"{field}.minimum", LATENT_LIMIT)
    high = _number(dim["maximum"], f"{field}.maximum", LATENT_LIMIT)
    if low > high:
        raise _fail(f"{field}.minimum", f"{low:g} is above the maximum {high:g}")
    _number(dim.get("variance_ratio", 0.0), f"{field}.variance_ratio", 1.0, low=0.0)


def _check_extra(extra: Any, latent_size: int) -> None:
    if not isinstance(extra, dict):
        raise _fail("extra", f"must be an object, got {type(extra).__name__}")
    if len(extra) > MAX_EXTRA_KEYS:
        raise _fail("extra", f"holds {len(extra)} entries (at most {MAX_EXTRA_KEYS})")
    budget = [MAX_EXTRA_ITEMS]
    for key, value in extra.items():
        problem = identifier_problem(key)
        if problem:
            raise _fail("extra", f"has an entry named {shown(key)}, which {problem}")
        _check_json(value, f"extra.{key}", 1, budget)
    known: dict[str, Callable[[Any, str], object]] = {
        "full_latent_size": lambda v, f: _check_full(v, f, latent_size),
        "kept_variance": lambda v, f: _number(v, f, 1.0, low=0.0),
        "latent_basis": lambda v, f: _text(v, f, MAX_SHORT_TEXT),
        LOUDNESS_RANGE_KEY: _check_loudness_range,
    }
    for key, check in known.items():
        if key in extra:
            check(extra[key], f"extra.{key}")


def _check_loudness_range(value: Any, field: str) -> None:
    if not isinstance(value, list) or len(value) != 2:
        raise _fail(field, f"must be [low, high] in dB, got {shown(value)}")
    low, high = (_number(v, field, -LOUDNESS_LIMITS[0]) for v in value)
    if not LOUDNESS_LIMITS[0] <= low < high <= LOUDNESS_LIMITS[1]:
        raise _fail(field, f"must be [low, high] with {LOUDNESS_LIMITS[0]:g} <= low < high <= "
                           f"{LOUDNESS_LIMITS[1]:g} dB, got {shown(value)}")


def _check_full(value: Any, field: str, latent_size: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not latent_size <= value <= MAX_LATENT_SIZE:
        raise _fail(field, f"must be a whole number in {latent_size}..{MAX_LATENT_SIZE}, got {shown(value)}")


def _check_json(value: Any, field: str, depth: int, budget: list[int]) -> None:
    """Bounded JSON: finite numbers, short texts, small lists and objects, little nesting."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _fail("extra", f"holds more than {MAX_EXTRA_ITEMS} values")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        _number(value, field, 1e300)
    elif isinstance(value, str):
        _text(value, field, MAX_DESCRIPTION)
    elif isinstance(value, (list, dict)):
        if depth >= MAX_EXTRA_DEPTH:
            raise _fail(field, f"nests deeper than {MAX_EXTRA_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(value, dict):
                _text(key, f"{field} (a key)", MAX_SHORT_TEXT)
            _check_json(item, f"{field}.{key}" if isinstance(value, dict) else f"{field}[{key}]",
                        depth + 1, budget)
    else:
        raise _fail(field, f"has a value of type {type(value).__name__}")

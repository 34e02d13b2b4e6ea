"""The OSC address space of a model, derived from its model card.

One map, used by the patch generators (routes), the controller (what it sends), the engine
(what it accepts) and the docs. For a model named NAME (the card's ``name``)::

    /tildekit/NAME/latent/<i>        f          bias (offset) of latent dimension i
    /tildekit/NAME/latent/<i>/scale  f          gain of latent dimension i
    /tildekit/NAME/latent/bias       f * L      all biases at once (L = latent size)
    /tildekit/NAME/latent/scale      f * L      all gains at once
    /tildekit/NAME/attr/<attribute>  per card   a settable model attribute (temperature, ...)
    /tildekit/NAME/gain              f          output gain, linear (1 = unchanged)
    /tildekit/NAME/reset                        clear the streaming state
    /tildekit/NAME/note              f f        MIDI pitch and velocity (0 = note off); only
                                                for a model with a ``synth`` method (DDSP)

Every message is checked against the card before it can reach a model: the index is in range,
the argument count and types fit, and every number is finite and inside a range. The ranges come
from the card where it gives one; the whole-vector attributes ``attr/latent_bias`` and
``attr/latent_scale`` set the same values as ``latent/bias`` and ``latent/scale`` and take the
same ranges; any other number is bounded by ``ATTRIBUTE_LIMIT``. ``parse`` raises
``UnknownAddressError`` (no such address for this model) or ``BadValueError`` (known address,
wrong values), both ``OscValueError``, with a one-line reason, and never anything else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tildekit.models.contract.attributes import LATENT_BIAS, LATENT_SCALE
from tildekit.models.contract.card import AttributeSpec, ModelCard
from tildekit.models.contract.synth_controls import MIDI_MAX, has_synth

GAIN_RANGE = (0.0, 16.0)
SCALE_RANGE = (-16.0, 16.0)
# Latent biases beyond this are rejected as typos (latents of a trained model sit within a few units).
MAX_BIAS = 1e3
BIAS_RANGE = (-MAX_BIAS, MAX_BIAS)
# A numeric attribute whose card gives no range is still kept within this (and so within float32).
ATTRIBUTE_LIMIT = 1e6
# String attributes longer than this are not a setting but a mistake (or an attack).
MAX_STRING = 256
MIDI_RANGE = (0.0, MIDI_MAX)  # note pitch (fractional: between the keys) and velocity
# The whole-vector attributes are other names for latent/bias and latent/scale.
VECTOR_ATTRIBUTE_RANGES = {LATENT_BIAS: BIAS_RANGE, LATENT_SCALE: SCALE_RANGE}
_INDEX = re.compile(r"[0-9]{1,9}")


class OscValueError(ValueError):
    """A message that does not fit the address space."""


class UnknownAddressError(OscValueError):
    """No such address for this model (wrong prefix, path, latent index or attribute name)."""


class BadValueError(OscValueError):
    """A known address with wrong values: count, types, non-finite numbers or out of range."""


@dataclass(frozen=True)
class Control:
    """One parsed, validated control change, ready for the engine or a patch."""

    kind: str  # "bias" | "scale" | "bias_all" | "scale_all" | "attr" | "gain" | "reset" | "note"
    index: int = -1  # latent dimension for "bias"/"scale"
    name: str = ""  # attribute name for "attr"
    values: tuple[Any, ...] = ()


@dataclass(frozen=True)
class AddressDoc:
    pattern: str
    types: str
    description: str


def model_slug(name: str) -> str:
    """An OSC-safe model name: letters, digits, '_' and '-' only."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    return slug or "model"


class OscMap:
    def __init__(self, card: ModelCard, name: str | None = None) -> None:
        self.card = card
        self.name = model_slug(name or card.name)
        self.prefix = f"/tildekit/{self.name}"
        self.plays_notes = has_synth(card.methods)  # a synth method: notes become its controls

    # -- addresses -----------------------------------------------------------------
    def latent(self, index: int) -> str:
        return f"{self.prefix}/latent/{index}"

    def latent_scale(self, index: int) -> str:
        return f"{self.prefix}/latent/{index}/scale"

    @property
    def bias_all(self) -> str:
        return f"{self.prefix}/latent/bias"

    @property
    def scale_all(self) -> str:
        return f"{self.prefix}/latent/scale"

    def attr(self, name: str) -> str:
        return f"{self.prefix}/attr/{name}"

    @property
    def gain(self) -> str:
        return f"{self.prefix}/gain"

    @property
    def reset(self) -> str:
        return f"{self.prefix}/reset"

    @property
    def note(self) -> str:
        return f"{self.prefix}/note"

    def documentation(self) -> list[AddressDoc]:
        """Every address of this model, for docs, `--help` and patch comments."""
        size = self.card.latent_size
        docs = [
            AddressDoc(f"{self.prefix}/latent/<0..{size - 1}>", "f",
                       f"bias (offset) of one latent dimension, in {list(BIAS_RANGE)}"),
            AddressDoc(f"{self.prefix}/latent/<0..{size - 1}>/scale", "f",
                       f"gain of one latent dimension, in {list(SCALE_RANGE)}"),
            AddressDoc(self.bias_all, "f" * size, "biases of all latent dimensions"),
            AddressDoc(self.scale_all, "f" * size, "gains of all latent dimensions"),
        ] if size else []  # a forward-only model has no latent space
        for attr in self.card.attributes:
            types = "".join({"bool": "T/F", "int": "i", "float": "f", "str": "s"}.get(t, "?")
                            for t in attr.types)
            text = attr.description or attr.name
            if any(t in ("int", "float") for t in attr.types):
                text += f" (in {list(attribute_range(attr))})"
            docs.append(AddressDoc(self.attr(attr.name), types, text))
        docs.append(AddressDoc(self.gain, "f", f"output gain, linear {GAIN_RANGE}"))
        docs.append(AddressDoc(self.reset, "", "clear the streaming state"))
        if self.plays_notes:
            docs.append(AddressDoc(self.note, "ff", "play the synth: MIDI pitch and velocity, each in "
                                                    f"{list(MIDI_RANGE)} (velocity 0 = note off)"))
        return docs

    # -- validation ----------------------------------------------------------------
    def parse(self, address: str, args: Sequence[Any]) -> Control:
        """The validated Control of one message, or an ``OscValueError`` saying why not."""
        if not isinstance(address, str) or not address.startswith(self.prefix + "/"):
            raise UnknownAddressError(f"unknown address {_shown(address)} "
                                      f"(this model listens on {self.prefix}/...)")
        parts = address[len(self.prefix) + 1:].split("/")
        head = parts[0]
        if head == "gain" and len(parts) == 1:
            (value,) = _numbers(address, args, 1, GAIN_RANGE)
            return Control("gain", values=(value,))
        if head == "reset" and len(parts) == 1:
            return Control("reset")  # arguments ignored: a controller's button may send 1
        if head == "note" and len(parts) == 1 and self.plays_notes:
            return Control("note", values=_numbers(address, args, 2, MIDI_RANGE))
        if head == "attr" and len(parts) == 2:
            return self._parse_attr(address, parts[1], args)
        if head == "latent" and len(parts) in (2, 3):
            return self._parse_latent(address, parts[1:], args)
        raise UnknownAddressError(f"unknown address {_shown(address)}")

    def _parse_latent(self, address: str, parts: list[str], args: Sequence[Any]) -> Control:
        size = self.card.latent_size
        if size == 0:
            raise OscValueError(f"{address}: model {self.card.name!r} has no latent space (forward only): "
                                f"use its {self.prefix}/attr/... addresses")
        if parts == ["bias"]:
            return Control("bias_all", values=_numbers(address, args, size, BIAS_RANGE))
        if parts == ["scale"]:
            return Control("scale_all", values=_numbers(address, args, size, SCALE_RANGE))
        if not _INDEX.fullmatch(parts[0]) or int(parts[0]) >= size:
            raise UnknownAddressError(f"{_shown(address)}: latent index must be 0..{size - 1}")
        index = int(parts[0])
        if len(parts) == 2:
            if parts[1] != "scale":
                raise UnknownAddressError(f"unknown address {_shown(address)}")
            (value,) = _numbers(address, args, 1, SCALE_RANGE)
            return Control("scale", index=index, values=(value,))
        (value,) = _numbers(address, args, 1, BIAS_RANGE)
        return Control("bias", index=index, values=(value,))

    def _parse_attr(self, address: str, name: str, args: Sequence[Any]) -> Control:
        try:
            spec = self.card.attribute(name)
        except KeyError:
            known = ", ".join(a.name for a in self.card.attributes)
            raise UnknownAddressError(f"{_shown(address)}: no attribute {_shown(name)} "
                                      f"(known: {known})") from None
        if len(args) != len(spec.types):
            raise BadValueError(f"{address}: expects {len(spec.types)} value(s), got {len(args)}")
        bounds = attribute_range(spec)
        values: list[Any] = []
        for value, kind in zip(args, spec.types):
            if kind == "bool":
                if isinstance(value, str) and value.lower() in ("true", "false"):
                    value = value.lower() == "true"
                if not isinstance(value, (bool, int)) or (isinstance(value, int) and value not in (0, 1)):
                    raise BadValueError(f"{address}: expects true/false, got {_shown(value)}")
                values.append(bool(value))
            elif kind in ("int", "float"):
                number = _number(address, value, bounds)
                if kind == "int":
                    if not number.is_integer():
                        raise BadValueError(f"{address}: expects a whole number, got {_shown(value)}")
                    values.append(int(number))
                else:
                    values.append(number)
            elif kind == "str":
                if not isinstance(value, str) or len(value) > MAX_STRING or not value.isprintable():
                    raise BadValueError(f"{address}: expects a printable string of at most {MAX_STRING} "
                                        f"characters, got {_shown(value)}")
                values.append(value)
            else:
                raise BadValueError(f"{address}: the card gives the unsupported type {kind!r}")
        return Control("attr", name=name, values=tuple(values))


def attribute_range(spec: AttributeSpec) -> tuple[float, float]:
    """The range every number of attribute ``spec`` must fall in: the card's, within the safe one."""
    lo, hi = VECTOR_ATTRIBUTE_RANGES.get(spec.name, (-ATTRIBUTE_LIMIT, ATTRIBUTE_LIMIT))
    if _is_finite_number(spec.minimum):
        lo = max(lo, float(spec.minimum))  # type: ignore[arg-type]
    if _is_finite_number(spec.maximum):
        hi = min(hi, float(spec.maximum))  # type: ignore[arg-type]
    return lo, hi


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _number(address: str, value: Any, bounds: tuple[float, float]) -> float:
    """``value`` as a float inside ``bounds``, or BadValueError (NaN, inf, huge, wrong type)."""
    if not _is_finite_number(value):
        kind = "finite number" if isinstance(value, (int, float)) and not isinstance(value, bool) else "number"
        raise BadValueError(f"{address}: expects a {kind}, got {_shown(value)}")
    lo, hi = bounds
    number = float(value)
    if not lo <= number <= hi:
        raise BadValueError(f"{address}: {number:g} is outside [{lo:g}, {hi:g}]")
    return number


def _numbers(address: str, args: Sequence[Any], count: int,
             bounds: tuple[float, float]) -> tuple[float, ...]:
    if len(args) != count:
        raise BadValueError(f"{address}: expects {count} number(s), got {len(args)}")
    return tuple(_number(address, value, bounds) for value in args)


def _shown(value: Any, limit: int = 60) -> str:
    """A value for an error message: repr, cut short (a hostile packet can hold 64 KB)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."

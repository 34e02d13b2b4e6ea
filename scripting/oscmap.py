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

Values are checked against the card: index in range, argument count and types, numeric
ranges where the card gives one. ``parse`` raises ``OscValueError`` with a one-line reason.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from tildekit.models.card import ModelCard

GAIN_RANGE = (0.0, 16.0)
SCALE_RANGE = (-16.0, 16.0)
# Latent biases beyond this many standard deviations from the mean are rejected as typos.
MAX_BIAS = 1e3


class OscValueError(ValueError):
    """A message that does not fit the address space (unknown address, wrong types, range)."""


@dataclass(frozen=True)
class Control:
    """One parsed, validated control change, ready for the engine or a patch."""

    kind: str  # "bias" | "scale" | "bias_all" | "scale_all" | "attr" | "gain" | "reset"
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

    def documentation(self) -> list[AddressDoc]:
        """Every address of this model, for docs, `--help` and patch comments."""
        size = self.card.latent_size
        docs = [
            AddressDoc(f"{self.prefix}/latent/<0..{size - 1}>", "f", "bias (offset) of one latent dimension"),
            AddressDoc(f"{self.prefix}/latent/<0..{size - 1}>/scale", "f", "gain of one latent dimension"),
            AddressDoc(self.bias_all, "f" * size, "biases of all latent dimensions"),
            AddressDoc(self.scale_all, "f" * size, "gains of all latent dimensions"),
        ] if size else []  # a forward-only model has no latent space
        for attr in self.card.attributes:
            types = "".join({"bool": "T/F", "int": "i", "float": "f", "str": "s"}.get(t, "?")
                            for t in attr.types)
            docs.append(AddressDoc(self.attr(attr.name), types, attr.description or attr.name))
        docs.append(AddressDoc(self.gain, "f", f"output gain, linear {GAIN_RANGE}"))
        docs.append(AddressDoc(self.reset, "", "clear the streaming state"))
        return docs

    # -- validation ----------------------------------------------------------------
    def parse(self, address: str, args: Sequence[Any]) -> Control:
        if not address.startswith(self.prefix + "/"):
            raise OscValueError(f"unknown address {address!r} (this model listens on {self.prefix}/...)")
        parts = address[len(self.prefix) + 1:].split("/")
        head = parts[0]
        if head == "gain" and len(parts) == 1:
            (value,) = self._floats(address, args, 1)
            self._check_range(address, value, GAIN_RANGE)
            return Control("gain", values=(value,))
        if head == "reset" and len(parts) == 1:
            return Control("reset")
        if head == "attr" and len(parts) == 2:
            return self._parse_attr(address, parts[1], args)
        if head == "latent" and len(parts) in (2, 3):
            return self._parse_latent(address, parts[1:], args)
        raise OscValueError(f"unknown address {address!r}")

    def _parse_latent(self, address: str, parts: list[str], args: Sequence[Any]) -> Control:
        size = self.card.latent_size
        if size == 0:
            raise OscValueError(f"{address}: model {self.card.name!r} has no latent space (forward only): "
                                f"use its {self.prefix}/attr/... addresses")
        if parts == ["bias"]:
            values = self._floats(address, args, size)
            for v in values:
                self._check_range(address, v, (-MAX_BIAS, MAX_BIAS))
            return Control("bias_all", values=values)
        if parts == ["scale"]:
            values = self._floats(address, args, size)
            for v in values:
                self._check_range(address, v, SCALE_RANGE)
            return Control("scale_all", values=values)
        if not parts[0].isdigit() or int(parts[0]) >= size:
            raise OscValueError(f"{address}: latent index must be 0..{size - 1}")
        index = int(parts[0])
        (value,) = self._floats(address, args, 1)
        if len(parts) == 2:
            if parts[1] != "scale":
                raise OscValueError(f"unknown address {address!r}")
            self._check_range(address, value, SCALE_RANGE)
            return Control("scale", index=index, values=(value,))
        self._check_range(address, value, (-MAX_BIAS, MAX_BIAS))
        return Control("bias", index=index, values=(value,))

    def _parse_attr(self, address: str, name: str, args: Sequence[Any]) -> Control:
        try:
            spec = self.card.attribute(name)
        except KeyError:
            known = ", ".join(a.name for a in self.card.attributes)
            raise OscValueError(f"{address}: no attribute {name!r} (known: {known})") from None
        if len(args) != len(spec.types):
            raise OscValueError(f"{address}: expects {len(spec.types)} value(s), got {len(args)}")
        values: list[Any] = []
        for value, kind in zip(args, spec.types):
            if kind == "bool":
                if isinstance(value, str) and value.lower() in ("true", "false"):
                    value = value.lower() == "true"
                if not isinstance(value, (bool, int)) or (isinstance(value, int) and value not in (0, 1)):
                    raise OscValueError(f"{address}: expects true/false, got {value!r}")
                values.append(bool(value))
            elif kind in ("int", "float"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise OscValueError(f"{address}: expects a number, got {value!r}")
                lo = -math.inf if spec.minimum is None else spec.minimum
                hi = math.inf if spec.maximum is None else spec.maximum
                self._check_range(address, float(value), (lo, hi))
                values.append(int(value) if kind == "int" else float(value))
            else:
                values.append(str(value))
        return Control("attr", name=name, values=tuple(values))

    @staticmethod
    def _floats(address: str, args: Sequence[Any], count: int) -> tuple[float, ...]:
        if len(args) != count:
            raise OscValueError(f"{address}: expects {count} number(s), got {len(args)}")
        out = []
        for value in args:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise OscValueError(f"{address}: expects numbers, got {value!r}")
            out.append(float(value))
        return tuple(out)

    @staticmethod
    def _check_range(address: str, value: float, bounds: tuple[float, float]) -> None:
        lo, hi = bounds
        if not lo <= value <= hi:
            raise OscValueError(f"{address}: {value} is outside [{lo}, {hi}]")

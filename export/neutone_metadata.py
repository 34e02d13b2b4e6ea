"""Neutone FX ``metadata.json``: built from a ModelCard, checked against the SDK's schema rules.

The rules below restate what neutone_sdk 1.5.2 enforces with its JSON schema for realtime (FX)
models (docs/contracts.md §2), plus the limits its documentation states but the schema does not
really check (tag length, at most 3 links, contiguous knobs): the plugin and the website rely
on those, so an export that breaks them is refused here, before anything is written.

Pure Python: no torch import, so a metadata dict can be checked anywhere.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from tildekit.errors import TildekitError
from tildekit.models.contract.card import ModelCard

# The SDK release whose host contract we implement (written into every file we export).
NEUTONE_SDK_VERSION = "1.5.2"
METADATA_FILE_NAME = "metadata.json"
MAX_KNOBS = 4
MODEL_TYPES = ("mono-mono", "mono-stereo", "stereo-mono", "stereo-stereo")

MAX_NAME_CHARS = 30
MAX_AUTHORS = 5
MAX_SHORT_DESCRIPTION_CHARS = 150
MAX_LONG_DESCRIPTION_CHARS = 500
MAX_TECHNICAL_DESCRIPTION_CHARS = 500
MAX_CITATION_CHARS = 300
MAX_TAGS = 7
MAX_TAG_CHARS = 15
MAX_LINKS = 3
MAX_SAMPLE_SOUNDS = 3
MAX_REALTIME_SAMPLE_RATE = 96000

REQUIRED_KEYS = (
    "model_name", "model_authors", "model_version", "model_short_description",
    "model_long_description", "technical_description", "technical_links", "tags", "citation",
    "is_experimental", "sample_sound_files", "neutone_parameters", "wet_default_value",
    "dry_default_value", "input_gain_default_value", "output_gain_default_value",
    "native_sample_rates", "native_buffer_sizes", "sdk_version", "pytorch_version",
    "date_created",
)
REALTIME_REQUIRED_KEYS = ("is_input_mono", "is_output_mono", "model_type", "look_behind_samples")
KNOB_REQUIRED_KEYS = ("name", "description", "default_value", "used", "type")
GAIN_KEYS = ("wet_default_value", "dry_default_value", "input_gain_default_value",
             "output_gain_default_value")


class NeutoneMetadataError(TildekitError):
    """Neutone metadata breaks a rule of the SDK's schema; the message names the field."""


@dataclass(frozen=True)
class Knob:
    """One continuous Neutone knob. The plugin shows ``default`` in [min_value, max_value]."""

    name: str
    description: str
    default: float
    min_value: float = 0.0
    max_value: float = 1.0

    @property
    def default_0to1(self) -> float:
        return (self.default - self.min_value) / (self.max_value - self.min_value)

    def to_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "default_value": float(self.default), "used": True, "type": "continuous",
                "min_value": float(self.min_value), "max_value": float(self.max_value)}


@dataclass(frozen=True)
class NeutoneInfo:
    """What the Neutone listing shows about a model that the ModelCard does not hold."""

    authors: tuple[str, ...] = ("tildekit",)
    version: str = "1.0.0"
    short_description: str = ""
    long_description: str = ""
    technical_description: str = ""
    citation: str = ""
    tags: tuple[str, ...] = ("rave", "timbre", "tildekit")
    technical_links: tuple[tuple[str, str], ...] = ()  # empty: the SDK HEADs every link on load
    is_experimental: bool = True
    wet_default: float = 1.0
    dry_default: float = 0.0
    input_gain_default: float = 0.5  # [0, 1] maps to -30..+30 dB: 0.5 is 0 dB
    output_gain_default: float = 0.5


def model_type(is_input_mono: bool, is_output_mono: bool) -> str:
    return f"{'mono' if is_input_mono else 'stereo'}-{'mono' if is_output_mono else 'stereo'}"


def build_metadata(card: ModelCard, knobs: list[Knob], info: NeutoneInfo, *,
                   native_sample_rates: list[int], native_buffer_sizes: list[int],
                   pytorch_version: str, date_created: float | None = None) -> dict[str, Any]:
    """The metadata dict ``to_metadata()`` returns (no ``sample_sound_files``: see `with_sounds`)."""
    mono = card.channels == 1
    technical = info.technical_description or (
        f"RAVE-style streaming autoencoder trained with tildekit (profile {card.profile or '?'}, "
        f"{card.sample_rate} Hz, {card.channels} ch, latent {card.latent_size}, "
        f"compression {card.compression}, delay {card.delay} samples).")
    short = info.short_description or f"{card.name}: neural timbre transfer ({card.sample_rate} Hz)."
    knob_meta = {f"p{i + 1}": knob.to_metadata() for i, knob in enumerate(knobs)}
    return {
        "model_name": card.name,
        "model_authors": list(info.authors),
        "model_version": info.version,
        "model_short_description": short,
        "model_long_description": info.long_description or short,
        "technical_description": technical,
        "technical_links": dict(info.technical_links),
        "tags": list(info.tags),
        "citation": info.citation,
        "is_experimental": info.is_experimental,
        "neutone_parameters": knob_meta,
        "wet_default_value": float(info.wet_default),
        "dry_default_value": float(info.dry_default),
        "input_gain_default_value": float(info.input_gain_default),
        "output_gain_default_value": float(info.output_gain_default),
        "is_input_mono": mono,
        "is_output_mono": mono,
        "model_type": model_type(mono, mono),
        "native_sample_rates": list(native_sample_rates),
        "native_buffer_sizes": list(native_buffer_sizes),
        "look_behind_samples": 0,
        "sdk_version": NEUTONE_SDK_VERSION,
        "pytorch_version": pytorch_version,
        "date_created": float(time.time() if date_created is None else date_created),
    }


def with_sounds(metadata: Mapping[str, Any], sample_sound_files: list[dict[str, str]] | None = None
                ) -> dict[str, Any]:
    """The embedded ``metadata.json`` content: ``to_metadata()`` plus the sample sounds."""
    return {**metadata, "sample_sound_files": list(sample_sound_files or [])}


# ---------------------------------------------------------------------------------------------
# Validation


def validate_metadata(meta: Any, realtime: bool = True) -> None:
    """Raise NeutoneMetadataError naming the first field that breaks the SDK's rules."""
    if not isinstance(meta, Mapping):
        raise NeutoneMetadataError(f"Neutone metadata must be a JSON object, got {type(meta).__name__}")
    required = REQUIRED_KEYS + (REALTIME_REQUIRED_KEYS if realtime else ())
    missing = [k for k in required if k not in meta]
    if missing:
        raise NeutoneMetadataError(f"Neutone metadata is missing required field(s): {', '.join(missing)}")

    _text(meta, "model_name", MAX_NAME_CHARS)
    _string_list(meta, "model_authors", MAX_AUTHORS, None)
    _text(meta, "model_version", None)
    _text(meta, "model_short_description", MAX_SHORT_DESCRIPTION_CHARS)
    _text(meta, "model_long_description", MAX_LONG_DESCRIPTION_CHARS)
    _text(meta, "technical_description", MAX_TECHNICAL_DESCRIPTION_CHARS)
    _text(meta, "citation", MAX_CITATION_CHARS)
    _links(meta["technical_links"])
    _string_list(meta, "tags", MAX_TAGS, MAX_TAG_CHARS)
    _bool(meta, "is_experimental")
    _sample_sounds(meta["sample_sound_files"])
    _knobs(meta["neutone_parameters"])
    for key in GAIN_KEYS:
        value = _number(meta, key)
        if not 0.0 <= value <= 1.0:
            _fail(key, f"must be in [0, 1], got {value}")
    max_rate = MAX_REALTIME_SAMPLE_RATE if realtime else 384000
    _int_list(meta, "native_sample_rates", 0, max_rate)
    _int_list(meta, "native_buffer_sizes", 1, None)
    _text(meta, "sdk_version", None)
    _text(meta, "pytorch_version", None)
    _number(meta, "date_created")
    for key in ("model_id",):
        if key in meta:
            _text(meta, key, None)
    if "file_size" in meta and not _is_int(meta["file_size"]):
        _fail("file_size", f"must be an integer, got {meta['file_size']!r}")
    if realtime:
        _realtime_fields(meta)


def _fail(field: str, why: str) -> None:
    raise NeutoneMetadataError(f"Neutone metadata field {field!r} {why}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON schema: true is no integer


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _text(meta: Mapping[str, Any], key: str, max_chars: int | None) -> str:
    value = meta[key]
    if not isinstance(value, str):
        _fail(key, f"must be a string, got {type(value).__name__} {value!r}")
    if max_chars is not None and len(value) > max_chars:
        _fail(key, f"is {len(value)} characters long; the limit is {max_chars}: shorten it")
    return value


def _bool(meta: Mapping[str, Any], key: str) -> bool:
    value = meta[key]
    if not isinstance(value, bool):
        _fail(key, f"must be true or false, got {value!r}")
    return value


def _number(meta: Mapping[str, Any], key: str) -> float:
    value = meta[key]
    if not _is_number(value):
        _fail(key, f"must be a finite number, got {value!r}")
    return float(value)


def _string_list(meta: Mapping[str, Any], key: str, max_items: int, max_chars: int | None) -> None:
    value = meta[key]
    if not isinstance(value, list):
        _fail(key, f"must be a list of strings, got {type(value).__name__}")
    if len(value) > max_items:
        _fail(key, f"has {len(value)} entries; the limit is {max_items}")
    for item in value:
        if not isinstance(item, str):
            _fail(key, f"must hold strings only, got {item!r}")
        if max_chars is not None and len(item) > max_chars:
            _fail(key, f"entry {item!r} is {len(item)} characters long; the limit is {max_chars}")
    if len(set(value)) != len(value):
        _fail(key, f"entries must be unique, got {value}")


def _int_list(meta: Mapping[str, Any], key: str, minimum: int, maximum: int | None) -> None:
    value = meta[key]
    if not isinstance(value, list):
        _fail(key, f"must be a list of integers, got {type(value).__name__}")
    for item in value:
        if not _is_int(item):
            _fail(key, f"must hold integers only, got {item!r}")
        if item < minimum or (maximum is not None and item > maximum):
            upper = "" if maximum is None else f"..{maximum}"
            _fail(key, f"entry {item} is outside {minimum}{upper}")
    if len(set(value)) != len(value):
        _fail(key, f"entries must be unique, got {value}")


def _links(links: Any) -> None:
    if not isinstance(links, Mapping):
        _fail("technical_links", f"must be an object of name -> URL, got {type(links).__name__}")
    if len(links) > MAX_LINKS:
        _fail("technical_links", f"has {len(links)} links; the limit is {MAX_LINKS}")
    for name, url in links.items():
        if not isinstance(url, str):
            _fail("technical_links", f"entry {name!r} must be a URL string, got {url!r}")
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            _fail("technical_links", f"entry {name!r} is not an http(s) URL: {url!r}")


def _sample_sounds(sounds: Any) -> None:
    key = "sample_sound_files"
    if not isinstance(sounds, list):
        _fail(key, f"must be a list of {{'in': b64, 'out': b64}} objects, got {type(sounds).__name__}")
    if len(sounds) > MAX_SAMPLE_SOUNDS:
        _fail(key, f"has {len(sounds)} entries; the limit is {MAX_SAMPLE_SOUNDS}")
    for i, pair in enumerate(sounds):
        if not isinstance(pair, Mapping) or not {"in", "out"} <= set(pair):
            _fail(key, f"entry {i} must be an object with 'in' and 'out'")
        for side in ("in", "out"):
            if not isinstance(pair[side], str):
                _fail(key, f"entry {i} '{side}' must be a base64 string")
            try:
                base64.b64decode(pair[side], validate=True)
            except (binascii.Error, ValueError):
                _fail(key, f"entry {i} '{side}' is not valid base64")


def _knobs(knobs: Any) -> None:
    key = "neutone_parameters"
    if not isinstance(knobs, Mapping):
        _fail(key, f"must be an object with keys p1..p{MAX_KNOBS}, got {type(knobs).__name__}")
    allowed = [f"p{i + 1}" for i in range(MAX_KNOBS)]
    unknown = [k for k in knobs if k not in allowed]
    if unknown:
        _fail(key, f"has unknown key(s) {unknown}: FX models take at most {MAX_KNOBS} knobs p1..p{MAX_KNOBS}")
    if not knobs:
        _fail(key, "must hold at least p1")
    expected = allowed[:len(knobs)]
    if sorted(knobs) != expected:
        _fail(key, f"keys must be contiguous from p1 ({', '.join(expected)}), got {sorted(knobs)}")
    names: list[str] = []
    for slot in expected:
        knob = knobs[slot]
        where = f"{key}.{slot}"
        if not isinstance(knob, Mapping):
            _fail(where, "must be an object")
        missing = [k for k in KNOB_REQUIRED_KEYS if k not in knob]
        if missing:
            _fail(where, f"is missing {', '.join(missing)}")
        for text_key in ("name", "description"):
            if not isinstance(knob[text_key], str):
                _fail(f"{where}.{text_key}", f"must be a string, got {knob[text_key]!r}")
        if not isinstance(knob["used"], bool):
            _fail(f"{where}.used", f"must be true or false, got {knob['used']!r}")
        if knob["type"] != "continuous":
            _fail(f"{where}.type", f"must be 'continuous' (FX models take continuous knobs only), "
                                   f"got {knob['type']!r}")
        low = knob.get("min_value", 0.0)
        high = knob.get("max_value", 1.0)
        default = knob["default_value"]
        for bound_key, bound in (("min_value", low), ("max_value", high), ("default_value", default)):
            if not _is_number(bound):
                _fail(f"{where}.{bound_key}", f"must be a number, got {bound!r}")
        if not low < high:
            _fail(where, f"min_value {low} must be below max_value {high}")
        if not low <= default <= high:
            _fail(f"{where}.default_value", f"{default} is outside [{low}, {high}]")
        if knob["used"]:
            names.append(knob["name"])
    if len(set(names)) != len(names):
        _fail(key, f"knob names must be unique, got {names}")


def _realtime_fields(meta: Mapping[str, Any]) -> None:
    mono_in = _bool(meta, "is_input_mono")
    mono_out = _bool(meta, "is_output_mono")
    kind = meta["model_type"]
    if kind not in MODEL_TYPES:
        _fail("model_type", f"must be one of {', '.join(MODEL_TYPES)}, got {kind!r}")
    if kind != model_type(mono_in, mono_out):
        _fail("model_type", f"is {kind!r} but is_input_mono={mono_in}, is_output_mono={mono_out} "
                            f"mean {model_type(mono_in, mono_out)!r}")
    look_behind = meta["look_behind_samples"]
    if not _is_int(look_behind) or look_behind < 0:
        _fail("look_behind_samples", f"must be an integer >= 0, got {look_behind!r}")

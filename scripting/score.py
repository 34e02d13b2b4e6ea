"""Scores: a YAML list of timed moves, compiled to checked OSC messages and played on time.

    model: model.ts          # or latent_size: 8 (and name:, attributes:) to check without a model
    rate_hz: 50              # update rate of ramps, LFOs and interpolations
    events:
      - {at: 0, set: latent/0, value: 0.5}
      - {at: 1, ramp: latent/1, from: 0, to: 2, over: 2.0, curve: linear}
      - {at: 0, lfo: latent/2, shape: sine, rate_hz: 0.5, depth: 1, center: 0, over: 4}
      - {at: 3, attr: temperature, values: [0.5]}
      - {at: 4, gain: 0.8}
      - {at: 5, reset: true}
      - {at: 6, interpolate: {from: a.wav, to: b.wav, over: 4, curve: equal-power}}

Loading parses every event into a typed record, and compiling checks every message against
the model's OscMap, so a typo fails before the first message is sent, with the event number
(counted from 1) and the field at fault.

A score is untrusted input: its size, number of events, duration, update and LFO rates and the
number of values it compiles to are bounded (``MAX_*`` here and in ``schedule``), each with a
one-line error past the bound, and numbers written ``1e9`` (a string to YAML 1.1) read as numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tildekit.errors import TildekitError
from tildekit.models.contract.audio import read_sound as read_sound_file
from tildekit.models.contract.card import AttributeSpec, ModelCard
from tildekit.models.contract.oscmap import OscMap, OscValueError, UnknownAddressError
from tildekit.scripting.controller import Controller, full_address, read_model_card
from tildekit.scripting.interpolate import INTERPOLATION_CURVES, encode_audio, interpolation_messages
from tildekit.scripting.schedule import (
    CURVES,
    DEFAULT_RATE_HZ,
    LFO_SHAPES,
    MAX_LFO_HZ,
    MAX_RATE_HZ,
    MAX_SECONDS,
    PlayReport,
    Scheduler,
    TimedMessage,
    lfo_values,
    merge,
    ramp_values,
    timed,
    update_count,
)

MAX_SCORE_BYTES = 4 << 20  # a YAML score larger than this is not hand-written
MAX_EVENTS = 10_000
MAX_LIST = 4096  # numbers in one 'from'/'to'/'values' list (a latent vector)
# Numbers in all the messages a score compiles to (each message counts at least 1): ~100 MB at most.
MAX_SCORE_VALUES = 2_000_000
MAX_SOUND_SECONDS = 600.0  # each sound of an interpolation is encoded whole
MAX_ATTRIBUTES = 256  # declared attributes of a score without a model
MAX_LATENT_SIZE = 4096


class ScoreError(TildekitError):
    """A score that cannot be played, with where and why."""


# -- typed events --------------------------------------------------------------------------

@dataclass(frozen=True)
class SetEvent:
    at: float
    address: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class RampEvent:
    at: float
    address: str
    start: tuple[float, ...]
    end: tuple[float, ...]
    over: float
    curve: str = "linear"
    update_hz: float | None = None


@dataclass(frozen=True)
class LfoEvent:
    at: float
    address: str
    shape: str
    rate_hz: float
    over: float
    depth: float = 1.0
    center: float = 0.0
    phase: float = 0.0
    seed: int = 0
    update_hz: float | None = None


@dataclass(frozen=True)
class AttrEvent:
    at: float
    name: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class GainEvent:
    at: float
    gain: float


@dataclass(frozen=True)
class ResetEvent:
    at: float


@dataclass(frozen=True)
class InterpolateEvent:
    at: float
    source: Path  # sound A
    target: Path  # sound B
    over: float
    curve: str = "linear"
    update_hz: float | None = None


Event = SetEvent | RampEvent | LfoEvent | AttrEvent | GainEvent | ResetEvent | InterpolateEvent

ACTIONS = ("set", "ramp", "lfo", "attr", "gain", "reset", "interpolate")
# Fields each action accepts besides `at` and the action key itself.
ACTION_FIELDS: dict[str, set[str]] = {
    "set": {"value", "values"},
    "ramp": {"from", "to", "over", "curve", "update_hz"},
    "lfo": {"shape", "rate_hz", "depth", "center", "over", "phase", "seed", "update_hz"},
    "attr": {"value", "values"},
    "gain": set(),
    "reset": set(),
    "interpolate": set(),
}
INTERPOLATE_FIELDS = {"from", "to", "over", "curve", "update_hz"}
TOP_LEVEL_FIELDS = {"model", "name", "latent_size", "attributes", "rate_hz", "events"}


@dataclass
class Score:
    events: list[Event]
    card: ModelCard
    name: str | None = None  # OSC model name, if it differs from the card's
    rate_hz: float = DEFAULT_RATE_HZ
    model_path: Path | None = None
    source: str = "score"
    # for error messages: the event number (from 1) of each entry of `events`
    numbers: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.numbers:
            self.numbers = list(range(1, len(self.events) + 1))

    @property
    def osc_map(self) -> OscMap:
        return OscMap(self.card, self.name)

    @property
    def duration(self) -> float:
        ends = [e.at + getattr(e, "over", 0.0) for e in self.events]
        return max(ends, default=0.0)


# -- parsing ---------------------------------------------------------------------------

def _seconds(value: Any) -> str:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"{value:g}s" if ok else "?s"


class _Where:
    """Builds error messages that say which event and field are wrong."""

    def __init__(self, source: str, number: int, event: dict[str, Any] | None = None) -> None:
        self.source, self.number, self.event = source, number, event or {}

    def error(self, fieldname: str, reason: str) -> ScoreError:
        action = next((a for a in ACTIONS if a in self.event), "?")
        return ScoreError(f"{self.source}: event {self.number} ({action} at {_seconds(self.event.get('at'))}), "
                          f"field '{fieldname}': {reason}")


def _finite(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def _number(where: _Where, name: str, value: Any, positive: bool = False, minimum: float | None = None,
            maximum: float | None = None) -> float:
    if not _finite(value):
        raise where.error(name, f"expected a finite number, got {_short(value)}")
    if positive and value <= 0:
        raise where.error(name, f"must be > 0, got {value}")
    if minimum is not None and value < minimum:
        raise where.error(name, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise where.error(name, f"must be <= {maximum:g}, got {value:g}")
    return float(value)


def _numbers(where: _Where, name: str, value: Any) -> tuple[float, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise where.error(name, "expected a number or a list of numbers, got an empty list")
    if len(items) > MAX_LIST:
        raise where.error(name, f"{len(items)} numbers, more than {MAX_LIST}")
    return tuple(_number(where, name, v) for v in items)


def _short(value: Any) -> str:
    import reprlib

    return reprlib.repr(value)


def _string(where: _Where, name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(name, f"expected a name, got {_short(value)}")
    return value.strip()


def _choice(where: _Where, name: str, value: Any, choices: Any) -> str:
    if not isinstance(value, str) or value not in choices:
        raise where.error(name, f"{_short(value)} is not one of {', '.join(choices)}")
    return value


def _values(where: _Where, raw: dict[str, Any]) -> tuple[Any, ...]:
    if "value" in raw and "values" in raw:
        raise where.error("values", "give either 'value' or 'values', not both")
    for name in ("values", "value"):
        if name in raw:
            value = raw[name]
            values = tuple(value) if isinstance(value, list) else (value,)
            if len(values) > MAX_LIST:
                raise where.error(name, f"{len(values)} values, more than {MAX_LIST}")
            return values
    raise where.error("value", "missing (give value: X or values: [X, Y, ...])")


def _optional_rate(where: _Where, raw: dict[str, Any], name: str = "update_hz") -> float | None:
    return _number(where, name, raw[name], positive=True, maximum=MAX_RATE_HZ) if name in raw else None


def _seconds_field(where: _Where, name: str, value: Any, at: float) -> float:
    """A positive duration that, started at ``at``, ends within ``MAX_SECONDS``."""
    seconds = _number(where, name, value, positive=True, maximum=MAX_SECONDS)
    if at + seconds > MAX_SECONDS:
        raise where.error(name, f"ends at {at + seconds:g} s, after the {MAX_SECONDS:g} s a score may last")
    return seconds


def parse_event(raw: Any, where: _Where, base_dir: Path) -> Event:
    if not isinstance(raw, dict):
        raise where.error("-", f"an event is a mapping like {{at: 0, set: latent/0, value: 0.5}}, "
                          f"got {_short(raw)}")
    actions = [a for a in ACTIONS if a in raw]
    if len(actions) != 1:
        found = ", ".join(actions) or "none"
        raise where.error("-", f"needs exactly one action of {', '.join(ACTIONS)} (found: {found})")
    action = actions[0]
    unknown = set(raw) - {"at", action} - ACTION_FIELDS[action]
    if unknown:
        raise where.error(sorted(unknown)[0], f"unknown field for a {action} event "
                          f"(allowed: at, {action}, {', '.join(sorted(ACTION_FIELDS[action])) or '-'})")
    if "at" not in raw:
        raise where.error("at", "missing start time in seconds")
    at = _number(where, "at", raw["at"], minimum=0.0, maximum=MAX_SECONDS)
    body = raw[action]

    if action == "set":
        return SetEvent(at, _string(where, "set", body), _values(where, raw))
    if action == "attr":
        return AttrEvent(at, _string(where, "attr", body), _values(where, raw))
    if action == "gain":
        return GainEvent(at, _number(where, "gain", body))
    if action == "reset":
        if body is not True:
            raise where.error("reset", f"write 'reset: true', got {body!r}")
        return ResetEvent(at)
    if action == "ramp":
        for name in ("from", "to", "over"):
            if name not in raw:
                raise where.error(name, "missing")
        start, end = _numbers(where, "from", raw["from"]), _numbers(where, "to", raw["to"])
        if len(start) != len(end):
            raise where.error("to", f"has {len(end)} values but 'from' has {len(start)}")
        return RampEvent(at, _string(where, "ramp", body), start, end,
                         _seconds_field(where, "over", raw["over"], at),
                         _choice(where, "curve", raw.get("curve", "linear"), CURVES),
                         _optional_rate(where, raw))
    if action == "lfo":
        for name in ("rate_hz", "over"):
            if name not in raw:
                raise where.error(name, "missing")
        seed = raw.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
            raise where.error("seed", f"expected a whole number >= 0, got {_short(seed)}")
        return LfoEvent(at, _string(where, "lfo", body),
                        _choice(where, "shape", raw.get("shape", "sine"), LFO_SHAPES),
                        _number(where, "rate_hz", raw["rate_hz"], positive=True, maximum=MAX_LFO_HZ),
                        _seconds_field(where, "over", raw["over"], at),
                        _number(where, "depth", raw.get("depth", 1.0)),
                        _number(where, "center", raw.get("center", 0.0)),
                        _number(where, "phase", raw.get("phase", 0.0)), seed, _optional_rate(where, raw))
    # interpolate
    if not isinstance(body, dict):
        raise where.error("interpolate", "expected a mapping {from: a.wav, to: b.wav, over: SECONDS}")
    unknown = set(body) - INTERPOLATE_FIELDS
    if unknown:
        raise where.error(f"interpolate.{sorted(unknown)[0]}",
                          f"unknown field (allowed: {', '.join(sorted(INTERPOLATE_FIELDS))})")
    paths = []
    for name in ("from", "to"):
        if name not in body:
            raise where.error(f"interpolate.{name}", "missing (path of a sound file)")
        path = base_dir / _string(where, f"interpolate.{name}", body[name])
        if not path.is_file():
            raise where.error(f"interpolate.{name}", f"sound file {path} not found")
        paths.append(path)
    if "over" not in body:
        raise where.error("interpolate.over", "missing (seconds)")
    return InterpolateEvent(at, paths[0], paths[1],
                            _seconds_field(where, "interpolate.over", body["over"], at),
                            _choice(where, "interpolate.curve", body.get("curve", "linear"),
                                    INTERPOLATION_CURVES),
                            _optional_rate(where, body))


def synthetic_card(source: str, name: Any, latent_size: Any, attributes: Any) -> ModelCard:
    """A card with just the shape OSC needs, for checking a score without a model file.

    ``attributes`` maps an attribute name to its type(s): ``{temperature: float}`` or
    ``{temperature: {types: [float], min: 0, max: 10}}``.
    """
    if isinstance(latent_size, bool) or not isinstance(latent_size, int) or not 1 <= latent_size <= MAX_LATENT_SIZE:
        raise ScoreError(f"{source}: 'latent_size' must be a positive integer up to {MAX_LATENT_SIZE}, "
                         f"got {_short(latent_size)}")
    if attributes is not None and not isinstance(attributes, dict):
        raise ScoreError(f"{source}: 'attributes' must map names to types, like {{temperature: float}}")
    if attributes is not None and len(attributes) > MAX_ATTRIBUTES:
        raise ScoreError(f"{source}: {len(attributes)} attributes, more than {MAX_ATTRIBUTES}")
    specs = []
    for attr_name, spec in (attributes or {}).items():
        if isinstance(spec, str):
            spec = {"types": [spec]}
        if not isinstance(spec, dict):
            raise ScoreError(f"{source}: attributes.{attr_name}: give a type (float) or "
                             f"{{types: [float], min: 0, max: 1}}")
        types = spec.get("types", ["float"])
        types = types if isinstance(types, list) else [types]
        bad = [t for t in types if t not in ("bool", "int", "float", "str")]
        if bad:
            raise ScoreError(f"{source}: attributes.{attr_name}: unknown type {bad[0]!r} "
                             f"(bool, int, float or str)")
        if not types or len(types) > MAX_LIST:
            raise ScoreError(f"{source}: attributes.{attr_name}: give 1 to {MAX_LIST} types")
        bounds: list[float | None] = []
        for key in ("min", "max"):
            bound = spec.get(key)
            if bound is not None and not _finite(bound):
                raise ScoreError(f"{source}: attributes.{attr_name}.{key}: expected a finite number, "
                                 f"got {_short(bound)}")
            bounds.append(None if bound is None else float(bound))
        defaults = {"bool": False, "int": 0, "float": 0.0, "str": ""}
        specs.append(AttributeSpec(str(attr_name), types, [defaults[t] for t in types], minimum=bounds[0],
                                   maximum=bounds[1]))
    return ModelCard(name=str(name or "model"), sample_rate=48000, channels=1, compression=2048,
                     latent_size=latent_size, methods={}, attributes=specs, delay=0)


def parse_score(data: Any, source: str = "score", base_dir: Path | str = ".",
                model: Path | str | None = None, card: ModelCard | None = None) -> Score:
    """A ``Score`` from loaded YAML (a mapping with ``events:``, or a bare list of events).

    The card comes from ``card``, else ``model`` (a path overriding the score's ``model:``),
    else the score's ``model:``, else its ``latent_size:``.
    """
    base_dir = Path(base_dir)
    if isinstance(data, list):
        data = {"events": data}
    if not isinstance(data, dict):
        raise ScoreError(f"{source}: a score is a mapping with 'events:' (or a list of events)")
    unknown = set(data) - TOP_LEVEL_FIELDS
    if unknown:
        raise ScoreError(f"{source}: unknown top-level field {sorted(unknown)[0]!r} "
                         f"(allowed: {', '.join(sorted(TOP_LEVEL_FIELDS))})")
    raw_events = data.get("events")
    if not isinstance(raw_events, list) or not raw_events:
        raise ScoreError(f"{source}: 'events:' must be a non-empty list of events")
    if len(raw_events) > MAX_EVENTS:
        raise ScoreError(f"{source}: {len(raw_events):,} events, more than {MAX_EVENTS:,}: split the score")
    rate = data.get("rate_hz", DEFAULT_RATE_HZ)
    if not _finite(rate) or not 0 < rate <= MAX_RATE_HZ:
        raise ScoreError(f"{source}: 'rate_hz' must be a number in (0, {MAX_RATE_HZ:g}], got {_short(rate)}")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise ScoreError(f"{source}: 'name' must be a string, got {_short(name)}")

    model_path: Path | None = None
    if model is not None:
        model_path = Path(model)
    elif data.get("model") is not None:
        model_path = base_dir / str(data["model"])
    if card is None:
        if model_path is not None:
            card = read_model_card(model_path)
        elif "latent_size" in data:
            card = synthetic_card(source, name, data["latent_size"], data.get("attributes"))
        else:
            raise ScoreError(f"{source}: say which model the score drives: 'model: PATH' "
                             f"(an exported model) or 'latent_size: N' to check it without one")

    events, numbers = [], []
    for number, raw in enumerate(raw_events, start=1):
        where = _Where(source, number, raw if isinstance(raw, dict) else None)
        events.append(parse_event(raw, where, base_dir))
        numbers.append(number)
    return Score(events, card, name, float(rate), model_path, source, numbers)


def _score_loader() -> type:
    """PyYAML's safe loader, reading ``1e9`` and ``-2.5E-3`` as floats (YAML 1.2) instead of strings."""
    import re

    import yaml

    class ScoreLoader(yaml.SafeLoader):
        pass

    # add_implicit_resolver copies the inherited table first: yaml.SafeLoader is left as it was.
    ScoreLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."))
    return ScoreLoader


def load_score(path: Path | str, model: Path | str | None = None, card: ModelCard | None = None) -> Score:
    import yaml

    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SCORE_BYTES + 1)
    except OSError as exc:
        raise ScoreError(f"cannot read score {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_SCORE_BYTES:
        raise ScoreError(f"{path}: larger than {MAX_SCORE_BYTES >> 20} MB: not a score")
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_score_loader())  # a safe loader
    except UnicodeDecodeError:
        raise ScoreError(f"{path}: not UTF-8 text") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise ScoreError(f"{path}: not valid YAML: {' '.join(str(exc).split())[:300]}") from None
    return parse_score(data, path.name, path.parent, model, card)


# -- compiling -----------------------------------------------------------------------------

ModelLoader = Callable[[Path], Any]


def _load_torchscript(path: Path) -> Any:
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:  # torch raises several types for a bad file
        raise ScoreError(f"cannot load model {path} for interpolation: {exc}") from None


def read_sound(path: Path, card: ModelCard) -> np.ndarray:
    """A sound file as ``(card.channels, samples)`` at the card's sample rate (models/contract/audio.py)."""
    import soundfile

    try:
        info = soundfile.info(str(path))
        if info.samplerate <= 0 or info.frames / info.samplerate > MAX_SOUND_SECONDS:
            raise ScoreError(f"sound file {path} lasts {info.frames / max(info.samplerate, 1):g} s: "
                             f"an interpolation encodes at most {MAX_SOUND_SECONDS:g} s of each sound")
        audio, _ = read_sound_file(path, card.channels, card.sample_rate)
    except ScoreError:
        raise
    except Exception as exc:  # soundfile.LibsndfileError and friends
        raise ScoreError(f"cannot read sound file {path}: {exc}") from None
    return audio


def _event_messages(event: Event, osc_map: OscMap, rate: float, model: Callable[[], Any]) -> list[TimedMessage]:
    at = event.at
    if isinstance(event, SetEvent):
        return [TimedMessage(at, full_address(osc_map, event.address), event.values)]
    if isinstance(event, AttrEvent):
        return [TimedMessage(at, osc_map.attr(event.name), event.values)]
    if isinstance(event, GainEvent):
        return [TimedMessage(at, osc_map.gain, (event.gain,))]
    if isinstance(event, ResetEvent):
        return [TimedMessage(at, osc_map.reset, ())]
    if isinstance(event, RampEvent):
        times, values = ramp_values(event.start if len(event.start) > 1 else event.start[0],
                                    event.end if len(event.end) > 1 else event.end[0],
                                    event.over, event.update_hz or rate, event.curve)
        return timed(full_address(osc_map, event.address), times, values, at)
    if isinstance(event, LfoEvent):
        times, values = lfo_values(event.shape, event.rate_hz, event.over, event.depth, event.center,
                                   event.update_hz or rate, event.phase, event.seed)
        return timed(full_address(osc_map, event.address), times, values, at)
    loaded = model()
    card = osc_map.card
    za = encode_audio(loaded, read_sound(event.source, card))
    zb = encode_audio(loaded, read_sound(event.target, card))
    return interpolation_messages(osc_map.bias_all, za, zb, event.over, event.update_hz or rate,
                                  card.sample_rate / card.compression, event.curve, offset=at)


_VALUE_FIELDS = {SetEvent: "value", AttrEvent: "values", GainEvent: "gain", ResetEvent: "reset",
                 LfoEvent: "depth/center", InterpolateEvent: "interpolate"}
_ACTION_OF = {SetEvent: "set", RampEvent: "ramp", LfoEvent: "lfo", AttrEvent: "attr", GainEvent: "gain",
              ResetEvent: "reset", InterpolateEvent: "interpolate"}


def _check(score: Score, number: int, event: Event, messages: list[TimedMessage], osc_map: OscMap,
           value_field: str | None = None) -> list[TimedMessage]:
    """The messages with canonical arguments, or a ScoreError naming the event and field."""
    kind = type(event)
    out = []
    for message in messages:
        try:
            control = osc_map.parse(message.address, message.args)
        except OscValueError as exc:
            if isinstance(exc, UnknownAddressError):
                fieldname = _ACTION_OF[kind]
            else:
                fieldname = value_field or _VALUE_FIELDS.get(kind, "from/to")
            raise ScoreError(f"{score.source}: event {number} ({_ACTION_OF[kind]} at {_seconds(event.at)}), "
                             f"field '{fieldname}': {exc}") from None
        out.append(TimedMessage(message.time, message.address, tuple(control.values)))
    return out


def _values_of(score: Score, number: int, event: Event, osc_map: OscMap) -> int:
    """How many numbers ``event`` compiles to, known before any message is made."""
    if isinstance(event, (RampEvent, LfoEvent, InterpolateEvent)):
        try:
            updates = update_count(event.over, event.update_hz or score.rate_hz)
        except TildekitError as exc:
            field = "interpolate.over" if isinstance(event, InterpolateEvent) else "over"
            raise ScoreError(f"{score.source}: event {number} ({_ACTION_OF[type(event)]} at "
                             f"{_seconds(event.at)}), field '{field}': {exc}") from None
        width = len(event.start) if isinstance(event, RampEvent) else \
            osc_map.card.latent_size if isinstance(event, InterpolateEvent) else 1
        return updates * max(width, 1)
    return max(len(getattr(event, "values", ())), 1)


def compile_score(score: Score, load_model: ModelLoader | None = None) -> list[TimedMessage]:
    """Every message of the score, checked against the OscMap, in time order."""
    osc_map = score.osc_map
    cache: dict[str, Any] = {}

    def model() -> Any:
        if score.model_path is None:
            raise ScoreError(f"{score.source}: interpolate events encode sounds with the model: "
                             f"add 'model: PATH' to the score (or pass --model)")
        if "model" not in cache:
            cache["model"] = (load_model or _load_torchscript)(score.model_path)
        return cache["model"]

    # Count first, make messages after: a score past the budget fails before it allocates them.
    budget = MAX_SCORE_VALUES
    for number, event in zip(score.numbers, score.events):
        budget -= _values_of(score, number, event, osc_map)
        if budget < 0:
            raise ScoreError(f"{score.source}: event {number} ({_ACTION_OF[type(event)]} at {_seconds(event.at)}): "
                             f"the score would send more than {MAX_SCORE_VALUES:,} numbers in all: lower "
                             f"rate_hz/update_hz or shorten its ramps, LFOs and interpolations")
    compiled = []
    for number, event in zip(score.numbers, score.events):
        messages = _event_messages(event, osc_map, score.rate_hz, model)
        if isinstance(event, RampEvent):
            # Check the two ends first, so a bad value is blamed on 'from' or 'to'.
            _check(score, number, event, messages[:1], osc_map, "from")
            _check(score, number, event, messages[-1:], osc_map, "to")
        compiled.append(_check(score, number, event, messages, osc_map))
    return merge(*compiled)


def play_score(score: Score, controller: Controller, scheduler: Scheduler | None = None,
               load_model: ModelLoader | None = None) -> PlayReport:
    return controller.play(compile_score(score, load_model), scheduler)


def format_message(message: TimedMessage) -> str:
    args = " ".join(repr(a) if isinstance(a, str) else f"{a:g}" if isinstance(a, float) else str(a)
                    for a in message.args)
    return f"{message.time:9.3f}  {message.address} {args}".rstrip()

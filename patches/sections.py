"""Sections every generated patch shares: the notes at the top, nn~ boxes, the output gain, the
attribute controls with their OSC receiver, the host-rate message, and the few host idioms
(:class:`Idioms`) that differ between Pd and Max.

Each section draws into a :class:`Graph` from a given height and returns the height below it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tildekit.models.contract.nn_host import HOST_RATE_ATTRIBUTE
from tildekit.patches.graph import Graph
from tildekit.patches.spec import NnObject, OscRoute, PatchSpec

LINE = 20  # comment line height


@dataclass(frozen=True)
class Idioms:
    host: str  # "pd" | "max"

    @property
    def arg1(self) -> str:
        return "$1" if self.host == "pd" else "#1"

    @property
    def number_outlets(self) -> int:
        return 1 if self.host == "pd" else 2  # Max flonum has a second (bang) outlet

    def prepend(self, g: Graph, words: str, x: int, y: int) -> tuple[int, int]:
        """(entry, exit) of a chain that outputs ``words`` followed by its input."""
        if self.host == "max":
            node = g.obj(f"prepend {words}", x, y, 2, 1)
            return node, node
        first = g.obj(f"list prepend {words}", x, y, 2, 1)
        trim = g.obj("list trim", x, y + 25, 1, 1)
        g.connect(first, 0, trim)
        return first, trim

    def bool_switch(self, g: Graph, x: int, y: int) -> tuple[int, list[tuple[int, int]], list[tuple[int, int]]]:
        """(entry, true outlets, false outlets): accepts the words true/false or the numbers 1/0."""
        if self.host == "max":
            node = g.obj("sel true false 1 0", x, y, 1, 5)
            return node, [(node, 0), (node, 2)], [(node, 1), (node, 3)]
        words = g.obj("route true false", x, y, 1, 3)
        numbers = g.obj("sel 1 0", x, y + 25, 2, 3)
        g.connect(words, 2, numbers)
        return words, [(words, 0), (numbers, 0)], [(words, 1), (numbers, 1)]


def notes_section(g: Graph, spec: PatchSpec, host: str, kind: str) -> int:
    lines = spec.notes(host, kind)
    for i, line in enumerate(lines):
        g.text(line, 20, 10 + i * LINE)
    return 20 + len(lines) * LINE


def nn_box(g: Graph, obj: NnObject, x: int, y: int) -> int:
    return g.obj(obj.text, x, y, obj.inlets, obj.outlets, signal=True)


def receiving_slider(g: Graph, name: str, x: int, y: int, span: tuple[float, float], label: str) -> int:
    """[r name] -> slider: OSC and the loadbang defaults drive what the user sees."""
    recv = g.obj(f"r {name}", x, y, 0, 1)
    slider = g.slider(x, y + 25, span[0], span[1], label)
    g.connect(recv, 0, slider)
    return slider


def output_section(g: Graph, spec: PatchSpec, source: int, channels: int, y: int) -> int:
    g.text(f"output gain (linear, {spec.gain_range[0]:g}..{spec.gain_range[1]:g}, 1 = unchanged)", 20, y)
    gain = receiving_slider(g, spec.gain_name, 20, y + 20, spec.gain_range, "output")
    dac = g.obj("dac~", 20, y + 110, 2, 0)
    for c in range(channels):
        amp = g.obj("*~ 1", 20 + c * 80, y + 80, 2, 1, signal=True)
        g.connect(source, c, amp, 0)
        g.connect(gain, 0, amp, 1)
        if channels == 1:
            g.connect(amp, 0, dac, 0)
            g.connect(amp, 0, dac, 1)
        elif c < 2:
            g.connect(amp, 0, dac, c)
    return y + 150


def controls_section(g: Graph, spec: PatchSpec, ids: Idioms, targets: list[int], y: int,
              sends: Sequence[tuple[str, float]]) -> int:
    """Attribute messages, reset, defaults on load, Pd buffer fix-up and the OSC receiver."""
    g.text("attributes: click a message or change a number (OSC /attr/... does the same)", 20, y)
    y += 25
    true_msgs: dict[str, int] = {}
    for col, attr in enumerate(spec.attributes):
        x = 20 + col * 180
        g.text(f"{attr.name}: {attr.description}"[:60], x, y)
        recv = g.obj(f"r {attr.receive}", x, y + 25, 0, 1)
        if attr.is_bool:
            on = g.msg(f"set {attr.name} true", x, y + 100)
            off = g.msg(f"set {attr.name} false", x + 100, y + 100)
            entry, trues, falses = ids.bool_switch(g, x, y + 50)
            g.connect(recv, 0, entry)
            for node, outlet in trues:
                g.connect(node, outlet, on)
            for node, outlet in falses:
                g.connect(node, outlet, off)
            sources = [on, off]
            true_msgs[attr.name] = on
        else:
            if attr.is_number:
                box = g.number(x, y + 155, attr.minimum or 0.0, attr.maximum or 0.0, attr.name)
                g.boxes[box].outlets = ids.number_outlets
                g.connect(box, 0, g.obj(f"s {attr.receive}", x, y + 180, 1, 0))
            first, last = ids.prepend(g, f"set {attr.name}", x, y + 80)
            if attr.is_ranged:  # OSC and the loadbang default move the slider, which sets the attribute
                slider = g.slider(x, y + 50, float(attr.minimum or 0.0), float(attr.maximum or 0.0), attr.name)
                g.connect(recv, 0, slider)
                g.connect(slider, 0, first)
                sends = [*sends, (attr.receive, float(attr.default[0]))]
            else:
                g.connect(recv, 0, first)
            sources = [last, g.msg(attr.default_message, x, y + 130)]
        for source in sources:
            for target in targets:
                g.connect(source, 0, target, 0)
    y += 215
    recv = g.obj(f"r {spec.reset_name}", 20, y, 0, 1)
    g.text("reset: clears the model's streaming state", 120, y)
    reset = true_msgs.get("reset")
    if reset is None:  # no reset attribute: reloading the model clears its state
        reset = g.msg("reload", 20, y + 25)
        for target in targets:
            g.connect(reset, 0, target, 0)
    g.connect(recv, 0, reset)
    y += 60
    load = g.obj("loadbang", 20, y, 1, 1)
    defaults = [*sends, (spec.gain_name, 1.0)]
    g.text("defaults on load (click to reset the controls)", 220, y)
    init = g.sends([(name, f"{value:g}") for name, value in defaults], 20, y + 25)
    g.connect(load, 0, init)
    if ids.host == "pd":
        for target in targets:
            obj = _nn_of(g, spec, target)
            if obj is not None and obj.one_in_one_out:
                # docs/contracts.md §1: without it a 1-in/1-out nn~ in Pd keeps 4096-sample buffers
                fix = g.msg(f"bufsize {obj.buffer}", 220, y + 50)
                g.connect(load, 0, fix)
                g.connect(fix, 0, target, 0)
    y += 90
    g.text(f"OSC in: [{spec.osc_abstraction} PORT] (open it to see every address)", 20, y)
    g.obj(f"{spec.osc_abstraction} {spec.osc_port}", 20, y + 25, 0, 0)
    return y + 60


def host_rate_section(g: Graph, spec: PatchSpec, host: str, targets: list[int], y: int) -> None:
    """Tell every nn~ object the host's sample rate, on load and whenever DSP starts.

    nn~ itself never does (docs/contracts.md §1); exports that resample list their host rates in
    the card and take the rate as the attribute ``host_sample_rate``.
    """
    if not spec.card.host_rates:
        return
    rates = ", ".join(f"{h.rate / 1000:g}" for h in spec.card.host_rates)
    g.text(f"sample rate: the model runs at {spec.card.sample_rate / 1000:g} kHz and is resampled "
           f"for a host at {rates} kHz; this tells it the host's rate", 20, y)
    load = g.obj("loadbang", 20, y + 25, 1, 1)
    message = g.msg(f"set {HOST_RATE_ATTRIBUTE} $1", 20, y + 100)
    if host == "pd":
        started = g.obj("r pd-dsp-started", 120, y + 25, 0, 1)
        rate = g.obj("samplerate~", 20, y + 60, 1, 1)
        g.connect(load, 0, rate)
        g.connect(started, 0, rate)
        g.connect(rate, 0, message)
    else:  # dspstate~ reports on a bang and whenever audio starts; outlet 1 is the rate
        state = g.obj("dspstate~", 20, y + 60, 1, 4)
        g.connect(load, 0, state)
        g.connect(state, 1, message)
    for target in targets:
        g.connect(message, 0, target, 0)


def _nn_of(g: Graph, spec: PatchSpec, node: int) -> NnObject | None:
    text = g.boxes[node].text
    return next((o for o in (spec.encode, spec.decode, spec.forward) if o and o.text == text), None)


# -- OSC routing -------------------------------------------------------------------------------

def deliver_route(g: Graph, route: OscRoute, source: int, outlet: int, x: int, y: int) -> None:
    """Arguments of one address to their send names (one each when there are several)."""
    if len(route.targets) > 1:
        unpack = g.obj("unpack " + " ".join("f" * len(route.targets)), x, y, 1, len(route.targets))
        g.connect(source, outlet, unpack)
        for k, name in enumerate(route.targets):
            g.connect(unpack, k, g.obj(f"s {name}", x + k * 10, y + 25 + 25 * (k % 2), 1, 0))
    else:
        g.connect(source, outlet, g.obj(f"s {route.targets[0]}", x, y, 1, 0))


def _is_number(word: str) -> bool:
    """Would Pd read this word as a float?"""
    return re.fullmatch(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", word) is not None


def pd_route_tree(g: Graph, routes: tuple[OscRoute, ...], source: int, y: int) -> None:
    """Pd's oscparse splits an address into symbols (even "0", "1"): route level by level.

    Numeric components are written ``\\0`` so [route] keeps them as symbols (Pd >= 0.51);
    an address that ends at a level takes what that level's [route] rejects.
    """
    trie: dict = {}
    for route in routes:
        node = trie
        for part in route.path:
            node = node.setdefault(part, {})
        node[None] = route
    column = [20]

    def walk(node: dict, src: int, outlet: int, depth: int) -> None:
        children = [k for k in node if k is not None]
        if children:
            words = " ".join("\\" + k if _is_number(k) else k for k in children)
            router = g.obj(f"route {words}", column[0], y + depth * 60, 2, len(children) + 1)
            g.connect(src, outlet, router)
            for k, part in enumerate(children):
                walk(node[part], router, k, depth + 1)
            src, outlet = router, len(children)
        if None in node:
            deliver_route(g, node[None], src, outlet, column[0], y + depth * 60 + 30)
            column[0] += 60

    walk(trie, source, 0, 0)

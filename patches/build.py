"""Turn a :class:`PatchSpec` into host-neutral graphs: timbre transfer, forward, OSC receiver.

The graphs are the same for both hosts except for a few idioms (:class:`Idioms`): how to
prepend words to a message, how to turn a bool into the words true/false, how an abstraction
reads its first argument, and how OSC arrives (Pd splits addresses with ``oscparse``; Max's
``udpreceive`` keeps the whole address as the message selector).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tildekit.models.contract.attributes import LATENT_BIAS, LATENT_SCALE
from tildekit.models.contract.nn_host import HOST_RATE_ATTRIBUTE
from tildekit.models.contract.oscmap import OscMap
from tildekit.patches.graph import Graph
from tildekit.patches.spec import NnObject, OscRoute, PatchSpec

LINE = 20  # comment line height
COLUMN = 140  # width of one latent / attribute column


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


def _audio_in_to_nn(g: Graph, method: NnObject, y: int) -> int:
    """adc~ (stereo) feeding every signal inlet of an nn~ object placed below it."""
    adc = g.obj("adc~", 20, y, 1, 2, signal=True)
    nn_box = _nn(g, method, 20, y + 40)
    for c in range(method.inlets):
        g.connect(adc, c % 2, nn_box, c)
    return nn_box


def transfer_graph(spec: PatchSpec, host: str) -> Graph:
    """adc~ -> nn~ encode -> per-dimension scale and bias -> nn~ decode -> gain -> dac~."""
    assert spec.encode and spec.decode
    ids = Idioms(host)
    g = Graph(f"{spec.stem} timbre transfer")
    y = _notes(g, spec, host, "transfer")
    enc = _audio_in_to_nn(g, spec.encode, y)
    y += 90
    g.text("latent controls: bias (offset, range from the training statistics) and scale (gain)", 20, y)
    dec = _nn(g, spec.decode, 20, y + 240)
    for lat in spec.latents:
        x = 20 + lat.index * COLUMN
        g.text(lat.label, x, y + 25)
        bias = _receiving_slider(g, lat.bias_name, x, y + 50, lat.bias_range, f"bias_{lat.index}")
        scale = _receiving_slider(g, lat.scale_name, x, y + 110, lat.scale_range, f"scale_{lat.index}")
        mul = g.obj("*~ 1", x, y + 170, 2, 1, signal=True)
        add = g.obj("+~ 0", x, y + 200, 2, 1, signal=True)
        if lat.index < spec.encode.outlets:
            g.connect(enc, lat.index, mul, 0)
        g.connect(scale, 0, mul, 1)
        g.connect(mul, 0, add, 0)
        g.connect(bias, 0, add, 1)
        if lat.index < spec.decode.inlets:
            g.connect(add, 0, dec, lat.index)
    y += 290
    y = _output(g, spec, dec, spec.decode.outlets, y)
    sends = [(lat.bias_name, 0) for lat in spec.latents] + [(lat.scale_name, 1) for lat in spec.latents]
    y = _controls(g, spec, ids, [enc, dec], y, sends)
    _host_rate(g, spec, host, [enc, dec], y)
    return g


def forward_graph(spec: PatchSpec, host: str) -> Graph:
    """adc~ -> nn~ forward -> gain -> dac~, with every attribute as messages."""
    assert spec.forward
    ids = Idioms(host)
    g = Graph(f"{spec.stem} forward")
    y = _notes(g, spec, host, "forward")
    fwd = _audio_in_to_nn(g, spec.forward, y)
    y = _output(g, spec, fwd, spec.forward.outlets, y + 90)
    sends: list[tuple[str, float]] = []
    # Per-dimension OSC bias/scale reach the forward method through its latent_* attributes.
    for attr_name, default, pick in ((LATENT_BIAS, 0.0, "bias_name"), (LATENT_SCALE, 1.0, "scale_name")):
        attr = spec.attribute(attr_name)
        if attr is None or len(attr.types) != len(spec.latents) or not spec.latents:
            continue
        g.text(f"per-dimension {attr_name} from OSC /latent/<i> messages", 20, y)
        size = len(spec.latents)
        pack = g.obj("pack " + " ".join("f" * size), 20, y + 70, size, 1)
        for lat in spec.latents:
            name = getattr(lat, pick)
            sends.append((name, default))
            recv = g.obj(f"r {name}", 20 + lat.index * 90, y + 20, 0, 1)
            if lat.index == 0:
                g.connect(recv, 0, pack, 0)
            else:  # store the value, then bang the (hot) left inlet
                trig = g.obj("t b f", 20 + lat.index * 90, y + 45, 1, 2)
                g.connect(recv, 0, trig)
                g.connect(trig, 1, pack, lat.index)
                g.connect(trig, 0, pack, 0)
        first, last = ids.prepend(g, f"set {attr_name}", 20, y + 100)
        g.connect(pack, 0, first)
        g.connect(last, 0, fwd, 0)
        y += 160
    y = _controls(g, spec, ids, [fwd], y, sends)
    _host_rate(g, spec, host, [fwd], y)
    return g


def osc_graph(spec: PatchSpec, host: str) -> Graph:
    """The OSC receiver abstraction: UDP port -> routes -> the control send names."""
    ids = Idioms(host)
    g = Graph(f"{spec.osc_abstraction}: OSC in")
    where = (f"listens on {spec.osc_host} only" if host == "pd"
             else "listens on every network interface (Max cannot choose one)")
    lines = [f"OSC receiver for '{spec.card.name}': the port is this box's argument "
             f"(default {spec.osc_port}), change it live in the number box; it {where}",
             "open only one patch of this model at a time: two receivers cannot share a port"]
    lines += [f"{d.pattern} {d.types}: {d.description}" for d in OscMap(spec.card).documentation()]
    for i, line in enumerate(lines):
        g.text(line, 20, 10 + i * LINE)
    y = 20 + len(lines) * LINE
    load = g.obj("loadbang", 20, y, 1, 1)
    port = g.obj(f"f {ids.arg1}", 20, y + 25, 2, 1)
    box = g.number(20, y + 50, 1, 65535, "port")
    g.boxes[box].outlets = ids.number_outlets
    g.connect(load, 0, port)
    g.connect(port, 0, box)
    y += 80
    if host == "pd":
        # Pd >= 0.51 binds [netreceive] to the address given after the port.
        listen = g.msg(f"listen $1 {spec.osc_host}", 20, y)
        net = g.obj("netreceive -u -b", 20, y + 25, 1, 2)
        parse = g.obj("oscparse", 20, y + 50, 1, 1)
        trim = g.obj("list trim", 20, y + 75, 1, 1)
        g.connect(box, 0, listen)
        g.connect(listen, 0, net)
        g.connect(net, 0, parse)
        g.connect(parse, 0, trim)
        _pd_route_tree(g, spec.routes, trim, y + 105)
    else:
        listen = g.msg("port $1", 20, y)
        net = g.obj(f"udpreceive {spec.osc_port}", 20, y + 25, 1, 1)
        g.connect(box, 0, listen)
        g.connect(listen, 0, net)
        router = g.obj("route " + " ".join(r.address for r in spec.routes), 20, y + 55,
                       2, len(spec.routes) + 1)
        g.connect(net, 0, router)
        for k, route in enumerate(spec.routes):
            _deliver(g, route, router, k, 20 + (k % 8) * 170, y + 90 + (k // 8) * 60)
    return g


# -- sections shared by the patches ----------------------------------------------------------

def _notes(g: Graph, spec: PatchSpec, host: str, kind: str) -> int:
    lines = spec.notes(host, kind)
    for i, line in enumerate(lines):
        g.text(line, 20, 10 + i * LINE)
    return 20 + len(lines) * LINE


def _nn(g: Graph, obj: NnObject, x: int, y: int) -> int:
    return g.obj(obj.text, x, y, obj.inlets, obj.outlets, signal=True)


def _receiving_slider(g: Graph, name: str, x: int, y: int, span: tuple[float, float], label: str) -> int:
    """[r name] -> slider: OSC and the loadbang defaults drive what the user sees."""
    recv = g.obj(f"r {name}", x, y, 0, 1)
    slider = g.slider(x, y + 25, span[0], span[1], label)
    g.connect(recv, 0, slider)
    return slider


def _output(g: Graph, spec: PatchSpec, source: int, channels: int, y: int) -> int:
    g.text(f"output gain (linear, {spec.gain_range[0]:g}..{spec.gain_range[1]:g}, 1 = unchanged)", 20, y)
    gain = _receiving_slider(g, spec.gain_name, 20, y + 20, spec.gain_range, "gain")
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


def _controls(g: Graph, spec: PatchSpec, ids: Idioms, targets: list[int], y: int,
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


def _host_rate(g: Graph, spec: PatchSpec, host: str, targets: list[int], y: int) -> None:
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

def _deliver(g: Graph, route: OscRoute, source: int, outlet: int, x: int, y: int) -> None:
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


def _pd_route_tree(g: Graph, routes: tuple[OscRoute, ...], source: int, y: int) -> None:
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
            _deliver(g, node[None], src, outlet, column[0], y + depth * 60 + 30)
            column[0] += 60

    walk(trie, source, 0, 0)

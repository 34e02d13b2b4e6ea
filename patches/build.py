"""Turn a :class:`PatchSpec` into host-neutral graphs: timbre transfer, forward, OSC receiver.

The graphs are the same for both hosts except for a few idioms (:class:`Idioms`): how to
prepend words to a message, how to turn a bool into the words true/false, how an abstraction
reads its first argument, and how OSC arrives (Pd splits addresses with ``oscparse``; Max's
``udpreceive`` keeps the whole address as the message selector).
"""

from __future__ import annotations

from tildekit.models.contract.attributes import LATENT_BIAS, LATENT_SCALE
from tildekit.models.contract.oscmap import OscMap
from tildekit.patches.graph import Graph
from tildekit.patches.sections import (
    LINE,
    Idioms,
    controls_section,
    deliver_route,
    host_rate_section,
    nn_box,
    notes_section,
    output_section,
    pd_route_tree,
    receiving_slider,
)
from tildekit.patches.spec import NnObject, PatchSpec

COLUMN = 140  # width of one latent / attribute column


def _audio_in_to_nn(g: Graph, method: NnObject, y: int) -> int:
    """adc~ (stereo) feeding every signal inlet of an nn~ object placed below it."""
    adc = g.obj("adc~", 20, y, 1, 2, signal=True)
    box = nn_box(g, method, 20, y + 40)
    for c in range(method.inlets):
        g.connect(adc, c % 2, box, c)
    return box


def transfer_graph(spec: PatchSpec, host: str) -> Graph:
    """adc~ -> nn~ encode -> per-dimension scale and bias -> nn~ decode -> gain -> dac~."""
    assert spec.encode and spec.decode
    ids = Idioms(host)
    g = Graph(f"{spec.stem} timbre transfer")
    y = notes_section(g, spec, host, "transfer")
    enc = _audio_in_to_nn(g, spec.encode, y)
    y += 90
    g.text("latent controls: bias (offset, range from the training statistics) and scale (gain)", 20, y)
    dec = nn_box(g, spec.decode, 20, y + 240)
    for lat in spec.latents:
        x = 20 + lat.index * COLUMN
        g.text(lat.label, x, y + 25)
        bias = receiving_slider(g, lat.bias_name, x, y + 50, lat.bias_range, f"bias_{lat.index}")
        scale = receiving_slider(g, lat.scale_name, x, y + 110, lat.scale_range, f"scale_{lat.index}")
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
    y = output_section(g, spec, dec, spec.decode.outlets, y)
    sends = [(lat.bias_name, 0) for lat in spec.latents] + [(lat.scale_name, 1) for lat in spec.latents]
    y = controls_section(g, spec, ids, [enc, dec], y, sends)
    host_rate_section(g, spec, host, [enc, dec], y)
    return g


def forward_graph(spec: PatchSpec, host: str) -> Graph:
    """adc~ -> nn~ forward -> gain -> dac~, with every attribute as messages."""
    assert spec.forward
    ids = Idioms(host)
    g = Graph(f"{spec.stem} forward")
    y = notes_section(g, spec, host, "forward")
    fwd = _audio_in_to_nn(g, spec.forward, y)
    y = output_section(g, spec, fwd, spec.forward.outlets, y + 90)
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
    y = controls_section(g, spec, ids, [fwd], y, sends)
    host_rate_section(g, spec, host, [fwd], y)
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
        pd_route_tree(g, spec.routes, trim, y + 105)
    else:
        listen = g.msg("port $1", 20, y)
        net = g.obj(f"udpreceive {spec.osc_port}", 20, y + 25, 1, 1)
        g.connect(box, 0, listen)
        g.connect(listen, 0, net)
        router = g.obj("route " + " ".join(r.address for r in spec.routes), 20, y + 55,
                       2, len(spec.routes) + 1)
        g.connect(net, 0, router)
        for k, route in enumerate(spec.routes):
            deliver_route(g, route, router, k, 20 + (k % 8) * 170, y + 90 + (k // 8) * 60)
    return g

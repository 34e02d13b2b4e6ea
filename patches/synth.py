"""The synth patch: MIDI notes play a model's ``synth`` method (the DDSP family) in nn~.

::

    [notein] ─┬─► [poly 1 1] ─► [stripnote] ─► [mtof] ─► [sig~] ─────────────► nn~ synth, inlet 0 (f0 Hz)
    OSC /note ┘         └─ velocity ─► [sel 0] ─► [* k] ─► [+ low] ─► [$1 10( ─► [line~] ─► inlet 1 (loudness dB)
                                           └─ note off ─────────────► [low 150( ─┘

One voice, the newest note wins ([poly 1 1] steals); a note off glides the loudness down to
the bottom of the range and holds the pitch, so the release keeps its note. The velocity rule
(linear in dB over the card's loudness range) is ``models/contract/synth_controls.py``'s; nn~
reads each control inlet once per frame (the method's in_ratio), so ``line~`` keeps the glide
between frames free of steps.
"""

from __future__ import annotations

from tildekit.models.contract.oscmap import OscMap
from tildekit.models.contract.synth_controls import (
    ATTACK_MS,
    MIDI_MAX,
    RELEASE_MS,
    SYNTH_METHOD,
    loudness_range,
    midi_to_hz,
)
from tildekit.patches.graph import Graph
from tildekit.patches.sections import Idioms, controls_section, host_rate_section, nn_box, notes_section, output_section
from tildekit.patches.spec import PatchSpec

REST_PITCH = 60  # f0 before the first note (middle C); silent, the loudness is at its floor
NOTE_BUTTONS = ((60, 100), (64, 80), (67, 110), (72, 60), (60, 0))  # to try it without a keyboard


def _float_word(value: float) -> str:
    """A number Max reads as a float too (``* 1`` would be integer arithmetic there)."""
    word = f"{value:.6g}"
    return word if any(c in word for c in ".en") else word + "."


def synth_graph(spec: PatchSpec, host: str) -> Graph:
    """notein / OSC notes -> f0 and loudness signals -> nn~ synth -> gain -> dac~, with attributes."""
    synth = spec.method(SYNTH_METHOD)
    assert synth is not None and synth.inlets >= 2
    ids = Idioms(host)
    low, high = loudness_range(spec.card.extra)
    ratio = spec.card.methods[SYNTH_METHOD].in_ratio
    g = Graph(f"{spec.stem} synth")
    y = notes_section(g, spec, host, "synth")
    for comment in (f"MIDI notes play the model: pitch -> f0 (Hz), velocity 1..127 -> loudness {low:g}..{high:g} dB "
                 f"(the training data's range); a note off glides to {low:g} dB in {RELEASE_MS:g} ms",
                 f"one voice, the newest note wins; nn~ reads f0 and loudness once every {ratio} samples "
                 f"(one model frame)",
                 f"OSC: {OscMap(spec.card).note} PITCH VELOCITY does what a key does"):
        g.text(comment, 20, y)
        y += 20
    y += 10
    notein = g.obj("notein", 20, y, 1, 3)
    g.text("or click:", 300, y)
    recv = g.obj(f"r {spec.note_name}", 160, y, 0, 1)
    unpack = g.obj("unpack f f", 160, y + 60, 1, 2)
    g.connect(recv, 0, unpack)
    for k, (pitch, velocity) in enumerate(NOTE_BUTTONS):
        g.connect(g.msg(f"{pitch} {velocity}", 300 + k * 60, y + 25), 0, unpack)
    poly = g.obj("poly 1 1", 20, y + 90, 2, 3)
    g.connect(notein, 0, poly, 0)
    g.connect(notein, 1, poly, 1)
    g.connect(unpack, 0, poly, 0)
    g.connect(unpack, 1, poly, 1)

    # pitch: note ons only, so a release keeps sounding its note
    strip = g.obj("stripnote", 20, y + 120, 2, 2)
    g.connect(poly, 1, strip, 0)
    g.connect(poly, 2, strip, 1)
    mtof = g.obj("mtof", 20, y + 150, 1, 1)
    f0 = g.obj("sig~", 20, y + 180, 1, 1, signal=True)
    g.connect(strip, 0, mtof)
    g.connect(mtof, 0, f0)

    # loudness: velocity onto the training range, a note off to its floor, glided
    gate = g.obj("sel 0", 200, y + 120, 2, 2)
    g.connect(poly, 2, gate)
    times = g.obj(f"* {_float_word((high - low) / MIDI_MAX)}", 260, y + 150, 2, 1)
    shift = g.obj(f"+ {_float_word(low)}", 260, y + 180, 2, 1)
    attack = g.msg(f"$1 {_float_word(ATTACK_MS)}", 260, y + 210)
    release = g.msg(f"{_float_word(low)} {_float_word(RELEASE_MS)}", 200, y + 240)
    line = g.obj("line~", 200, y + 270, 2, 1 if host == "pd" else 2, signal=True)
    g.connect(gate, 1, times)
    g.connect(times, 0, shift)
    g.connect(shift, 0, attack)
    g.connect(attack, 0, line)
    g.connect(gate, 0, release)
    g.connect(release, 0, line)

    nn = nn_box(g, synth, 20, y + 310)
    g.connect(f0, 0, nn, 0)
    g.connect(line, 0, nn, 1)
    # on load: silence (line~ starts at 0 dB, loud for this model) and a resting pitch
    load = g.obj("loadbang", 420, y + 120, 1, 1)
    rest = g.msg(f"{_float_word(low)}", 420, y + 150)
    pitch = g.msg(f"{_float_word(midi_to_hz(REST_PITCH))}", 500, y + 150)
    g.connect(load, 0, rest)
    g.connect(load, 0, pitch)
    g.connect(rest, 0, line)
    g.connect(pitch, 0, f0)
    y = output_section(g, spec, nn, synth.outlets, y + 360)
    y = controls_section(g, spec, ids, [nn], y, [])
    host_rate_section(g, spec, host, [nn], y)
    return g

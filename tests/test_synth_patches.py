"""The synth patches of a model with a ``synth`` method (DDSP): real Pd opens them, MIDI notes
reach nn~'s f0 and loudness inlets, OSC notes are routed, Max files are sound."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from tests.test_patches import PD, _free_udp_port, _max_boxes, _problems, _run_pd, needs_pd
from tildekit.models.contract.card import AttributeSpec, MethodSpec, ModelCard
from tildekit.models.contract.card_format import CardError
from tildekit.models.contract.oscmap import BadValueError, Control, OscMap, OscValueError, UnknownAddressError
from tildekit.models.contract.synth_controls import FALLBACK_LOUDNESS_RANGE, loudness_range, velocity_to_db
from tildekit.patches.write import write_patches

HOP = 512
LOUDNESS = [-62.0, -18.0]


def ddsp_card(name: str = "violin", extra: dict | None = None) -> ModelCard:
    """A card shaped like export/ddsp_export.py's (without the host-rate table)."""
    audio, controls = ["audio"], ["f0 (Hz)", "loudness (dB)"]
    attrs = [AttributeSpec("pitch_shift", ["float"], [0.0], -24.0, 24.0, "semitones"),
             AttributeSpec("loudness_offset", ["float"], [0.0], -40.0, 40.0, "dB"),
             AttributeSpec("harmonic_gain", ["float"], [1.0], 0.0, 4.0, "harmonic gain"),
             AttributeSpec("noise_gain", ["float"], [1.0], 0.0, 4.0, "noise gain"),
             AttributeSpec("reset", ["bool"], [False], description="clear the streaming state")]
    return ModelCard(
        name=name, sample_rate=48000, channels=1, compression=HOP, latent_size=0,
        methods={"forward": MethodSpec(1, 1, 1, 1, audio, audio, 0),
                 "features": MethodSpec(1, 1, 2, HOP, audio, controls, 0),
                 "synth": MethodSpec(2, HOP, 1, 1, controls, audio, 0)},
        attributes=attrs, delay=0, family="ddsp", profile="ddsp-raspberry",
        extra={"hop": HOP, "frame_lag": HOP, "loudness_range": LOUDNESS} if extra is None else extra)


def _pd_graph(path: Path) -> tuple[list[str], dict[int, list[tuple[int, int, int]]]]:
    """Box texts by index and cords (outlet, sink, inlet) by source, read back from a .pd file."""
    boxes, cords = [], defaultdict(list)
    for line in path.read_text().splitlines():
        words = line.rstrip(";").split()
        if words[:2] in (["#X", "obj"], ["#X", "msg"], ["#X", "text"], ["#X", "floatatom"]):
            boxes.append(" ".join(words[4:]) if words[1] != "floatatom" else "floatatom")
        elif words[:2] == ["#X", "connect"]:
            source, outlet, sink, inlet = map(int, words[2:])
            cords[source].append((outlet, sink, inlet))
    return boxes, cords


def _path_to(boxes: list[str], cords: dict, start: str, goal: str, inlet: int) -> list[str]:
    """Box texts from the box ``start`` to inlet ``inlet`` of ``goal`` (depth first), or []."""
    def walk(node: int, seen: list[int]) -> list[int]:
        for _, sink, sink_inlet in cords.get(node, []):
            if sink in seen:
                continue
            if boxes[sink] == goal and sink_inlet == inlet:
                return [*seen, sink]
            found = walk(sink, [*seen, sink])
            if found:
                return found
        return []

    first = boxes.index(start)
    return [boxes[i] for i in walk(first, [first])]


def test_synth_patch_graph_notein_mtof_to_nn_synth(tmp_path: Path) -> None:
    written = write_patches(ddsp_card(), tmp_path, host="pd")
    assert sorted(p.name for p in written) == ["violin-forward.pd", "violin-osc.pd", "violin-synth.pd"]
    boxes, cords = _pd_graph(tmp_path / "violin-synth.pd")
    synth = "nn~ violin.ts synth 2048"
    f0 = _path_to(boxes, cords, "notein", synth, 0)
    assert f0 == ["notein", "poly 1 1", "stripnote", "mtof", "sig~", synth], f0
    loudness = _path_to(boxes, cords, "notein", synth, 1)
    assert loudness[:3] == ["notein", "poly 1 1", "sel 0"] and loudness[-2:] == ["line~", synth], loudness
    # velocity 127 reaches the top of the training range, a note off its bottom, both glided
    scale = (LOUDNESS[1] - LOUDNESS[0]) / 127
    assert f"* {scale:.6g}" in boxes and "+ -62." in boxes
    assert "\\$1 10." in boxes and "-62. 150." in boxes
    assert velocity_to_db(127, loudness_range(ddsp_card().extra)) == pytest.approx(LOUDNESS[1])
    # attributes by card, like the forward patch: every one has its message
    for name in ("pitch_shift", "loudness_offset", "harmonic_gain", "noise_gain"):
        assert f"set {name} 0" in boxes or f"set {name} 1" in boxes, name
    assert _path_to(boxes, cords, "r tk-violin-note", synth, 0)  # OSC notes take the same path


@needs_pd
def test_pd_opens_the_ddsp_patches(tmp_path: Path) -> None:
    written = write_patches(ddsp_card(), tmp_path, host="pd", osc_port=_free_udp_port(), buffer=1024)
    output = _run_pd(tmp_path, [p.name for p in written])
    assert _problems(output) == [], output
    attempted = {line.split(": ", 1)[-1] for line in output.splitlines() if "nn~ " in line}
    assert {"nn~ violin.ts synth 1024", "nn~ violin.ts forward 1024"} <= attempted, output


@needs_pd
def test_pd_plays_notes_into_the_control_signals(tmp_path: Path) -> None:
    """The real Pd runs the synth patch with a probe in place of nn~: a note's f0 and loudness
    arrive as signals, and a note off brings the loudness down to the floor."""
    write_patches(ddsp_card(), tmp_path, host="pd")
    text = (tmp_path / "violin-synth.pd").read_text()
    # an abstraction with nn~'s two inlets and outlet that prints its input signals when banged
    (tmp_path / "probe.pd").write_text(
        "#N canvas 0 0 400 300 12;\n#X obj 10 10 inlet~;\n#X obj 100 10 inlet~;\n"
        "#X obj 10 60 snapshot~;\n#X obj 100 60 snapshot~;\n#X obj 10 100 r probe-bang;\n"
        "#X obj 10 140 print f0;\n#X obj 100 140 print loudness;\n#X obj 200 140 outlet~;\n"
        "#X connect 0 0 2 0;\n#X connect 1 0 3 0;\n#X connect 4 0 3 0;\n#X connect 4 0 2 0;\n"
        "#X connect 2 0 5 0;\n#X connect 3 0 6 0;\n")
    (tmp_path / "synth-probe.pd").write_text(text.replace("nn~ violin.ts synth 2048", "probe"))
    script = tmp_path / "script.pd"  # note on, wait, probe; note off, wait, probe
    script.write_text(
        "#N canvas 0 0 400 300 12;\n#X obj 10 10 loadbang;\n#X obj 10 40 delay 100;\n"
        "#X msg 10 70 \\; tk-violin-note 69 127;\n#X obj 10 100 delay 400;\n"
        "#X msg 10 130 \\; probe-bang bang \\; tk-violin-note 69 0;\n#X obj 10 160 delay 900;\n"
        "#X msg 10 190 \\; probe-bang bang \\; pd quit;\n"
        "#X connect 0 0 1 0;\n#X connect 1 0 2 0;\n#X connect 1 0 3 0;\n#X connect 3 0 4 0;\n"
        "#X connect 3 0 5 0;\n#X connect 5 0 6 0;\n")
    args = [str(PD), "-nogui", "-nosound", "-nrt", "-stderr", "-path", str(tmp_path),
            "-open", str(tmp_path / "synth-probe.pd"), "-open", str(script), "-send", "pd dsp 1"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    output = done.stdout + done.stderr
    assert _problems(output) == [], output
    f0 = [float(line.split()[-1]) for line in output.splitlines() if line.startswith("f0:")]
    loud = [float(line.split()[-1]) for line in output.splitlines() if line.startswith("loudness:")]
    assert len(f0) == 2 and len(loud) == 2, output
    assert f0 == [pytest.approx(440.0, rel=1e-4)] * 2  # the release keeps its pitch
    assert loud[0] == pytest.approx(LOUDNESS[1], abs=1e-3) and loud[1] == pytest.approx(LOUDNESS[0], abs=1e-3)


@pytest.mark.parametrize("host", ["max", "pd"])
def test_synth_patch_without_range_uses_the_fallback(tmp_path: Path, host: str) -> None:
    write_patches(ddsp_card(extra={"hop": HOP}), tmp_path, host=host)
    suffix = ".pd" if host == "pd" else ".maxpat"
    assert f"+ {FALLBACK_LOUDNESS_RANGE[0]:g}." in (tmp_path / f"violin-synth{suffix}").read_text()


def test_max_synth_patch_is_consistent(tmp_path: Path) -> None:
    write_patches(ddsp_card(), tmp_path, host="max", buffer=4096)
    boxes, lines = _max_boxes(tmp_path / "violin-synth.maxpat")
    by_text = {b.get("text", ""): i for i, b in boxes.items()}
    for line in lines:
        (src, outlet), (dst, inlet) = line["source"], line["destination"]
        assert 0 <= outlet < boxes[src]["numoutlets"] and 0 <= inlet < boxes[dst]["numinlets"], line
    synth = boxes[by_text["nn~ violin.ts synth 4096"]]
    assert synth["numinlets"] == 2 and synth["numoutlets"] == 1
    feeds = {(boxes[line["source"][0]].get("text"), line["destination"][1]) for line in lines
             if line["destination"][0] == by_text["nn~ violin.ts synth 4096"]}
    assert ("sig~", 0) in feeds and ("line~", 1) in feeds
    cords = {(boxes[line["source"][0]].get("text"), boxes[line["destination"][0]].get("text")) for line in lines}
    assert {("notein", "poly 1 1"), ("stripnote", "mtof"), ("mtof", "sig~")} <= cords
    osc_boxes, _ = _max_boxes(tmp_path / "violin-osc.maxpat")
    router = next(b["text"] for b in osc_boxes.values() if b.get("text", "").startswith("route /"))
    assert "/tildekit/violin/note" in router.split() and "/tildekit/violin/attr/pitch_shift" in router.split()


def test_osc_map_of_a_ddsp_model() -> None:
    osc = OscMap(ddsp_card())
    patterns = {d.pattern for d in osc.documentation()}
    assert patterns == {f"/tildekit/violin/attr/{a}" for a in
                        ("pitch_shift", "loudness_offset", "harmonic_gain", "noise_gain", "reset")} | {
        "/tildekit/violin/gain", "/tildekit/violin/reset", "/tildekit/violin/note"}
    assert osc.parse("/tildekit/violin/note", [60, 100]) == Control("note", values=(60.0, 100.0))
    assert osc.parse("/tildekit/violin/attr/pitch_shift", [7.0]) == Control("attr", name="pitch_shift",
                                                                           values=(7.0,))
    with pytest.raises(BadValueError, match="outside"):
        osc.parse("/tildekit/violin/note", [60, 128])
    with pytest.raises(BadValueError, match="outside"):
        osc.parse("/tildekit/violin/attr/pitch_shift", [25.0])
    with pytest.raises(OscValueError, match="no latent space"):
        osc.parse("/tildekit/violin/latent/0", [1.0])
    from tests.conftest import make_card
    with pytest.raises(UnknownAddressError):  # no synth method, no notes
        OscMap(make_card()).parse("/tildekit/tiny/note", [60, 100])


@pytest.mark.parametrize("bad", [[-20.0, -60.0], [-60.0], ["a", 1], [-200.0, 0.0], [-60.0, True]])
def test_card_loudness_range_is_checked(bad: list) -> None:
    card = ddsp_card(extra={"loudness_range": bad})
    with pytest.raises(CardError, match="extra.loudness_range"):
        ModelCard.from_json(card.to_json())

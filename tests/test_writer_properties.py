"""Property-based tests (hypothesis) of the card validator, safe names and each writer.

- The validator, given any JSON value or any mutation of a valid card, either builds a card
  that survives a write/read round trip or raises CardError: never another exception.
- A safe name never leaves the folder it is joined to; the slug of any text is safe.
- Pd: text written as a comment reads back (by Pd's reading rules) as the same words and never
  ends its record (nothing after it runs when the patch opens); a word written in a box reads
  back as exactly that word or is refused. Real Pd confirms both on samples.
- Max: comment text survives JSON; box words are refused or kept. YAML: any model path reads
  back from the demo score unchanged.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.conftest import make_card
from tildekit.errors import TildekitError
from tildekit.models.contract.atomic import atomic_path, atomic_write_text
from tildekit.models.contract.card import CardError, ModelCard
from tildekit.models.contract.names import MAX_NAME_LENGTH, check_name, name_problem, slug_name
from tildekit.patches.graph import Graph
from tildekit.patches.maxpat import max_comment, render_maxpat
from tildekit.patches.pd import pd_comment, render_pd

PD = shutil.which("pd")
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 20, 10 ** 20) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30)
HOSTILE_TEXT = st.text(alphabet=st.characters(codec=None), max_size=80) | st.sampled_from(
    ["x; pd quit", "$1", "\\$0", "a, b", "{x}", "..", "../../X", "a\nb", "\x00", "\u202e", "#N canvas"])


# ------------------------------------------------------------------------------- card validator


def _leaves(node: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(node, dict):
        return [path] + [leaf for k, v in node.items() for leaf in _leaves(v, path + (k,))]
    if isinstance(node, list):
        return [path] + [leaf for i, v in enumerate(node) for leaf in _leaves(v, path + (i,))]
    return [path]


def _replace(node: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    node[path[0]] = _replace(node[path[0]], path[1:], value)
    return node


def _accepts_or_card_error(data: Any) -> None:
    try:
        card = ModelCard.from_dict(data)
    except CardError as exc:
        assert "\n" not in str(exc)
        return
    # Accepted: the card is internally consistent and survives a write/read round trip.
    assert ModelCard.from_json(card.to_json()) == card
    assert name_problem(card.name) is None
    for spec in card.methods.values():
        assert spec.in_ratio >= 1 and spec.out_ratio >= 1 and spec.in_channels >= 1
    for dim in card.latents:
        assert all(math.isfinite(v) for v in (dim.mean, dim.std, dim.minimum, dim.maximum))


@PROPERTY
@given(JSON)
def test_validator_on_any_json(data: Any) -> None:
    _accepts_or_card_error(data)


@PROPERTY
@given(st.data())
def test_validator_on_any_mutation_of_a_valid_card(data: st.DataObject) -> None:
    card = json.loads(make_card().to_json())
    path = data.draw(st.sampled_from(_leaves(card)))
    value = data.draw(JSON | HOSTILE_TEXT)
    _accepts_or_card_error(_replace(card, path, value))


def test_validator_accepts_the_exporters_own_cards() -> None:
    for latent_size in (1, 4, 16):
        card = make_card(latent_size=latent_size)
        assert ModelCard.from_json(card.to_json()) == card


# ------------------------------------------------------------------------------- names


@PROPERTY
@given(HOSTILE_TEXT)
def test_a_safe_name_stays_in_its_folder(name: str) -> None:
    base = Path("/srv/out")
    try:
        checked = check_name(name, "--name")
    except TildekitError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return
    assert checked == name and 1 <= len(name) <= MAX_NAME_LENGTH
    for candidate in (base / name, base / f"{name}.ts", base / f"{name}-osc.pd"):
        assert candidate.parent == base and ".." not in candidate.parts


@PROPERTY
@given(HOSTILE_TEXT)
def test_slug_of_any_text_is_safe(text: str) -> None:
    assert name_problem(slug_name(text)) is None


# ------------------------------------------------------------------------------- Pd


def pd_atoms(text: str) -> list[tuple[str, str]]:
    """How Pd reads the content of one saved box (binbuf_text, then binbuf_restore).

    Whitespace separates atoms and '\\' escapes the next character. An unescaped ';' or ','
    ends the file's record ("record"): whatever follows would run as a message when the patch
    opens. An escaped one standing alone becomes a message separator inside the box
    ("separator": a message box sends there when clicked; a comment only displays it). A '$'
    before a digit, escaped or not, becomes an argument ("dollar").
    """
    atoms: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t\n\r":
            i += 1
            continue
        if text[i] in ";,":
            atoms.append(("record", text[i]))
            i += 1
            continue
        word: list[str] = []
        while i < n and text[i] not in " \t\n\r;,":
            if text[i] == "\\" and i + 1 < n:
                word.append(text[i + 1])
                i += 2
                continue
            word.append(text[i])
            i += 1
        joined = "".join(word)
        kind = "separator" if joined in (";", ",") else "dollar" if re.search(r"\$[0-9]", joined) else "word"
        atoms.append((kind, joined))
    return atoms


def _comment_words(text: str) -> list[tuple[str, str]]:
    line = render_pd(_one_box("text", text)).splitlines()[1]
    assert line.startswith("#X text 10 20 ") and line.endswith(";")
    return pd_atoms(line[len("#X text 10 20 "):-1])


def _one_box(kind: str, text: str) -> Graph:
    graph = Graph("property")
    if kind == "sends":
        graph.sends([(text, "1")], 10, 20)
    else:
        {"text": graph.text, "msg": graph.msg, "obj": graph.obj}[kind](text, 10, 20)
    return graph


def _visible(text: str) -> str:
    """What a comment keeps of ``text``: every printable, non-space character (some replaced)."""
    kept = "".join(ch for ch in text.translate(str.maketrans("\\{}", "/()"))
                   if ch.isprintable() and not ch.isspace())
    return kept or "-"


@PROPERTY
@given(HOSTILE_TEXT)
def test_pd_comment_reads_back_as_its_words_and_never_as_a_message(text: str) -> None:
    atoms = _comment_words(text)
    # nothing ends the record early; separators and "$1" inside a comment are only displayed
    assert all(kind != "record" for kind, _ in atoms), atoms
    assert "".join(word for _, word in atoms) == _visible(text)
    assert "\n" not in pd_comment(text)


@PROPERTY
@given(HOSTILE_TEXT)
def test_pd_box_word_round_trips_or_is_refused(word: str) -> None:
    kind_of = "dollar" if re.fullmatch(r"\$[0-9]", word) else "word"
    read = word[1:] if re.fullmatch(r"\\[0-9][0-9.]*", word) else word  # \0: the symbol "0" for [route]
    cases = (("sends", "msg", [("separator", ";"), (kind_of, read), ("word", "1")]),
             ("obj", "obj", [("word", "r"), (kind_of, read)]),
             ("msg", "msg", [("word", "set"), (kind_of, read)]))
    for kind, record, expected in cases:
        text = {"sends": word, "obj": f"r {word}", "msg": f"set {word}"}[kind]
        if kind != "sends" and word.split() != [word]:
            continue  # several words (or none): not one atom to compare
        try:
            line = render_pd(_one_box(kind, text)).splitlines()[1]
        except TildekitError as exc:
            assert "\n" not in str(exc)
            continue
        assert line.endswith(";") and line.count("\n") == 0
        assert pd_atoms(line[len(f"#X {record} 10 20 "):-1]) == expected, line


SAFE_LOOKING = ["caf\u00e9", "\u65e5\u672c\u8a9e", "a+b", "x/y", "k:v", "m=1", "p%", "n@h", "t~", "a.b-c_d"]
HOSTILE_COMMENTS = ["x; pd quit", "a, b; pd dsp 0", "$0 $1 \\$2 \\", "{evil} [x(", "#X obj 0 0 pd quit;",
                    "1.50 and 1e3", "caf\u00e9 \u65e5\u672c"]


@pytest.mark.skipif(PD is None, reason="Pure Data (Debian package puredata-core) is not installed")
def test_real_pd_reads_words_and_comments_as_written(tmp_path: Path) -> None:
    """Pd re-saves our comments as the same words, and each box word reaches [r WORD] intact."""
    graph = Graph("pd")
    for i, text in enumerate(HOSTILE_COMMENTS):
        graph.text(text, 10, 10 + 20 * i)
    for i, word in enumerate(SAFE_LOOKING):
        receive = graph.obj(f"r {word}", 300, 10 + 20 * i, 0, 1)
        graph.connect(receive, 0, graph.obj(f"print got-{i}", 500, 10 + 20 * i, 1, 0))
    patch = tmp_path / "words.pd"
    patch.write_text(render_pd(graph), encoding="utf-8")
    resaved = tmp_path / "resaved.pd"
    shutil.copy(patch, resaved)
    args = [PD, "-nogui", "-nosound", "-nrt", "-stderr", "-open", str(resaved)]
    for word in SAFE_LOOKING:
        args += ["-send", f"{word} bang"]
    args += ["-send", "pd-resaved.pd menusave", "-send", "pd quit"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    console = done.stdout + done.stderr
    for i in range(len(SAFE_LOOKING)):
        assert f"got-{i}: bang" in console, console
    ours = [pd_atoms(line[len("#X text 10 "):]) for line in patch.read_text().split(";\n")
            if line.startswith("#X text")]
    theirs = [pd_atoms(line[len("#X text 10 "):]) for line in resaved.read_text().split(";\n")
              if line.startswith("#X text")]

    def canonical(atoms: list) -> list:
        out = []
        for kind, word in atoms:
            try:
                out.append((kind, float(word)))  # Pd re-prints numbers (1.50 -> 1.5)
            except ValueError:
                out.append((kind, word))
        return out

    assert [canonical(a) for a in theirs] == [canonical(a) for a in ours]


# ------------------------------------------------------------------------------- Max, YAML, files


@PROPERTY
@given(HOSTILE_TEXT)
def test_max_comment_survives_json_and_box_words_are_refused_or_kept(text: str) -> None:
    boxes = json.loads(render_maxpat(_one_box("text", text)))["patcher"]["boxes"]
    assert boxes[0]["box"]["text"] == max_comment(text) and "\n" not in max_comment(text)
    try:
        boxes = json.loads(render_maxpat(_one_box("sends", text)))["patcher"]["boxes"]
    except TildekitError:
        return
    assert boxes[0]["box"]["text"].split() == [";", text, "1"]


@PROPERTY
@given(HOSTILE_TEXT)
def test_demo_score_quotes_any_model_path(text: str) -> None:
    from tildekit.demo import demo_score

    assume(text)
    path = Path("/out") / text
    score = demo_score(path)
    assert score.isascii()
    assert yaml.safe_load(score)["model"] == str(path)


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "kept.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]

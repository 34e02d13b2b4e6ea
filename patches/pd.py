"""Render a :class:`Graph` as a Pure Data (vanilla 0.53) patch file.

A Pd file is a list of messages Pd executes when it opens the patch: an unescaped ``;`` ends
one and starts the next (``; pd quit`` would quit Pd), ``,`` separates messages, ``$N`` is an
argument. So every box is written atom by atom:

- object and message boxes hold words tildekit composed from validated names; each word must
  be a plain atom (:func:`~tildekit.patches.graph.atom_problem`), anything else is refused rather than guessed;
  the ``;`` and ``,`` a message box means are written escaped (``\\;``), as Pd saves them;
- comments hold free text (descriptions, labels from a card): whitespace runs become one space,
  ``;`` ``,`` ``$`` are backslash-escaped, and the characters Pd 0.53 does not read back as
  written (backslash, braces) are replaced by ``/`` and parentheses.
"""

from __future__ import annotations

import re

from tildekit.patches.graph import ATOM_PUNCTUATION, Box, Graph, box_tokens

SLIDER_SIZE = (128, 15)
_COMMENT_REPLACEMENTS = str.maketrans({"\\": "/", "{": "(", "}": ")"})


def _box_words(box: Box) -> str:
    """Checked words; ';' ',' and the '$' of an argument escaped as Pd saves them."""
    return " ".join("\\" + t if t in (";", ",") or t.startswith("$") else t for t in box_tokens(box, "pd"))


def pd_comment(text: str) -> str:
    """Free text as a Pd comment that Pd reads back as the same words and never executes."""
    text = " ".join(text.translate(_COMMENT_REPLACEMENTS).split())
    text = "".join(ch for ch in text if ch.isprintable())
    text = re.sub(r"\s*([;,])", r" \\\1", text)
    text = text.replace("$", "\\$").strip()
    return text or "-"


def pd_label(text: str) -> str:
    """A single-atom field (slider/number label): unsafe characters become '_', '-' when empty."""
    word = "".join(ch if ch.isalnum() or ch in ATOM_PUNCTUATION else "_" for ch in text)
    return word or "-"


def _box_line(box: Box) -> str:
    if box.kind == "obj":
        return f"#X obj {box.x} {box.y} {_box_words(box)};"
    if box.kind == "msg":
        return f"#X msg {box.x} {box.y} {_box_words(box)};"
    if box.kind == "text":
        return f"#X text {box.x} {box.y} {pd_comment(box.text)};"
    if box.kind == "slider":
        w, h = SLIDER_SIZE
        return (f"#X obj {box.x} {box.y} hsl {w} {h} {box.minimum:g} {box.maximum:g} 0 0 empty empty "
                f"{pd_label(box.label)} {w + 8} 8 0 10 #fcfcfc #000000 #000000 0 1;")
    if box.kind == "number":
        return (f"#X floatatom {box.x} {box.y} 6 {box.minimum:g} {box.maximum:g} 1 "
                f"{pd_label(box.label)} - - 0;")
    raise ValueError(f"unknown box kind {box.kind!r}")


def render_pd(graph: Graph) -> str:
    lines = ["#N canvas 40 40 1200 900 12;"]
    lines += [_box_line(box) for box in graph.boxes]
    lines += [f"#X connect {c.source} {c.outlet} {c.sink} {c.inlet};" for c in graph.cords]
    return "\n".join(lines) + "\n"

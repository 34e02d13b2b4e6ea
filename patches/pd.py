"""Render a :class:`Graph` as a Pure Data (vanilla 0.53) patch file."""

from __future__ import annotations

import re

from tildekit.patches.graph import Box, Graph

SLIDER_SIZE = (128, 15)


def _escape(text: str) -> str:
    """Pd file syntax: ';' ',' and '$' are special inside boxes and must be backslashed."""
    text = re.sub(r"\\(?![0-9])", "/", text)  # keep "\\0": a symbol that looks like a number
    text = re.sub(r"\s*([;,])", r" \\\1", text)
    return text.replace("$", "\\$").strip()


def _symbol(text: str) -> str:
    """A single-atom field (label): no spaces, '-' when empty."""
    word = re.sub(r"[\s;,$\\]+", "_", text)
    return word or "-"


def _box_line(box: Box) -> str:
    if box.kind == "obj":
        return f"#X obj {box.x} {box.y} {_escape(box.text)};"
    if box.kind == "msg":
        return f"#X msg {box.x} {box.y} {_escape(box.text)};"
    if box.kind == "text":
        return f"#X text {box.x} {box.y} {_escape(box.text)};"
    if box.kind == "slider":
        w, h = SLIDER_SIZE
        return (f"#X obj {box.x} {box.y} hsl {w} {h} {box.minimum:g} {box.maximum:g} 0 0 empty empty "
                f"{_symbol(box.label)} {w + 8} 8 0 10 #fcfcfc #000000 #000000 0 1;")
    if box.kind == "number":
        return (f"#X floatatom {box.x} {box.y} 6 {box.minimum:g} {box.maximum:g} 1 "
                f"{_symbol(box.label)} - - 0;")
    raise ValueError(f"unknown box kind {box.kind!r}")


def render_pd(graph: Graph) -> str:
    lines = ["#N canvas 40 40 1200 900 12;"]
    lines += [_box_line(box) for box in graph.boxes]
    lines += [f"#X connect {c.source} {c.outlet} {c.sink} {c.inlet};" for c in graph.cords]
    return "\n".join(lines) + "\n"

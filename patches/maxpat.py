"""Render a :class:`Graph` as a Max patcher (``.maxpat``) with py2max.

py2max owns the .maxpat format (patcher header, box and patchline records, ids); we give it
explicit inlet/outlet counts for every box, because nn~ and the generated abstraction are not
in its object database and their counts come from the model card.

JSON escaping is json.dumps's job; what Max itself parses is the text of object and message
boxes, so their words are checked as plain atoms (``graph.box_tokens``: a ``;`` in a message
box would send to any receiver). Comments are display text: whitespace runs become one space
and non-printable characters are dropped.
"""

from __future__ import annotations

import json
from typing import Any

from py2max import Patcher
from py2max.core import Box as MaxBox

from tildekit.patches.graph import Box, Graph, box_tokens

CHAR_WIDTH = 7.0
BOX_HEIGHT = 22.0


def _rect(box: Box, width: float | None = None, height: float = BOX_HEIGHT) -> Any:
    # Any: py2max annotates its Rect NamedTuple, which releases before 0.7 lack; it takes any [x, y, w, h].
    width = width if width is not None else max(40.0, CHAR_WIDTH * len(box.text) + 16)
    return [float(box.x), float(box.y), width, height]


def max_comment(text: str) -> str:
    return "".join(ch for ch in " ".join(text.split()) if ch.isprintable())


def _add(patcher: Patcher, box: Box):
    if box.kind in ("obj", "msg"):
        box_tokens(box, "max")  # refuses a word Max would read as syntax
    if box.kind == "obj":
        kind = "signal" if box.signal_outlets else ""
        return patcher.add_textbox(box.text, numinlets=box.inlets, numoutlets=box.outlets,
                                   outlettype=[kind] * box.outlets, patching_rect=_rect(box))
    if box.kind == "msg":
        return patcher.add_message(box.text, patching_rect=_rect(box))
    if box.kind == "text":
        text = max_comment(box.text)
        return patcher.add_comment(text, patching_rect=_rect(box, min(900.0, CHAR_WIDTH * len(text) + 16)))
    if box.kind == "slider":
        return patcher.add_box(MaxBox(
            id=patcher.get_id("slider"), maxclass="slider", numinlets=1, numoutlets=1, outlettype=[""],
            patching_rect=_rect(box, 128.0, 20.0), orientation=1, floatoutput=1,
            min=box.minimum, size=box.maximum - box.minimum, hint=max_comment(box.label)))
    if box.kind == "number":
        limits = {"minimum": box.minimum, "maximum": box.maximum} if box.maximum > box.minimum else {}
        return patcher.add_floatbox(patching_rect=_rect(box, 60.0), hint=max_comment(box.label), **limits)  # type: ignore[arg-type]
    raise ValueError(f"unknown box kind {box.kind!r}")


def render_maxpat(graph: Graph) -> str:
    patcher = Patcher(title=max_comment(graph.title), validate_connections=False)
    boxes = [_add(patcher, box) for box in graph.boxes]
    for cord in graph.cords:
        patcher.add_line(boxes[cord.source], boxes[cord.sink], inlet=cord.inlet, outlet=cord.outlet)
    return json.dumps(patcher.to_dict(), indent=1) + "\n"

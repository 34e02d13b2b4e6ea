"""A host-neutral patch: boxes at positions, and cords between their outlets and inlets.

``build.py`` fills one per patch; ``pd.py`` and ``maxpat.py`` only translate it to a file format.
Inlet/outlet counts are recorded per box so cords can be checked before anything is written
(and so Max boxes carry the right counts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from tildekit.errors import TildekitError
from tildekit.models.contract.names import shown

# Punctuation a word in an object or message box may use besides letters and digits (any
# script): enough for object names, relative paths, OSC addresses and numbers, and nothing
# that Pd or Max read as syntax (quotes, braces, backslashes, ';', ',', '$', '#').
ATOM_PUNCTUATION = frozenset("_.~+-/*:=@%")
_ARGUMENT = {"pd": re.compile(r"\$[0-9]"), "max": re.compile(r"[$#][0-9]")}  # [f $1], [f #1]
_SYMBOL_NUMBER = re.compile(r"\\[0-9][0-9.]*")  # Pd: \0 is a number [route] keeps as a symbol


@dataclass
class Box:
    kind: str  # "obj" | "msg" | "text" | "slider" | "number"
    text: str  # object text, message content, or comment (free text)
    x: int
    y: int
    inlets: int = 1
    outlets: int = 1
    signal_outlets: bool = False
    # sliders and number boxes
    minimum: float = 0.0
    maximum: float = 1.0
    label: str = ""
    # a message box that sends to receive names: ((receiver, word, ...), ...); its text is derived
    sends: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Cord:
    source: int
    outlet: int
    sink: int
    inlet: int


@dataclass
class Graph:
    title: str
    boxes: list[Box] = field(default_factory=list)
    cords: list[Cord] = field(default_factory=list)

    def add(self, box: Box) -> int:
        self.boxes.append(box)
        return len(self.boxes) - 1

    def obj(self, text: str, x: int, y: int, inlets: int = 1, outlets: int = 1,
            signal: bool = False) -> int:
        return self.add(Box("obj", text, x, y, inlets, outlets, signal))

    def msg(self, text: str, x: int, y: int) -> int:
        return self.add(Box("msg", text, x, y, 1, 1))

    def sends(self, messages: list[tuple[str, ...]], x: int, y: int) -> int:
        """A message box sending each ``(receiver, word, ...)``: ``[; r1 w; r2 w(``.

        The ';' between messages exist only here: writers refuse ';' and ',' in any other
        box, so a name can never smuggle a message separator into a patch.
        """
        sends = tuple(tuple(m) for m in messages)
        text = " ".join(f"; {' '.join(m)}" for m in sends)
        return self.add(Box("msg", text, x, y, 1, 1, sends=sends))

    def text(self, text: str, x: int, y: int) -> int:
        return self.add(Box("text", text, x, y, 0, 0))

    def slider(self, x: int, y: int, lo: float, hi: float, label: str) -> int:
        return self.add(Box("slider", "", x, y, 1, 1, minimum=lo, maximum=hi, label=label))

    def number(self, x: int, y: int, lo: float = 0.0, hi: float = 0.0, label: str = "") -> int:
        return self.add(Box("number", "", x, y, 1, 1, minimum=lo, maximum=hi, label=label))

    def connect(self, source: int, outlet: int, sink: int, inlet: int = 0) -> None:
        src, dst = self.boxes[source], self.boxes[sink]
        if not 0 <= outlet < src.outlets or not 0 <= inlet < dst.inlets:
            raise ValueError(f"bad cord {src.text!r}:{outlet} -> {dst.text!r}:{inlet}")
        self.cords.append(Cord(source, outlet, sink, inlet))


def atom_problem(word: str, host: str) -> str | None:
    """Why ``word`` cannot be written as one plain atom of an object/message box for ``host``."""
    if _ARGUMENT[host].fullmatch(word) or (host == "pd" and _SYMBOL_NUMBER.fullmatch(word)):
        return None
    if not word:
        return "is empty"
    bad = sorted({ch for ch in word if not (ch.isalnum() or ch in ATOM_PUNCTUATION)})
    if bad:
        return f"contains {shown(''.join(bad))}"
    return None


def box_tokens(box: Box, host: str) -> list[str]:
    """The words of an object/message box, each checked as a plain atom; ';' only between the
    messages of a :meth:`Graph.sends` box.

    A word that is not a plain atom is refused (TildekitError): a generated patch never carries
    text that the host would run as messages when it opens the patch.
    """
    if box.sends:
        tokens = []
        for message in box.sends:
            tokens.append(";")
            for word in message:
                _check_word(box, word, host)
                tokens.append(word)
        return tokens
    tokens = box.text.split()
    for token in tokens:
        _check_word(box, token, host)
    return tokens


def _check_word(box: Box, word: str, host: str) -> None:
    problem = atom_problem(word, host)
    if problem:
        raise TildekitError(f"the {host} box {shown(box.text)} cannot be written safely: {shown(word)} "
                            f"{problem}; rename the model file or re-export the model with plain names")

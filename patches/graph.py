"""A host-neutral patch: boxes at positions, and cords between their outlets and inlets.

``build.py`` fills one per patch; ``pd.py`` and ``maxpat.py`` only translate it to a file format.
Inlet/outlet counts are recorded per box so cords can be checked before anything is written
(and so Max boxes carry the right counts).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Box:
    kind: str  # "obj" | "msg" | "text" | "slider" | "number"
    text: str  # object text, message content (';' separates sends), or comment
    x: int
    y: int
    inlets: int = 1
    outlets: int = 1
    signal_outlets: bool = False
    # sliders and number boxes
    minimum: float = 0.0
    maximum: float = 1.0
    label: str = ""


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

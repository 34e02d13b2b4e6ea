"""`tildekit demo --family effect` on generated pairs (tiniest settings, structural checks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tildekit.demo import run_effect_demo
from tildekit.export.card_io import read_card

pytestmark = pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning")


def test_effect_demo_renders_trains_exports_checks_and_patches(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    lines: list[str] = []
    paths = run_effect_demo(out, steps=4, segments=6, seconds=0.25, echo=lines.append, progress=False, quick=True)
    exports = paths["exports"]
    assert sorted(p.name for p in exports.iterdir()) == [
        "demo-fx-forward.maxpat", "demo-fx-forward.pd", "demo-fx-osc.maxpat", "demo-fx-osc.pd",
        "demo-fx.nm", "demo-fx.ts"]
    card = read_card(exports / "demo-fx.ts")
    assert (card.family, card.step, card.profile) == ("effect", 4, "effect-tcn")
    assert [a.name for a in card.attributes] == ["gain", "tone", "level", "reset"]
    assert read_card(exports / "demo-fx.nm") == card
    text = "\n".join(lines)
    assert text.count("structural host checks passed") == 2 and "error-to-signal ratio" in text and "To play it" in text
    assert "/tildekit/demo-fx/attr/gain" in text and (out / "dry.wav").is_file()

"""The README's main job, end to end: `tildekit demo` on generated audio (shortened)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tildekit.cli import main
from tildekit.export.card_io import read_card


def test_demo_runs_the_whole_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", str(out), "--steps", "6", "--seconds", "40"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    exports = out / "export"
    for name in ("demo.ts", "demo.nm", "demo.onnx", "demo.encode.onnx", "demo.decode.onnx",
                 "demo-transfer.pd", "demo-transfer.maxpat"):
        assert (exports / name).is_file(), name
    card = read_card(exports / "demo.ts")
    assert card.step == 6 and card.profile == "small"
    assert read_card(exports / "demo.onnx").delay == card.delay
    assert (out / "score.yaml").is_file()
    assert "checks passed" in result.output and "To play it" in result.output
    # re-running continues the run instead of starting over
    again = CliRunner().invoke(main, ["demo", str(out), "--steps", "8", "--seconds", "40"])
    assert again.exit_code == 0, again.output + repr(again.exception)
    assert read_card(exports / "demo.ts").step == 8

"""`tildekit preprocess-pairs`: recorded dry/wet pairs with a knob table -> a pair set, checked as
untrusted input (one line per problem, nothing written unless there are none)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from tildekit.cli import main as cli
from tildekit.errors import TildekitError
from tildekit.models.effects.pairs import PairSet, dry_segment
from tildekit.models.effects.recorded import lag_of, preprocess_pairs
from tildekit.models.effects.reference import OVERDRIVE

RATE = 48000


def write_pair(folder: Path, name: str, gain: float, seconds: float = 1.0, lag: int = 0, seed: int = 0,
               wet_rate: int = RATE, wet_channels: int = 1, wet_extra: int = 0,
               wet_scale: float = 1.0) -> tuple[str, str]:
    rng = np.random.default_rng(seed)
    length = int(seconds * RATE)
    # broadband (a noise burst with the generated notes), as recordings are: a delay is defined
    burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (0.05 * RATE))
    dry = dry_segment(rng, length, RATE) + 0.1 * burst
    dry = (0.8 * dry / np.abs(dry).max()).astype(np.float32)
    wet = OVERDRIVE(dry, RATE, {"gain": gain, "tone": 3000.0, "level": -6.0}) * wet_scale
    wet = np.concatenate([np.zeros(lag, np.float32), wet])[:len(wet)] if lag > 0 else wet
    wet = np.concatenate([wet, np.zeros(wet_extra, np.float32)])
    (folder / "dry").mkdir(parents=True, exist_ok=True)
    (folder / "wet").mkdir(parents=True, exist_ok=True)
    sf.write(folder / "dry" / f"{name}.wav", dry, RATE, subtype="FLOAT")
    sf.write(folder / "wet" / f"{name}.wav", np.stack([wet] * wet_channels, 1) if wet_channels > 1 else wet,
             wet_rate, subtype="FLOAT")
    return f"dry/{name}.wav", f"wet/{name}.wav"


def yaml_table(folder: Path, rows: list[str]) -> None:
    (folder / "pairs.yaml").write_text(
        "effect: pedal\nknobs:\n  - {name: gain, min: 0, max: 36, default: 18, unit: dB}\n"
        "  - {name: tone, min: 800, max: 8000, default: 3000}\npairs:\n" + "".join(f"  - {r}\n" for r in rows))


def test_good_pairs_make_a_pair_set_the_trainer_reads(tmp_path: Path) -> None:
    folder = tmp_path / "recorded"
    rows = []
    for i, gain in enumerate((6.0, 18.0, 30.0)):
        dry, wet = write_pair(folder, f"take{i}", gain, seconds=1.3, lag=1 if i == 1 else 0, seed=i)
        rows.append(f"{{dry: {dry}, wet: {wet}, gain: {gain}, tone: 3000}}")
    yaml_table(folder, rows)
    result = CliRunner().invoke(cli, ["preprocess-pairs", str(folder), str(tmp_path / "set"),
                                      "--segment-seconds", "0.5"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "6 segments" in result.output
    pairs = PairSet.load(tmp_path / "set")
    assert pairs.dry.shape == (6, RATE // 2) and pairs.sample_rate == RATE
    assert [k.name for k in pairs.knobs] == ["gain", "tone"] and pairs.knobs[0].unit == "dB"
    np.testing.assert_allclose(pairs.values[:, 0], [6, 6, 18, 18, 30, 30])
    source, _ = sf.read(folder / "dry" / "take0.wav", dtype="float32")
    np.testing.assert_allclose(pairs.dry[0], source[:RATE // 2])
    assert PairSet.is_pair_set(tmp_path / "set")
    # the 1-sample lag (within the tolerance) is reported, not fixed
    line = [x for x in result.output.splitlines() if "take1" in x][0]
    assert line.split()[2] == "1"


def test_csv_table_ranges_from_its_columns(tmp_path: Path) -> None:
    folder = tmp_path / "recorded"
    lines = ["dry,wet,gain"]
    for i, gain in enumerate((3.0, 12.0)):
        dry, wet = write_pair(folder, f"t{i}", gain, seed=i)
        lines.append(f"{dry},{wet},{gain}")
    (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
    report = preprocess_pairs(folder, tmp_path / "set", segment_seconds=1.0)
    assert [(k.minimum, k.maximum) for k in report.knobs] == [(3.0, 12.0)]
    assert len(PairSet.load(tmp_path / "set")) == 2


def test_lag_is_measured_and_fixed_on_request(tmp_path: Path) -> None:
    folder = tmp_path / "recorded"
    dry, wet = write_pair(folder, "late", 18.0, lag=48)
    yaml_table(folder, [f"{{dry: {dry}, wet: {wet}, gain: 18, tone: 3000}}"])
    lines: list[str] = []
    with pytest.raises(TildekitError, match="nothing was written"):
        preprocess_pairs(folder, tmp_path / "set", segment_seconds=0.5, echo=lines.append)
    assert len(lines) == 1 and "lags the dry one by 48 samples" in lines[0] and "--fix-lag" in lines[0]
    assert not (tmp_path / "set").exists()
    report = preprocess_pairs(folder, tmp_path / "set", segment_seconds=0.5, fix_lag=True)
    assert report.checks[0].lag == 48
    pairs = PairSet.load(tmp_path / "set")
    assert abs(lag_of(pairs.dry[0], pairs.wet[0], 200)) <= 1  # aligned now


def test_every_bad_pair_gets_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    folder = tmp_path / "recorded"
    good = write_pair(folder, "good", 18.0)
    rate = write_pair(folder, "rate", 18.0, wet_rate=44100)
    channels = write_pair(folder, "channels", 18.0, wet_channels=2)
    length = write_pair(folder, "length", 18.0, wet_extra=10)
    silent = write_pair(folder, "silent", 18.0, wet_scale=0.0)
    clipped = write_pair(folder, "clipped", 36.0, wet_scale=8.0)
    sf.write(folder / "dry" / "clipped.wav", np.clip(sf.read(folder / "dry" / "clipped.wav")[0], -1, 1), RATE)
    clip_wet, _ = sf.read(folder / "wet" / "clipped.wav", dtype="float32")
    sf.write(folder / "wet" / "clipped.wav", np.clip(clip_wet, -1, 1), RATE, subtype="FLOAT")
    (folder / "notes.txt").write_text("not audio")
    rows = [
        f"{{dry: {good[0]}, wet: {good[1]}, gain: 18, tone: 3000}}",                  # 1 fine
        f"{{dry: {good[0]}, wet: wet/missing.wav, gain: 18, tone: 3000}}",            # 2 missing
        f"{{dry: ../outside.wav, wet: {good[1]}, gain: 18, tone: 3000}}",             # 3 outside
        f"{{dry: {good[0]}, wet: {good[1]}, gain: 99, tone: 3000}}",                  # 4 out of range
        f"{{dry: {good[0]}, wet: {good[1]}, gain: loud, tone: 3000}}",                # 5 not a number
        f"{{dry: {good[0]}, wet: {good[1]}, gain: 18}}",                              # 6 knob missing
        f"{{dry: {rate[0]}, wet: {rate[1]}, gain: 18, tone: 3000}}",                  # 7 rates
        f"{{dry: {channels[0]}, wet: {channels[1]}, gain: 18, tone: 3000}}",          # 8 channels
        f"{{dry: {length[0]}, wet: {length[1]}, gain: 18, tone: 3000}}",              # 9 lengths
        f"{{dry: {silent[0]}, wet: {silent[1]}, gain: 18, tone: 3000}}",              # 10 silent
        f"{{dry: {clipped[0]}, wet: {clipped[1]}, gain: 18, tone: 3000}}",            # 11 clipped
        f"{{dry: notes.txt, wet: {good[1]}, gain: 18, tone: 3000}}",                  # 12 not audio
    ]
    yaml_table(folder, rows)
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "mine.txt").write_text("keep")  # a folder not made here: never touched
    lines: list[str] = []
    with pytest.raises(TildekitError, match="11 problem"):
        preprocess_pairs(folder, tmp_path / "out", segment_seconds=0.5, echo=lines.append)
    assert len(lines) == 11, "\n".join(lines)
    expected = {2: "does not exist", 3: "without '..'", 4: "outside its range", 5: "not a number",
                6: "no value for knob 'tone'", 7: "44100 Hz", 8: "channel", 9: "samples", 10: "silent",
                11: "clipped", 12: "not an audio file"}
    for number, words in expected.items():
        hits = [line for line in lines if f"pair {number}:" in line or f"pair {number} " in line]
        assert len(hits) == 1 and words in hits[0], (number, lines)
    assert all("\n" not in line for line in lines)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    with pytest.raises(TildekitError, match="dataset folder"):  # refuses to replace a foreign folder
        yaml_table(folder, rows[:1])
        preprocess_pairs(folder, tmp_path / "set", segment_seconds=0.5)
    assert (tmp_path / "set" / "mine.txt").read_text() == "keep"


@pytest.mark.parametrize("table, words", [
    ("effect: x\nknobs: [{name: 2gain, min: 0, max: 1}]\npairs: []\n", "not an identifier"),
    ("effect: x\nknobs: [{name: g, min: 1, max: 0}]\npairs: []\n", "not below max"),
    ("knobs: 3\n", "expected a mapping"),
    ("{[", "not readable YAML"),
])
def test_bad_tables_are_refused_in_one_line(tmp_path: Path, table: str, words: str) -> None:
    (tmp_path / "pairs.yaml").write_text(table)
    lines: list[str] = []
    with pytest.raises(TildekitError) as error:
        preprocess_pairs(tmp_path, tmp_path / "set", echo=lines.append)
    assert words in " ".join([*lines, str(error.value)])
    assert "\n" not in str(error.value)


def test_no_table(tmp_path: Path) -> None:
    with pytest.raises(TildekitError, match="no pair table"):
        preprocess_pairs(tmp_path, tmp_path / "set")

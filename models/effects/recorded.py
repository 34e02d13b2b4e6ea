"""Recorded dry/wet pairs -> a pair set (``pairs.npz`` + ``pairs.json``, what ``pairs.py``
renders and the effect trainer reads): ``tildekit preprocess-pairs FOLDER DATASET``.

The folder holds the audio files and one table, ``pairs.yaml`` or ``pairs.csv``, naming each
pair's files and knob values::

    # pairs.yaml: knob ranges declared, values outside them refused
    effect: my-pedal
    knobs:
      - {name: gain, min: 0, max: 10, default: 5}
      - {name: tone, min: 0, max: 10, default: 5}
    pairs:
      - {dry: dry/take1.wav, wet: wet/take1-g3-t7.wav, gain: 3, tone: 7}

    # pairs.csv: header dry,wet,<knob>...; each knob's range is the span of its column
    dry,wet,gain,tone
    dry/take1.wav,wet/take1-g3-t7.wav,3,7

Everything in the folder is untrusted. Every problem found is printed on one line (the table
row, the file and what to do), and nothing is written unless there are none:

- names: knob names are identifiers (they become attribute and OSC names); file names are
  relative paths that stay inside the folder and name existing audio files;
- values: finite numbers inside the knob's range, every knob on every row;
- audio: dry and wet of a pair with the same sample rate, channel count (mono, or channels
  that are mixed to mono) and length;
- level: neither file silent (peak below -80 dBFS) nor clipped (runs of samples at full scale);
  the wet/dry level difference is reported;
- alignment: the lag of the wet file behind the dry one, from the peak of their
  cross-correlation; up to ``tolerance`` samples passes, a larger lag is refused, or with
  ``fix_lag`` removed (the wet file is shifted back and both are cut to the overlap).

Pairs are cut into segments of ``segment_seconds`` (the pair set's segments have one length; the
remainder of each pair is dropped and reported). The dataset is built in a hidden sibling folder
and renamed into place when complete (``models/outputs.py``), so a failed run leaves nothing.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import yaml

from tildekit.errors import TildekitError
from tildekit.models import outputs
from tildekit.models.contract.audio import Undecodable, decode, resample
from tildekit.models.effects.pairs import INDEX_FILE, PAIRS_FILE, PAIRS_KIND, PairSet
from tildekit.models.effects.reference import KnobRange
from tildekit.models.preprocess import AUDIO_SUFFIXES, SILENCE_PEAK

TABLES = ("pairs.yaml", "pairs.yml", "pairs.csv")
KNOB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
LAG_WHITENING = 0.8  # see lag_of (0.8 missed the fewest delays on the overdrive's generated pairs)
MAX_LAG_SECONDS = 0.1  # the cross-correlation looks this far either way
CLIP_LEVEL = 0.999  # |x| at or above this counts as full scale...
CLIP_RUN = 4  # ...and this many such samples in a row as clipping
DATASET_FILES = (PAIRS_FILE, INDEX_FILE)
_TEMP_PREFIX = "tmp-"
_OLD_PREFIX = "old-"


@dataclass(frozen=True)
class PairRow:
    number: int  # 1-based row of the table, as a user counts them
    dry: str
    wet: str
    values: tuple[float, ...]


@dataclass
class PairCheck:
    """What the checks found for one pair (printed in the report)."""

    row: PairRow
    seconds: float = 0.0
    lag: int = 0
    level_db: float = 0.0  # wet RMS over dry RMS
    segments: int = 0
    dropped_seconds: float = 0.0


def _db(x: float) -> float:
    return 20 * math.log10(max(x, 1e-12))


# ------------------------------------------------------------------------------ the table


def find_table(folder: Path) -> Path:
    found = [folder / name for name in TABLES if (folder / name).is_file()]
    if not found:
        raise TildekitError(f"{folder}: no pair table: add {' or '.join(TABLES[::2])} naming each pair's "
                            "dry and wet files and knob values (docs/effects.md)")
    if len(found) > 1:
        raise TildekitError(f"{folder}: {' and '.join(p.name for p in found)} both exist: keep one pair table")
    return found[0]


def _number(value: Any, where: str, problems: list[str]) -> float | None:
    if isinstance(value, bool):
        value = None
    try:
        number = float(value)
    except (TypeError, ValueError):
        problems.append(f"{where}: {value!r} is not a number")
        return None
    if not math.isfinite(number):
        problems.append(f"{where}: {value!r} is not a finite number")
        return None
    return number


def _knob_names(names: list[Any], where: str, problems: list[str]) -> bool:
    ok = True
    for name in names:
        if not isinstance(name, str) or not KNOB_NAME.match(name):
            problems.append(f"{where}: knob name {name!r} is not an identifier (letters, digits, '_', "
                            "at most 32, not starting with a digit): rename it")
            ok = False
    if len(set(names)) != len(names):
        problems.append(f"{where}: knob names repeat ({', '.join(map(str, names))}): give each knob its own name")
        ok = False
    if not names:
        problems.append(f"{where}: no knobs: an effect model needs at least one knob column")
        ok = False
    return ok


def read_yaml_table(path: Path, problems: list[str]) -> tuple[str, list[KnobRange], list[PairRow]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TildekitError(f"{path}: not readable YAML ({' '.join(str(exc).split())[:160]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("knobs"), list) or not isinstance(data.get("pairs"), list):
        raise TildekitError(f"{path}: expected a mapping with 'knobs' (a list of name/min/max/default) and "
                            "'pairs' (a list of dry/wet/knob values)")
    effect = str(data.get("effect", path.parent.name))
    knobs: list[KnobRange] = []
    entries = data["knobs"]
    given = [k.get("name") if isinstance(k, dict) else None for k in entries]
    if not _knob_names(given, f"{path} knobs", problems):
        return effect, [], []
    names = [str(name) for name in given]
    for name, entry in zip(names, entries):
        where = f"{path} knob '{name}'"
        low, high = (_number(entry.get(key), f"{where} {key}", problems) for key in ("min", "max"))
        if low is None or high is None:
            continue
        if not low < high:
            problems.append(f"{where}: min {low:g} is not below max {high:g}")
            continue
        default = _number(entry.get("default", (low + high) / 2), f"{where} default", problems)
        if default is None:
            continue
        if not low <= default <= high:
            problems.append(f"{where}: default {default:g} is outside [{low:g}, {high:g}]")
            continue
        knobs.append(KnobRange(name, low, high, default, str(entry.get("unit", ""))))
    if len(knobs) != len(names):
        return effect, [], []
    rows = []
    for number, entry in enumerate(data["pairs"], 1):
        where = f"{path} pair {number}"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected dry, wet and one value per knob")
            continue
        unknown = sorted(set(map(str, entry)) - {"dry", "wet", *names})
        if unknown:
            problems.append(f"{where}: unknown field(s) {', '.join(unknown)} (knobs: {', '.join(names)})")
        row = _row(number, entry, knobs, where, problems)
        if row is not None:
            rows.append(row)
    return effect, knobs, rows


def read_csv_table(path: Path, problems: list[str]) -> tuple[str, list[KnobRange], list[PairRow]]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            table = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TildekitError(f"{path}: not a readable CSV file ({' '.join(str(exc).split())[:160]})") from None
    table = [row for row in table if any(cell.strip() for cell in row)]
    if not table or [c.strip() for c in table[0][:2]] != ["dry", "wet"]:
        raise TildekitError(f"{path}: the header must start with dry,wet then one column per knob")
    names = [c.strip() for c in table[0][2:]]
    if not _knob_names(names, f"{path} header", problems):
        return path.parent.name, [], []
    entries = []
    for number, cells in enumerate(table[1:], 1):
        if len(cells) != len(table[0]):
            problems.append(f"{path} row {number + 1}: {len(cells)} columns, the header has {len(table[0])}")
            continue
        entries.append((number, dict(zip(["dry", "wet", *names], [c.strip() for c in cells]))))
    # ranges: the span of each column (a knob that never moves has no range to learn)
    columns: dict[str, list[float]] = {name: [] for name in names}
    for number, entry in entries:
        for name in names:
            value = _number(entry[name], f"{path} row {number + 1} {name}", problems)
            if value is not None:
                columns[name].append(value)
    knobs = []
    for name, values in columns.items():
        if values and min(values) < max(values):
            low, high = min(values), max(values)
            knobs.append(KnobRange(name, low, high, float(np.median(values))))
        elif values:
            problems.append(f"{path} column {name}: every row has {values[0]:g}: a knob must take at least two "
                            "values (or remove the column)")
    if len(knobs) != len(names) or any(p.startswith(f"{path} row") for p in problems):
        return path.parent.name, [], []
    rows = [r for r in (_row(n, e, knobs, f"{path} row {n + 1}", problems) for n, e in entries) if r is not None]
    return path.parent.name, knobs, rows


def _row(number: int, entry: dict[str, Any], knobs: list[KnobRange], where: str,
         problems: list[str]) -> PairRow | None:
    files = []
    for side in ("dry", "wet"):
        name = entry.get(side)
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}: no {side} file")
            return None
        files.append(name.strip())
    values = []
    for knob in knobs:
        if knob.name not in entry:
            problems.append(f"{where}: no value for knob '{knob.name}'")
            return None
        value = _number(entry[knob.name], f"{where} {knob.name}", problems)
        if value is None:
            return None
        if not knob.minimum <= value <= knob.maximum:
            problems.append(f"{where}: {knob.name} {value:g} is outside its range "
                            f"[{knob.minimum:g}, {knob.maximum:g}]")
            return None
        values.append(value)
    return PairRow(number, files[0], files[1], tuple(values))


def _resolve(folder: Path, name: str, where: str, problems: list[str]) -> Path | None:
    """``name`` as a file inside ``folder``, or None (with the problem) for anything else."""
    relative = PurePosixPath(name.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        problems.append(f"{where}: '{name}' must be a path relative to the folder, without '..'")
        return None
    path = folder / relative
    try:
        inside = path.resolve().is_relative_to(folder.resolve())
    except OSError:
        inside = False
    if not inside:
        problems.append(f"{where}: '{name}' leads outside the folder (a link?): copy the file into it")
        return None
    if not path.is_file():
        problems.append(f"{where}: '{name}' does not exist")
        return None
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        problems.append(f"{where}: '{name}' is not an audio file ({', '.join(AUDIO_SUFFIXES)})")
        return None
    return path


# ------------------------------------------------------------------------------ audio checks


def lag_of(dry: np.ndarray, wet: np.ndarray, max_lag: int) -> int:
    """Samples by which ``wet`` lags ``dry`` (negative: wet leads), from the peak of their
    cross-correlation within ``max_lag`` either way.

    The cross-spectrum is whitened (divided by its magnitude to the power ``LAG_WHITENING``,
    "PHAT-beta"): a plain cross-correlation peaks where the effect's filters put most energy
    (the overdrive's 90 Hz high-pass moved it by 9 samples on an aligned pair); whitening keeps
    the peak at the delay for broadband material. Narrowband material (a lone sine) has no
    single delay to find."""
    n = len(dry) + len(wet)
    size = 1 << (n - 1).bit_length()
    spectrum = np.fft.rfft(wet, size) * np.conj(np.fft.rfft(dry, size))
    corr = np.fft.irfft(spectrum / np.maximum(np.abs(spectrum), 1e-30) ** LAG_WHITENING, size)
    lags = np.concatenate([corr[:max_lag + 1], corr[size - max_lag:]])
    offsets = np.concatenate([np.arange(max_lag + 1), np.arange(-max_lag, 0)])
    return int(offsets[int(np.argmax(np.abs(lags)))])


def clipped(x: np.ndarray) -> bool:
    """Whether a channel of ``x`` (channels, samples) holds ``CLIP_RUN`` samples in a row at full scale."""
    for channel in np.atleast_2d(x):
        full = np.abs(channel) >= CLIP_LEVEL
        if full.sum() < CLIP_RUN:
            continue
        run = np.convolve(full.astype(np.int32), np.ones(CLIP_RUN, dtype=np.int32), mode="valid")
        if (run >= CLIP_RUN).any():
            return True
    return False


def _load_pair(folder: Path, row: PairRow, where: str, sample_rate: int,
               problems: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    audio = []
    for side, name in (("dry", row.dry), ("wet", row.wet)):
        path = _resolve(folder, name, f"{where} {side}", problems)
        if path is None:
            return None
        try:
            samples, rate = decode(path)
        except Undecodable as exc:
            problems.append(f"{where} {side}: '{name}' cannot be decoded ({exc})")
            return None
        audio.append((samples, rate, name))
    (dry, dry_rate, dry_name), (wet, wet_rate, wet_name) = audio
    if dry_rate != wet_rate:
        problems.append(f"{where}: '{dry_name}' is at {dry_rate} Hz, '{wet_name}' at {wet_rate} Hz: record both "
                        "at one rate")
        return None
    if dry.shape[0] != wet.shape[0]:
        problems.append(f"{where}: '{dry_name}' has {dry.shape[0]} channel(s), '{wet_name}' {wet.shape[0]}: "
                        "give both the same channels (mono, or both stereo, mixed to mono)")
        return None
    if dry.shape[1] != wet.shape[1]:
        problems.append(f"{where}: '{dry_name}' has {dry.shape[1]} samples, '{wet_name}' {wet.shape[1]}: "
                        "trim both to the same length (same start, same end)")
        return None
    for samples, name in ((dry, dry_name), (wet, wet_name)):
        if not np.all(np.isfinite(samples)):
            problems.append(f"{where}: '{name}' contains NaN or infinite samples")
            return None
        peak = float(np.abs(samples).max()) if samples.size else 0.0
        if peak < SILENCE_PEAK:
            problems.append(f"{where}: '{name}' is silent (peak {_db(peak):.0f} dBFS, below -80 dBFS)")
            return None
        if clipped(samples):
            problems.append(f"{where}: '{name}' is clipped ({CLIP_RUN}+ samples in a row at full scale): "
                            "record it again with less gain")
            return None
    mono = [resample(x.mean(axis=0, dtype=np.float64).astype(np.float32), dry_rate, sample_rate) for x in (dry, wet)]
    return mono[0], mono[1]


# ------------------------------------------------------------------------------ the command


@dataclass
class PairsReport:
    dataset_dir: Path
    table: Path
    sample_rate: int
    segment_length: int
    checks: list[PairCheck]
    knobs: list[KnobRange]

    def summary(self) -> str:
        lines = [f"{'pair':>5}  {'seconds':>7}  {'lag':>5}  {'wet/dry dB':>10}  {'segments':>8}  files"]
        for c in self.checks:
            lines.append(f"{c.row.number:>5}  {c.seconds:>7.2f}  {c.lag:>5}  {c.level_db:>10.1f}  {c.segments:>8}  "
                         f"{c.row.dry} -> {c.row.wet}")
        segments = sum(c.segments for c in self.checks)
        dropped = sum(c.dropped_seconds for c in self.checks)
        knobs = ", ".join(f"{k.name} [{k.minimum:g}, {k.maximum:g}]" for k in self.knobs)
        lines.append(f"wrote {self.dataset_dir}: {segments} segments of {self.segment_length / self.sample_rate:.2f} s "
                     f"at {self.sample_rate} Hz from {len(self.checks)} pairs ({dropped:.2f} s of remainders "
                     f"dropped); knobs: {knobs}")
        return "\n".join(lines)


def preprocess_pairs(folder: str | Path, dataset_dir: str | Path, sample_rate: int = 48000,
                     segment_seconds: float = 2.0, tolerance: int = 2, fix_lag: bool = False,
                     echo: Any = print) -> PairsReport:
    """Check the recorded pairs in ``folder`` and write their pair set to ``dataset_dir``."""
    folder, dataset_dir = Path(folder), Path(dataset_dir)
    if not folder.is_dir():
        raise TildekitError(f"{folder}: no such folder")
    if sample_rate < 1 or not segment_seconds > 0 or tolerance < 0:
        raise TildekitError("sample rate, segment seconds must be > 0 and the lag tolerance >= 0")
    table = find_table(folder)
    problems: list[str] = []
    reader = read_csv_table if table.suffix == ".csv" else read_yaml_table
    effect, knobs, rows = reader(table, problems)
    if not rows and not problems:
        problems.append(f"{table}: no pairs listed")
    segment = int(round(segment_seconds * sample_rate))
    max_lag = int(MAX_LAG_SECONDS * sample_rate)
    checks, dry_parts, wet_parts, value_parts = [], [], [], []
    for row in rows:
        where = f"{table.name} pair {row.number}"
        loaded = _load_pair(folder, row, where, sample_rate, problems)
        if loaded is None:
            continue
        dry, wet = loaded
        check = PairCheck(row, seconds=len(dry) / sample_rate)
        check.lag = lag_of(dry, wet, min(max_lag, len(dry) - 1))
        if abs(check.lag) > tolerance:
            if not fix_lag:
                problems.append(f"{where}: the wet file lags the dry one by {check.lag} samples "
                                f"({1000 * check.lag / sample_rate:.1f} ms, more than {tolerance}): align them, "
                                "or pass --fix-lag to shift the wet file back")
                continue
            dry, wet = (dry[:len(dry) - check.lag], wet[check.lag:]) if check.lag > 0 else \
                (dry[-check.lag:], wet[:len(wet) + check.lag])
        check.level_db = _db(float(np.sqrt(np.mean(wet.astype(np.float64) ** 2)))) \
            - _db(float(np.sqrt(np.mean(dry.astype(np.float64) ** 2))))
        check.segments = len(dry) // segment
        if check.segments == 0:
            problems.append(f"{where}: {len(dry) / sample_rate:.2f} s is shorter than one segment "
                            f"({segment_seconds:g} s): record longer or pass a shorter --segment-seconds")
            continue
        check.dropped_seconds = (len(dry) - check.segments * segment) / sample_rate
        cut = check.segments * segment
        dry_parts.append(dry[:cut].reshape(check.segments, segment))
        wet_parts.append(wet[:cut].reshape(check.segments, segment))
        value_parts.append(np.tile(np.asarray(row.values, dtype=np.float32), (check.segments, 1)))
        checks.append(check)
    if problems:
        for line in problems:
            echo(line)
        raise TildekitError(f"{len(problems)} problem(s) in {folder} (listed above): nothing was written")
    pairs = PairSet(effect, sample_rate, tuple(knobs), np.concatenate(dry_parts).astype(np.float32),
                    np.concatenate(wet_parts).astype(np.float32), np.concatenate(value_parts))
    _write(pairs, dataset_dir)
    return PairsReport(dataset_dir, table, sample_rate, segment, checks, knobs)


def _write(pairs: PairSet, dataset_dir: Path) -> None:
    """Build in a hidden sibling, then swap in: never a half-written pair set."""
    outputs.check_replaceable(dataset_dir, PAIRS_KIND, DATASET_FILES, "dataset folder")
    build = outputs.build_dir(dataset_dir, PAIRS_KIND, _TEMP_PREFIX)
    try:
        pairs.save(build)
        outputs.finish_build(build, PAIRS_KIND)
        outputs.check_replaceable(dataset_dir, PAIRS_KIND, DATASET_FILES, "dataset folder")
        outputs.swap_in(build, dataset_dir, PAIRS_KIND, _OLD_PREFIX)
    except OSError as exc:
        raise outputs.write_error(dataset_dir.parent, exc, "dataset folder") from None
    finally:
        outputs.remove_owned(build, PAIRS_KIND)

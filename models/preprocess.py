"""Turn a folder of audio files into a training dataset: one float32 memmap plus an index.

The dataset folder holds two files:

- ``audio.f32``: every kept file's samples, resampled and with the requested channel count,
  concatenated; raw float32, layout ``(channels, total_samples)`` in C order (all of channel 0,
  then all of channel 1, ...), readable with ``np.memmap``.
- ``index.json``: the format version, sample rate, channels, total samples, where each kept
  file starts and how long it is, which files were skipped and why, and a fingerprint of the
  input files and parameters.

The fingerprint makes the job idempotent: re-running on unchanged input with the same
parameters does nothing. A dataset is built in a temporary sibling folder and renamed into
place only when complete, so an interrupted run never leaves a half-written dataset and keeps
the previous one intact. The folder also holds tildekit's marker file (``models/outputs.py``):
only a folder with that marker, holding nothing but these files, is ever replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tildekit.errors import TildekitError
from tildekit.models import outputs
from tildekit.models.contract.audio import RESAMPLER, Undecodable, adapt_channels, decode, resample

# Bump when the layout changes in a way an older reader would misread (see dataset.py).
FORMAT_VERSION = 1
FORMAT_NAME = "tildekit-dataset"
INDEX_FILE = "index.json"
DATA_FILE = "audio.f32"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
# -80 dBFS: below this a file is treated as silence (digital silence, or dither at most).
SILENCE_PEAK = 1e-4

DATASET_KIND = "dataset"  # the marker's kind (models/outputs.py)
DATASET_FILES = (INDEX_FILE, DATA_FILE)  # everything a dataset folder holds besides the marker
_TEMP_PREFIX = "tmp-"  # temporary siblings are named ".<dataset name>.tmp-XXXX"
_OLD_PREFIX = "old-"


@dataclass(frozen=True)
class KeptFile:
    path: str  # relative to the input folder, with '/' separators
    start: int  # first sample in the dataset
    length: int  # samples after resampling
    source_sample_rate: int
    source_channels: int


@dataclass(frozen=True)
class SkippedFile:
    path: str
    kind: str  # undecodable | silent | too_short | not_finite
    reason: str


@dataclass
class PreprocessReport:
    """What a preprocess run did (or found already done)."""

    input_dir: Path
    dataset_dir: Path
    sample_rate: int
    channels: int
    min_samples: int
    total_samples: int
    kept: list[KeptFile] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    up_to_date: bool = False  # True when the existing dataset matched and nothing was written

    @property
    def seconds(self) -> float:
        return self.total_samples / self.sample_rate

    def summary(self) -> str:
        layout = "mono" if self.channels == 1 else f"{self.channels} channels"
        if self.up_to_date:
            head = f"Dataset {self.dataset_dir} is up to date with {self.input_dir} (nothing to do)."
        else:
            head = f"Wrote dataset {self.dataset_dir} from {self.input_dir}."
        lines = [
            head,
            f"  kept    {len(self.kept)} file(s), {_format_duration(self.seconds)} of audio "
            f"at {self.sample_rate} Hz, {layout}",
        ]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} file(s):")
            lines.extend(f"    {item.path}: {item.reason}" for item in self.skipped)
        else:
            lines.append("  skipped 0 files")
        return "\n".join(lines)


def _format_duration(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60.0)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours} h {minutes:02d} min {rest:04.1f} s"
    if minutes:
        return f"{minutes} min {rest:04.1f} s"
    return f"{rest:.2f} s"


# ----------------------------------------------------------------------------- finding input


def find_audio_files(input_dir: Path, exclude: Path | None = None) -> list[Path]:
    """Audio files under ``input_dir`` (recursively), sorted by relative path.

    Hidden files and folders (``.``-prefixed, e.g. macOS ``._name.wav`` resource forks) are
    ignored, as is ``exclude`` (the dataset folder, should it sit inside the input).
    """
    found: list[Path] = []
    excluded = exclude.resolve() if exclude is not None else None
    for root, dirs, files in os.walk(input_dir):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and (excluded is None or (root_path / d).resolve() != excluded))
        for name in files:
            if not name.startswith(".") and name.lower().endswith(AUDIO_SUFFIXES):
                found.append(root_path / name)
    return sorted(found, key=lambda p: p.relative_to(input_dir).as_posix())


def fingerprint(input_dir: Path, files: list[Path], params: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A digest of (relative path, size, mtime_ns) for every file plus the parameters."""
    inputs = []
    for path in files:
        try:
            stat = path.stat()
            size, mtime_ns = stat.st_size, stat.st_mtime_ns
        except OSError:  # a dangling symlink, say: decoding will skip it with the reason
            size, mtime_ns = -1, 0
        inputs.append({"path": path.relative_to(input_dir).as_posix(), "size": size,
                       "mtime_ns": mtime_ns})
    blob = json.dumps({"params": params, "inputs": inputs}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest(), inputs


# ----------------------------------------------------------------------------- decoding


def load_for_dataset(path: Path, sample_rate: int, channels: int) -> tuple[np.ndarray, int, int]:
    """Decode, fix the channel count and resample: ``(audio, source_rate, source_channels)``.

    This is exactly what the dataset stores for ``path`` (tests compare against it): the one
    sound-file policy of models/contract/audio.py.
    """
    audio, rate = decode(path)
    return resample(adapt_channels(audio, channels), rate, sample_rate), rate, audio.shape[0]


def read_audio(path: str | Path, sample_rate: int, channels: int) -> np.ndarray:
    """One file as a dataset would hold it, ``(channels, samples)`` float32 at ``sample_rate``.

    For tools that take single files (``tildekit eval``): the dataset's decoding, channel and
    resampling policy, with a TildekitError naming the file when it is missing or unusable.
    """
    path = Path(path)
    if not path.is_file():
        raise TildekitError(f"{path}: no such file")
    try:
        audio, _, _ = load_for_dataset(path, sample_rate, channels)
    except Undecodable as exc:
        raise TildekitError(f"{path}: not a readable sound file ({exc})") from None
    problem = _why_unusable(audio, sample_rate, 1)
    if problem is not None:
        raise TildekitError(f"{path}: {problem[1]}")
    return audio


# ----------------------------------------------------------------------------- writing


def _remove_stale_builds(dataset_dir: Path) -> None:
    """Delete marked temporary siblings left by runs that were killed outright (no cleanup ran)."""
    for candidate in outputs.stale_builds(dataset_dir, DATASET_KIND, _TEMP_PREFIX, outputs.pid_alive):
        outputs.remove_owned(candidate, DATASET_KIND)
    for candidate in outputs.stale_builds(dataset_dir, DATASET_KIND, _OLD_PREFIX, lambda pid: False):
        # A run killed between its two renames left the old dataset here: put it back.
        if not dataset_dir.exists() and (candidate / INDEX_FILE).exists():
            candidate.rename(dataset_dir)
        else:
            outputs.remove_owned(candidate, DATASET_KIND)


def _read_index(dataset_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((dataset_dir / INDEX_FILE).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(dataset_dir: Path, index: dict[str, Any]) -> bool:
    data = dataset_dir / DATA_FILE
    try:
        expected = int(index["channels"]) * int(index["total_samples"]) * 4
        return data.stat().st_size == expected
    except (OSError, KeyError, TypeError, ValueError):
        return False


def _check_paths(input_dir: Path, dataset_dir: Path) -> None:
    if not input_dir.exists():
        raise TildekitError(f"input folder '{input_dir}' does not exist: give the folder that "
                            "holds your audio files")
    if not input_dir.is_dir():
        raise TildekitError(f"input '{input_dir}' is not a folder: give the folder that holds "
                            "your audio files")
    source, target = input_dir.resolve(), dataset_dir.resolve()
    if source == target or source.is_relative_to(target):
        raise TildekitError(f"dataset folder '{dataset_dir}' would replace the input folder "
                            f"'{input_dir}': choose a different dataset folder")
    # Never replace a folder that is not ours: it may hold the user's own files.
    outputs.check_replaceable(dataset_dir, DATASET_KIND, DATASET_FILES, "dataset folder")


def _no_audio_message(input_dir: Path, found: int, skipped: list[SkippedFile]) -> str:
    if found == 0:
        return (f"no audio files in '{input_dir}' (looked recursively for "
                f"{', '.join(AUDIO_SUFFIXES)}): point to a folder of recordings")
    shown = "; ".join(f"{item.path}: {item.reason}" for item in skipped[:5])
    more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return (f"no usable audio in '{input_dir}': all {found} file(s) were skipped ({shown}{more})")


def preprocess(input_dir: str | Path, dataset_dir: str | Path, sample_rate: int,
               channels: int = 1, min_samples: int = 1, progress: bool = True) -> PreprocessReport:
    """Build (or confirm up to date) the dataset at ``dataset_dir`` from ``input_dir``.

    Files that cannot be decoded, are silent, or are shorter than ``min_samples`` after
    resampling are skipped and listed in the report. Raises ``TildekitError`` when the input
    folder is missing or no usable audio is left.
    """
    from tqdm import tqdm

    input_dir, dataset_dir = Path(input_dir), Path(dataset_dir)
    if sample_rate < 1:
        raise TildekitError(f"sample rate must be a positive number of Hz, got {sample_rate}")
    if channels < 1:
        raise TildekitError(f"channels must be >= 1, got {channels}")
    min_samples = max(1, int(min_samples))
    _check_paths(input_dir, dataset_dir)

    files = find_audio_files(input_dir, exclude=dataset_dir)
    if not files:
        raise TildekitError(_no_audio_message(input_dir, 0, []))
    params = {"format_version": FORMAT_VERSION, "sample_rate": sample_rate, "channels": channels,
              "min_samples": min_samples, "resampler": RESAMPLER, "silence_peak": SILENCE_PEAK}
    digest, inputs = fingerprint(input_dir, files, params)
    report = PreprocessReport(input_dir=input_dir, dataset_dir=dataset_dir,
                              sample_rate=sample_rate, channels=channels,
                              min_samples=min_samples, total_samples=0)

    _remove_stale_builds(dataset_dir)
    existing = _read_index(dataset_dir)
    if existing is not None and existing.get("fingerprint") == digest \
            and _is_complete(dataset_dir, existing):
        report.up_to_date = True
        report.total_samples = int(existing["total_samples"])
        report.kept = [KeptFile(**entry) for entry in existing["files"]]
        report.skipped = [SkippedFile(**entry) for entry in existing["skipped"]]
        return report

    build = outputs.build_dir(dataset_dir, DATASET_KIND, _TEMP_PREFIX)
    try:
        _build(input_dir, files, build, report, progress, tqdm)
        if not report.kept:
            raise TildekitError(_no_audio_message(input_dir, len(files), report.skipped))
        index = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "sample_rate": sample_rate,
            "channels": channels,
            "total_samples": report.total_samples,
            "dtype": "float32",
            "layout": "channels, samples (C order)",
            "data_file": DATA_FILE,
            "files": [asdict(item) for item in report.kept],
            "skipped": [asdict(item) for item in report.skipped],
            "fingerprint": digest,
            "params": params,
            "inputs": inputs,
            "input_dir": str(input_dir.resolve()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (build / INDEX_FILE).write_text(json.dumps(index, indent=1))
        outputs.finish_build(build, DATASET_KIND)
        # The folder may have changed while we decoded: check again right before replacing it.
        outputs.check_replaceable(dataset_dir, DATASET_KIND, DATASET_FILES, "dataset folder")
        outputs.swap_in(build, dataset_dir, DATASET_KIND, _OLD_PREFIX)
    except OSError as exc:
        raise outputs.write_error(dataset_dir.parent, exc, "dataset folder") from None
    finally:
        # Any failure, including Ctrl-C, drops the partial build and keeps the old dataset.
        outputs.remove_owned(build, DATASET_KIND)
    return report


def _build(input_dir: Path, files: list[Path], build: Path, report: PreprocessReport,
           progress: bool, tqdm: Any) -> None:
    """Decode every file into per-channel streams in ``build``, then join them."""
    channels, sample_rate = report.channels, report.sample_rate
    streams = [build / f"channel{c}.f32" for c in range(channels)]
    handles = [open(path, "wb") for path in streams]
    try:
        bar = tqdm(files, desc="preprocess", unit="file", disable=not progress, leave=False)
        for path in bar:
            relative = path.relative_to(input_dir).as_posix()
            bar.set_postfix_str(relative[-40:], refresh=False)
            try:
                audio, source_rate, source_channels = load_for_dataset(path, sample_rate, channels)
            except Undecodable as exc:
                report.skipped.append(SkippedFile(relative, "undecodable", f"cannot decode ({exc})"))
                continue
            skip = _why_unusable(audio, sample_rate, report.min_samples)
            if skip is not None:
                report.skipped.append(SkippedFile(relative, *skip))
                continue
            for c, handle in enumerate(handles):
                handle.write(audio[c].tobytes())
            length = audio.shape[1]
            report.kept.append(KeptFile(relative, report.total_samples, length, source_rate,
                                        source_channels))
            report.total_samples += length
        bar.close()
    finally:
        for handle in handles:
            handle.close()
    # Channel-major layout is the channel streams one after the other.
    data = build / DATA_FILE
    if channels == 1:
        streams[0].rename(data)
        return
    with open(data, "wb") as out:
        for stream in streams:
            with open(stream, "rb") as source:
                shutil.copyfileobj(source, out, 16 << 20)
            stream.unlink()


def _why_unusable(audio: np.ndarray, sample_rate: int, min_samples: int) -> tuple[str, str] | None:
    length = audio.shape[1]
    if length == 0:
        return "too_short", "empty (no samples)"
    if not np.all(np.isfinite(audio)):
        return "not_finite", "contains NaN or infinite samples"
    peak = float(np.max(np.abs(audio)))
    if peak < SILENCE_PEAK:
        level = "-inf" if peak == 0 else f"{20 * np.log10(peak):.0f}"
        return "silent", f"silent (peak {level} dBFS, below -80 dBFS)"
    if length < min_samples:
        return "too_short", (f"too short: {length / sample_rate:.2f} s, shorter than one "
                             f"training window ({min_samples / sample_rate:.2f} s)")
    return None

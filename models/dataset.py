"""Reading a preprocessed dataset: the memmap, a train/validation split and window samplers.

``AudioDataset`` opens what ``tildekit preprocess`` wrote (see preprocess.py for the layout).
Training draws windows with ``RandomWindows``, whose item ``i`` depends only on ``(seed, i)``,
so a resumed run that skips to the same item index replays the same stream; validation walks
fixed, non-overlapping windows with ``SequentialWindows``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tildekit.errors import TildekitError
from tildekit.models.preprocess import DATA_FILE, FORMAT_NAME, FORMAT_VERSION, INDEX_FILE

_MAKE_ONE = "create one with `tildekit preprocess AUDIO_FOLDER DATASET_FOLDER`"


@dataclass(frozen=True)
class FileEntry:
    """One kept input file: where its samples sit in the dataset."""

    path: str  # relative to the input folder
    start: int
    length: int


@dataclass(frozen=True)
class Segment:
    """A contiguous run of samples inside one file, ``[start, start + length)`` in the dataset."""

    file: int  # index into AudioDataset.files
    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


class AudioDataset:
    """A preprocessed dataset: ``data`` is a read-only ``(channels, total_samples)`` memmap."""

    def __init__(self, dataset_dir: str | Path) -> None:
        self.path = Path(dataset_dir)
        self.index = _read_index(self.path)
        self.sample_rate = int(self.index["sample_rate"])
        self.channels = int(self.index["channels"])
        self.total_samples = int(self.index["total_samples"])
        self.files = [FileEntry(str(f["path"]), int(f["start"]), int(f["length"]))
                      for f in self.index["files"]]
        self.skipped: list[dict[str, Any]] = list(self.index.get("skipped", []))
        self._check_consistent()
        self._data: np.memmap | None = None

    # The memmap is opened lazily and not pickled, so DataLoader workers started with
    # 'spawn' reopen the file instead of receiving a copy of the whole dataset.
    @property
    def data(self) -> np.memmap:
        if self._data is None:
            self._data = np.memmap(self.path / DATA_FILE, dtype=np.float32, mode="r",
                                   shape=(self.channels, self.total_samples), order="C")
        return self._data

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_data"] = None
        return state

    @property
    def seconds(self) -> float:
        return self.total_samples / self.sample_rate

    def read(self, start: int, length: int) -> np.ndarray:
        """A float32 copy of ``(channels, length)`` samples starting at ``start``."""
        if start < 0 or length < 0 or start + length > self.total_samples:
            raise IndexError(f"samples [{start}, {start + length}) outside the dataset "
                             f"(0..{self.total_samples})")
        return np.array(self.data[:, start:start + length], dtype=np.float32)

    def segments(self) -> list[Segment]:
        """Every file as one segment."""
        return [Segment(i, f.start, f.length) for i, f in enumerate(self.files)]

    def split(self, validation_fraction: float, seed: int = 0) -> tuple[list[Segment], list[Segment]]:
        """Deterministic ``(train, validation)`` segments holding about ``validation_fraction``.

        With enough files (at least ``1 / validation_fraction``, and never all of them) whole
        files are held out, picked in a seeded random order, so validation audio is unseen
        material; otherwise the last ``validation_fraction`` of every file is held out.
        """
        if not 0.0 <= validation_fraction < 1.0:
            raise TildekitError(f"validation fraction must be in [0, 1), got {validation_fraction}")
        everything = self.segments()
        if validation_fraction == 0.0:
            return everything, []
        held = self._hold_out_files(validation_fraction, seed)
        if held:
            train = [s for s in everything if s.file not in held]
            validation = [s for s in everything if s.file in held]
            return train, validation
        train, validation = [], []
        for segment in everything:
            tail = min(segment.length - 1, int(round(segment.length * validation_fraction)))
            if tail <= 0:
                train.append(segment)
                continue
            head = segment.length - tail
            train.append(Segment(segment.file, segment.start, head))
            validation.append(Segment(segment.file, segment.start + head, tail))
        return train, validation

    def _hold_out_files(self, fraction: float, seed: int) -> set[int]:
        count = len(self.files)
        if count < 2 or count < math.ceil(1.0 / fraction):
            return set()
        target = fraction * self.total_samples
        held: set[int] = set()
        held_samples = 0
        for i in np.random.default_rng(seed).permutation(count):
            length = self.files[int(i)].length
            # Skip files that would overshoot the target by far (one huge file, say).
            if held_samples + length > 2.0 * target:
                continue
            held.add(int(i))
            held_samples += length
            if held_samples >= target or len(held) == count - 1:
                break
        return held

    def __repr__(self) -> str:
        return (f"AudioDataset('{self.path}', {len(self.files)} files, {self.seconds:.1f} s, "
                f"{self.sample_rate} Hz, {self.channels} ch)")

    def _check_consistent(self) -> None:
        where = f"dataset '{self.path}'"
        if self.sample_rate < 1 or self.channels < 1 or self.total_samples < 1:
            raise TildekitError(f"{where} is empty or its index is damaged: re-run "
                                "`tildekit preprocess` to rebuild it")
        position = 0
        for entry in self.files:
            if entry.start != position or entry.length < 1:
                raise TildekitError(f"{where}: index entry for '{entry.path}' is inconsistent: "
                                    "re-run `tildekit preprocess` to rebuild it")
            position += entry.length
        if position != self.total_samples:
            raise TildekitError(f"{where}: files add up to {position} samples, index says "
                                f"{self.total_samples}: re-run `tildekit preprocess`")
        data = self.path / DATA_FILE
        if not data.is_file():
            raise TildekitError(f"{where} has no {DATA_FILE}: re-run `tildekit preprocess`")
        expected = self.channels * self.total_samples * 4
        actual = data.stat().st_size
        if actual != expected:
            raise TildekitError(f"{where}: {DATA_FILE} is {actual} bytes, the index expects "
                                f"{expected} (truncated or replaced?): re-run `tildekit preprocess`")


def _read_index(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise TildekitError(f"dataset folder '{path}' does not exist: {_MAKE_ONE}")
    index_file = path / INDEX_FILE
    if not index_file.is_file():
        raise TildekitError(f"'{path}' is not a tildekit dataset (no {INDEX_FILE}): {_MAKE_ONE}")
    try:
        index = json.loads(index_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TildekitError(f"'{index_file}' is not readable JSON ({exc}): re-run "
                            "`tildekit preprocess` to rebuild the dataset") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT_NAME:
        raise TildekitError(f"'{path}' is not a tildekit dataset ({INDEX_FILE} has no "
                            f"'format: {FORMAT_NAME}'): {_MAKE_ONE}")
    version = index.get("version")
    if not isinstance(version, int) or version < 1:
        raise TildekitError(f"'{index_file}' has no valid version: re-run `tildekit preprocess`")
    if version > FORMAT_VERSION:
        raise TildekitError(f"dataset '{path}' was written by a newer tildekit (format version "
                            f"{version}, this one reads up to {FORMAT_VERSION}): upgrade "
                            "tildekit or re-run `tildekit preprocess` with this version")
    missing = [k for k in ("sample_rate", "channels", "total_samples", "files") if k not in index]
    if missing:
        raise TildekitError(f"'{index_file}' lacks {', '.join(missing)}: re-run "
                            "`tildekit preprocess`")
    return index


def _usable(segments: Sequence[Segment], window: int) -> list[Segment]:
    if window < 1:
        raise TildekitError(f"window must be >= 1 sample, got {window}")
    return [s for s in segments if s.length >= window]


class RandomWindows(Dataset):
    """``length`` windows of ``window`` samples, drawn uniformly over every valid position.

    A segment is picked with probability proportional to its number of window positions
    (``length - window + 1``), so longer material is seen more. Item ``i`` is a pure function
    of ``(seed, i)``: any worker, in any order, after any resume, yields the same tensor.
    """

    def __init__(self, dataset: AudioDataset, segments: Sequence[Segment], window: int,
                 length: int, seed: int = 0) -> None:
        self.dataset = dataset
        self.window = int(window)
        self.length = int(length)
        self.seed = int(seed)
        self.segments = _usable(segments, self.window)
        if not self.segments:
            longest = max((s.length for s in segments), default=0)
            raise TildekitError(
                f"no audio segment in '{dataset.path}' is as long as one training window "
                f"({self.window} samples = {self.window / dataset.sample_rate:.2f} s; longest is "
                f"{longest / dataset.sample_rate:.2f} s): add longer files or use a smaller window")
        positions = np.array([s.length - self.window + 1 for s in self.segments], dtype=np.int64)
        self._cumulative = np.cumsum(positions)

    def __len__(self) -> int:
        return self.length

    def start_of(self, i: int) -> int:
        """The dataset sample where window ``i`` starts."""
        if not 0 <= i < self.length:
            raise IndexError(f"window {i} out of range (0..{self.length - 1})")
        rng = np.random.default_rng([self.seed, i])
        draw = int(rng.integers(int(self._cumulative[-1])))
        k = int(np.searchsorted(self._cumulative, draw, side="right"))
        before = int(self._cumulative[k - 1]) if k else 0
        return self.segments[k].start + (draw - before)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.dataset.read(self.start_of(i), self.window))


class SequentialWindows(Dataset):
    """Non-overlapping windows laid end to end inside each segment (a partial tail is dropped)."""

    def __init__(self, dataset: AudioDataset, segments: Sequence[Segment], window: int) -> None:
        self.dataset = dataset
        self.window = int(window)
        self.starts = [s.start + k * self.window for s in _usable(segments, self.window)
                       for k in range(s.length // self.window)]

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < len(self.starts):
            raise IndexError(f"window {i} out of range (0..{len(self.starts) - 1})")
        return torch.from_numpy(self.dataset.read(self.starts[i], self.window))

"""Dry/wet pair sets: generated dry audio, rendered through a reference effect with random
knob settings per segment, and the training windows cut from them.

Each segment is rendered alone from rest, with one knob setting, so a window that starts at a
segment's first sample sees the same (empty) history as the effect; a window starting later
gets ``warmup`` samples of context before the samples its loss counts.

Dry audio mixes what such effects meet: plucked strings and strummed chords (additive partials
with per-partial decay), noise bursts (drums, pick noise) and sines with envelopes and glides,
at levels spread over 30 dB so a compressor's threshold and a drive's gain both matter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tildekit.models.contract.atomic import atomic_write_text
from tildekit.models.effects.reference import EFFECTS, KnobRange, ReferenceEffect

PAIRS_FILE = "pairs.npz"
INDEX_FILE = "pairs.json"
PAIRS_KIND = "effect-pairs"


def _envelope(length: int, attack: int, decay_s: float, sample_rate: int) -> np.ndarray:
    t = np.arange(length)
    rise = np.minimum(1.0, (t + 1) / max(1, attack))
    return rise * np.exp(-t / (decay_s * sample_rate))


def _pluck(rng: np.random.Generator, f0: float, length: int, sample_rate: int) -> np.ndarray:
    t = np.arange(length) / sample_rate
    out = np.zeros(length)
    decay = rng.uniform(0.4, 2.0)
    for h in range(1, 40):
        f = f0 * h * math.sqrt(1 + 1e-4 * h * h)  # slightly stiff string: stretched partials
        if f > 0.45 * sample_rate:
            break
        amplitude = h ** -1.1 * (0.6 + 0.4 * math.sin(math.pi * h * rng.uniform(0.1, 0.3)))
        out += amplitude * np.sin(2 * math.pi * f * t + rng.uniform(0, 2 * math.pi)) * np.exp(-t * h / decay)
    return out * _envelope(length, int(0.002 * sample_rate), 10.0, sample_rate)


def dry_segment(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
    """One segment of generated dry audio, peak between -30 and -1 dBFS."""
    out = np.zeros(length)
    events = rng.integers(1, 5)
    for _ in range(events):
        start = int(rng.integers(0, max(1, length * 3 // 4)))
        span = length - start
        kind = rng.choice(["pluck", "chord", "noise", "sine"], p=[0.3, 0.3, 0.2, 0.2])
        level = 10 ** (rng.uniform(-24, 0) / 20)
        if kind == "pluck":
            sound = _pluck(rng, 82.4 * 2 ** (rng.integers(0, 30) / 12), span, sample_rate)
        elif kind == "chord":
            root = 82.4 * 2 ** (rng.integers(0, 12) / 12)
            sound = np.zeros(span)
            for i, step in enumerate((0, 7, 12, 16, 19)[: rng.integers(3, 6)]):
                lag = min(span - 1, int(i * rng.uniform(0.005, 0.03) * sample_rate))
                sound[lag:] += _pluck(rng, root * 2 ** (step / 12), span - lag, sample_rate)
        elif kind == "noise":
            noise = rng.standard_normal(span)
            pole = rng.uniform(0.0, 0.95)  # brighter or darker bursts
            from scipy.signal import lfilter

            sound = lfilter([1 - pole], [1, -pole], noise) * _envelope(span, 1, rng.uniform(0.02, 0.3),
                                                                         sample_rate)
        else:
            f = rng.uniform(60, 2000) * np.exp(np.linspace(0, rng.uniform(-0.7, 0.7), span))
            phase = 2 * math.pi * np.cumsum(f) / sample_rate
            sound = np.sin(phase) * _envelope(span, int(rng.uniform(0.001, 0.1) * sample_rate),
                                              rng.uniform(0.1, 2.0), sample_rate)
        peak = np.abs(sound).max()
        if peak > 0:
            out[start:] += level * sound / peak
    peak = np.abs(out).max()
    target = 10 ** (rng.uniform(-30, -1) / 20)
    return (out * (target / peak if peak > 0 else 0.0)).astype(np.float32)


def random_knobs(rng: np.random.Generator, knobs: Sequence[KnobRange]) -> list[float]:
    return [float(rng.uniform(k.minimum, k.maximum)) for k in knobs]


def sweep_knobs(knobs: Sequence[KnobRange], points: int) -> list[list[float]]:
    """One knob at a time over ``points`` values across its range, the others at their defaults."""
    settings = []
    for i, knob in enumerate(knobs):
        for value in np.linspace(knob.minimum, knob.maximum, points):
            setting = [k.default for k in knobs]
            setting[i] = float(value)
            settings.append(setting)
    return settings


@dataclass
class PairSet:
    """Segments of equal length: dry and wet (N, L) float32, knob values (N, K)."""

    effect: str
    sample_rate: int
    knobs: tuple[KnobRange, ...]
    dry: np.ndarray
    wet: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.dry)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / PAIRS_FILE, dry=self.dry, wet=self.wet, values=self.values)
        index = {"kind": PAIRS_KIND, "effect": self.effect, "sample_rate": self.sample_rate,
                 "knobs": [vars(k) for k in self.knobs], "segments": len(self),
                 "segment_length": int(self.dry.shape[1])}
        atomic_write_text(folder / INDEX_FILE, json.dumps(index, indent=1) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> PairSet:
        folder = Path(folder)
        index = json.loads((folder / INDEX_FILE).read_text())
        if index.get("kind") != PAIRS_KIND:
            raise ValueError(f"'{folder}' is not a pair set ({INDEX_FILE} kind {index.get('kind')!r})")
        data = np.load(folder / PAIRS_FILE)
        return cls(index["effect"], int(index["sample_rate"]), tuple(KnobRange(**k) for k in index["knobs"]),
                   data["dry"], data["wet"], data["values"])

    @staticmethod
    def is_pair_set(folder: str | Path) -> bool:
        return (Path(folder) / INDEX_FILE).is_file()

    def split(self, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(training, held-out) segment indices; at least one of each when there are two."""
        order = np.random.default_rng(seed).permutation(len(self))
        held = max(1, int(round(fraction * len(self)))) if len(self) > 1 else 0
        return np.sort(order[held:]), np.sort(order[:held])


def render_pairs(effect: ReferenceEffect | str, segments: int, seconds: float, sample_rate: int = 48000,
                 seed: int = 0, settings: Sequence[Sequence[float]] | None = None) -> PairSet:
    """``segments`` dry segments through ``effect``, random knobs per segment (or ``settings``)."""
    fx = EFFECTS[effect] if isinstance(effect, str) else effect
    rng = np.random.default_rng(seed)
    length = int(round(seconds * sample_rate))
    count = segments if settings is None else len(settings)
    dry = np.stack([dry_segment(rng, length, sample_rate) for _ in range(count)])
    values = np.array([random_knobs(rng, fx.knobs) for _ in range(count)] if settings is None
                      else [list(s) for s in settings], dtype=np.float32)
    wet = np.stack([fx(d, sample_rate, dict(zip([k.name for k in fx.knobs], v.tolist())))
                    for d, v in zip(dry, values)])
    return PairSet(fx.name, sample_rate, fx.knobs, dry, wet, values)


class PairWindows(Dataset):
    """Window ``i``: a random (segment, start) drawn from ``seed`` and ``i`` alone, so a resumed
    run sees the same batches. Items: dry (1, warmup + window), wet (1, same), knobs (K,)."""

    def __init__(self, pairs: PairSet, segments: np.ndarray, window: int, warmup: int, seed: int,
                 length: int) -> None:
        self.pairs, self.segments = pairs, np.asarray(segments)
        self.window, self.warmup, self.seed, self.length = window, warmup, seed, length
        if pairs.dry.shape[1] < window:
            raise ValueError(f"segments of {pairs.dry.shape[1]} samples are shorter than the window ({window})")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, i])
        segment = int(self.segments[rng.integers(len(self.segments))])
        # the loss window starts anywhere; its context is cut at the segment's start (the
        # effect's history there is silence, as the model's)
        begin = int(rng.integers(0, self.pairs.dry.shape[1] - self.window + 1))
        first = max(0, begin - self.warmup)
        pad = self.warmup - (begin - first)
        dry = np.pad(self.pairs.dry[segment, first:begin + self.window], (pad, 0))
        wet = np.pad(self.pairs.wet[segment, first:begin + self.window], (pad, 0))
        return (torch.from_numpy(dry).unsqueeze(0), torch.from_numpy(wet).unsqueeze(0),
                torch.from_numpy(self.pairs.values[segment]))

"""Generated audio for tests and the demo: tones, chirps and noise bursts, deterministic from a seed.

Everything here is plain numpy, returns float32 mono arrays in [-1, 1], and draws its randomness
only from the ``seed`` it is given, so the same call always gives the same samples. No network,
no shipped recordings: the example folder a user trains on in the README comes from
:func:`write_example_folder`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "envelope",
    "harmonic_tone",
    "chirp",
    "noise_burst",
    "write_example_folder",
    "write_monophonic_folder",
    "alternating_levels",
]


def _num_samples(seconds: float, sample_rate: int) -> int:
    if sample_rate < 1:
        raise ValueError(f"sample_rate must be >= 1, got {sample_rate}")
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    return int(round(seconds * sample_rate))


def _finish(signal: np.ndarray, amplitude: float) -> np.ndarray:
    """Clip to [-1, 1] and return float32 (amplitudes above 1 are the caller's choice to clip)."""
    return np.clip(signal * amplitude, -1.0, 1.0).astype(np.float32)


def envelope(num_samples: int, sample_rate: int, attack: float = 0.01, decay: float = 0.1,
             sustain: float = 0.7, release: float = 0.1) -> np.ndarray:
    """A linear ADSR envelope of exactly ``num_samples`` samples (times in seconds).

    Attack and release are shortened proportionally when the note is too short for them.
    """
    n = int(num_samples)
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    a, d, r = (max(0, int(round(t * sample_rate))) for t in (attack, decay, release))
    if a + r > n:  # squeeze attack and release into the note, keep their ratio
        scale = n / (a + r)
        a, r = int(a * scale), int(r * scale)
    d = min(d, n - a - r)
    s = n - a - d - r
    parts = [
        np.linspace(0.0, 1.0, a, endpoint=False),
        np.linspace(1.0, sustain, d, endpoint=False),
        np.full(s, sustain),
        np.linspace(sustain if (d or s) else 1.0, 0.0, r),
    ]
    return np.concatenate(parts).astype(np.float32)


def harmonic_tone(frequency: float, seconds: float, sample_rate: int, *, harmonics: int = 8,
                  brightness: float = 1.0, vibrato_rate: float = 5.0, vibrato_depth: float = 0.0,
                  attack: float = 0.01, decay: float = 0.1, sustain: float = 0.7,
                  release: float = 0.1, amplitude: float = 0.5, seed: int = 0) -> np.ndarray:
    """A note with ``harmonics`` partials whose amplitudes fall as ``1 / k**(2 - brightness)``.

    ``vibrato_depth`` is a fraction of the frequency (0.01 = 1 %, about a sixth of a tone).
    Partials that would pass Nyquist at the top of the vibrato are left out (no aliasing). The
    seed picks the partials' starting phases.
    """
    n = _num_samples(seconds, sample_rate)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sample_rate
    # Integrate the instantaneous frequency so vibrato bends the pitch without phase jumps.
    instantaneous = frequency * (1.0 + vibrato_depth * np.sin(2 * np.pi * vibrato_rate * t))
    phase = 2 * np.pi * np.cumsum(instantaneous) / sample_rate
    nyquist = sample_rate / 2
    signal = np.zeros(n)
    total_weight = 0.0
    for k in range(1, harmonics + 1):
        if k * frequency * (1.0 + abs(vibrato_depth)) >= nyquist:
            break
        weight = 1.0 / k ** (2.0 - brightness)
        signal += weight * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
        total_weight += weight
    if total_weight > 0:
        signal /= total_weight
    signal *= envelope(n, sample_rate, attack, decay, sustain, release)
    return _finish(signal, amplitude)


def chirp(f0: float, f1: float, seconds: float, sample_rate: int, *,
          kind: Literal["linear", "exponential"] = "linear", amplitude: float = 0.5,
          fade: float = 0.01) -> np.ndarray:
    """A sine sweeping from ``f0`` to ``f1`` Hz, with ``fade`` seconds of fade in and out."""
    n = _num_samples(seconds, sample_rate)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    duration = n / sample_rate
    t = np.arange(n) / sample_rate
    if kind == "linear":
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * duration))
    elif kind == "exponential":
        if f0 <= 0 or f1 <= 0:
            raise ValueError(f"an exponential chirp needs positive frequencies, got {f0} and {f1}")
        if f0 == f1:
            phase = 2 * np.pi * f0 * t
        else:
            growth = np.log(f1 / f0) / duration
            phase = 2 * np.pi * f0 * (np.exp(growth * t) - 1.0) / growth
    else:
        raise ValueError(f"kind must be 'linear' or 'exponential', got {kind!r}")
    signal = np.sin(phase) * envelope(n, sample_rate, fade, 0.0, 1.0, fade)
    return _finish(signal, amplitude)


def noise_burst(seconds: float, sample_rate: int, *, seed: int = 0, low_hz: float = 0.0,
                high_hz: float | None = None, attack: float = 0.002, decay: float = 0.15,
                amplitude: float = 0.5) -> np.ndarray:
    """Band-limited white noise with a fast attack and an exponential decay (a drum-like hit).

    The band ``[low_hz, high_hz]`` is cut with a brick-wall mask in the frequency domain;
    ``decay`` is the time constant of the exponential fall, in seconds.
    """
    n = _num_samples(seconds, sample_rate)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    frequencies = np.fft.rfftfreq(n, 1.0 / sample_rate)
    top = sample_rate / 2 if high_hz is None else high_hz
    spectrum[(frequencies < low_hz) | (frequencies > top)] = 0.0
    signal = np.fft.irfft(spectrum, n)
    peak = np.max(np.abs(signal))
    if peak > 0:
        signal /= peak
    t = np.arange(n) / sample_rate
    shape = np.exp(-t / max(decay, 1e-6))
    rise = int(round(attack * sample_rate))
    if rise > 0:
        shape[:rise] *= np.linspace(0.0, 1.0, min(rise, n), endpoint=False)
    return _finish(signal * shape, amplitude)


def _place(track: np.ndarray, sound: np.ndarray, start: int) -> None:
    """Add ``sound`` into ``track`` at ``start``, cutting what runs past the end."""
    end = min(len(track), start + len(sound))
    if end > start:
        track[start:end] += sound[: end - start]


def _melody(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Notes of a pentatonic scale, with varied length, timbre and vibrato."""
    track = np.zeros(n, dtype=np.float32)
    scale = np.array([0, 2, 4, 7, 9, 12, 14, 16])
    root = rng.uniform(110.0, 220.0)
    position = 0
    while position < n:
        length = int(rng.uniform(0.15, 0.8) * sample_rate)
        frequency = root * 2 ** (rng.choice(scale) / 12)
        note = harmonic_tone(
            frequency, length / sample_rate, sample_rate, harmonics=int(rng.integers(3, 12)),
            brightness=rng.uniform(0.0, 1.5), vibrato_rate=rng.uniform(3.0, 7.0),
            vibrato_depth=rng.uniform(0.0, 0.02), attack=rng.uniform(0.005, 0.05),
            release=rng.uniform(0.02, 0.2), amplitude=_level(rng, 30.0) * 0.7,
            seed=int(rng.integers(2**31)))
        _place(track, note, position)
        position += length
    return track


def _sweeps(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Linear and exponential chirps up and down, separated by short gaps."""
    track = np.zeros(n, dtype=np.float32)
    nyquist = sample_rate / 2
    position = 0
    while position < n:
        length = int(rng.uniform(0.5, 2.0) * sample_rate)
        f0, f1 = rng.uniform(60.0, 0.45 * nyquist, size=2)
        kind: Literal["linear", "exponential"] = "exponential" if rng.random() < 0.5 else "linear"
        _place(track, chirp(f0, f1, length / sample_rate, sample_rate, kind=kind,
                            amplitude=_level(rng, 30.0) * 0.6), position)
        position += length + int(rng.uniform(0.0, 0.2) * sample_rate)
    return track


def _rhythm(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Noise hits on a steady grid: low thumps, mid snares, high ticks."""
    track = np.zeros(n, dtype=np.float32)
    nyquist = sample_rate / 2
    step = int(sample_rate * 60.0 / rng.uniform(90.0, 160.0) / 2)  # eighth notes
    kinds = [(20.0, 200.0, 0.12), (300.0, 0.6 * nyquist, 0.08), (0.5 * nyquist, nyquist, 0.02)]
    for index, position in enumerate(range(0, n, max(step, 1))):
        if rng.random() < 0.25:
            continue  # rests make the pattern less regular
        low, high, decay = kinds[index % 4 % 3]
        hit = noise_burst(decay * 5, sample_rate, seed=int(rng.integers(2**31)), low_hz=low,
                          high_hz=high, decay=decay * rng.uniform(0.7, 1.3),
                          amplitude=_level(rng, 30.0) * 0.8)
        _place(track, hit, position)
    return track


def _dynamics(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """Tones and noise bursts of random length, pitch, colour and level (over 40 dB)."""
    track = np.zeros(n, dtype=np.float32)
    nyquist = sample_rate / 2
    position = 0
    while position < n:
        length = int(rng.uniform(0.1, 0.6) * sample_rate)
        seconds = length / sample_rate
        if rng.random() < 0.5:
            sound = harmonic_tone(rng.uniform(80.0, 1000.0), seconds, sample_rate,
                                  harmonics=int(rng.integers(3, 30)), brightness=rng.uniform(0.0, 1.5),
                                  amplitude=_level(rng, 40.0), seed=int(rng.integers(2**31)))
        else:
            low = rng.uniform(0.0, 0.5 * nyquist)
            sound = noise_burst(seconds, sample_rate, seed=int(rng.integers(2**31)), low_hz=low,
                                high_hz=rng.uniform(low + 0.1 * nyquist, nyquist),
                                decay=rng.uniform(0.05, 0.5), amplitude=_level(rng, 40.0))
        _place(track, sound, position)
        position += length + int(rng.uniform(0.0, 0.15) * sample_rate)
    return track


def _level(rng: np.random.Generator, range_db: float) -> float:
    """A gain drawn uniformly in dB over ``range_db`` below 1: recordings have dynamics."""
    return float(10 ** (-rng.uniform(0.0, range_db) / 20))


NOISE_FLOOR_DB = -70.0  # dBFS of white noise under every file: recordings are never digitally silent


def _normalise(track: np.ndarray, peak: float = 0.9) -> np.ndarray:
    largest = float(np.max(np.abs(track))) if len(track) else 0.0
    if largest > 0:
        track = track * (peak / largest)
    return track.astype(np.float32)


def write_example_folder(out_dir: str | Path, seconds: float = 180.0, sample_rate: int = 16000,
                         seed: int = 0) -> list[Path]:
    """Write about ``seconds`` of varied material as several wav files under ``out_dir``.

    Seven files: melodies, sweeps, rhythms, tones and bursts over a wide dynamic range, and two
    mixes, two of them in the sub-folder ``more/`` (so a recursive reader is exercised). Every
    sound has its own level and each file a faint noise floor (``NOISE_FLOOR_DB``), as
    recordings do: a model trained on it must follow loudness, not only timbre. Returns the paths written, in a
    fixed order; the same arguments always give the same samples.
    """
    import soundfile as sf  # only needed for writing; keep the module importable without it

    out = Path(out_dir)
    layout: list[tuple[str, tuple[str, ...]]] = [
        ("melody.wav", ("melody",)),
        ("sweeps.wav", ("sweeps",)),
        ("rhythm.wav", ("rhythm",)),
        ("band.wav", ("melody", "rhythm")),
        ("more/band_with_sweeps.wav", ("melody", "sweeps", "rhythm")),
        ("more/melody_slow.wav", ("melody",)),
        ("dynamics.wav", ("dynamics",)),
    ]
    makers = {"melody": _melody, "sweeps": _sweeps, "rhythm": _rhythm, "dynamics": _dynamics}
    per_file = _num_samples(seconds / len(layout), sample_rate)
    written: list[Path] = []
    for index, (name, parts) in enumerate(layout):
        rng = np.random.default_rng([seed, index])
        track = np.zeros(per_file, dtype=np.float32)
        for part in parts:
            track += makers[part](rng, per_file, sample_rate)
        track = (_normalise(track) + 10 ** (NOISE_FLOOR_DB / 20) * rng.standard_normal(per_file)).astype(np.float32)
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.clip(track, -1.0, 1.0), sample_rate, subtype="PCM_16")
        written.append(path)
    return written


def _phrases(rng: np.random.Generator, n: int, sample_rate: int) -> np.ndarray:
    """One voice: melodic phrases (``_melody``'s notes) of 1-4 s, each at its own level, with rests."""
    track = np.zeros(n, dtype=np.float32)
    position = 0
    while position < n:
        length = min(n - position, int(rng.uniform(1.0, 4.0) * sample_rate))
        _place(track, _melody(rng, length, sample_rate) * _level(rng, 20.0), position)
        position += length + int(rng.uniform(0.1, 0.8) * sample_rate)
    return track


def write_monophonic_folder(out_dir: str | Path, seconds: float = 120.0, sample_rate: int = 48000,
                            seed: int = 0, files: int = 4) -> list[Path]:
    """Write about ``seconds`` of one-voice harmonic melodies as ``files`` wav files under ``out_dir``.

    What a DDSP model learns from: one pitch at a time (a pitch tracker and a harmonic synth),
    notes with vibrato and varied timbre, levels over about 50 dB, rests, and the faint noise
    floor of ``write_example_folder``. Deterministic, like every generator here.
    """
    import soundfile as sf

    out = Path(out_dir)
    per_file = _num_samples(seconds / files, sample_rate)
    written: list[Path] = []
    for index in range(files):
        rng = np.random.default_rng([seed, 1000 + index])
        track = _normalise(_phrases(rng, per_file, sample_rate))
        track = (track + 10 ** (NOISE_FLOOR_DB / 20) * rng.standard_normal(per_file)).astype(np.float32)
        path = out / f"voice{index + 1}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.clip(track, -1.0, 1.0), sample_rate, subtype="PCM_16")
        written.append(path)
    return written


def alternating_levels(kind: Literal["tones", "bursts"], sample_rate: int) -> np.ndarray:
    """Eight harmonic tones or white-noise hits of 0.3 s at levels 26 dB apart, loud and quiet in turn.

    What a model trained on :func:`write_example_folder` is judged on (tests/test_quality.py,
    benchmarks/generated_quality.py): 24-partial tones at 150-600 Hz or full-band bursts decaying
    over 0.3 s, drawn from other seeds than the example folder's, over its noise floor.
    """
    rng = np.random.default_rng(1234 if kind == "tones" else 4321)
    parts = []
    for i in range(8):
        level = 0.8 if i % 2 else 0.04
        if kind == "tones":
            sound = harmonic_tone(float(rng.uniform(150, 600)), 0.3, sample_rate, harmonics=24,
                                  amplitude=level, seed=int(rng.integers(2**31)))
        else:
            sound = noise_burst(0.3, sample_rate, seed=int(rng.integers(2**31)), decay=0.3, amplitude=level)
        parts.append(sound)
    audio = np.concatenate(parts)
    return (audio + 10 ** (NOISE_FLOOR_DB / 20) * rng.standard_normal(len(audio))).astype(np.float32)

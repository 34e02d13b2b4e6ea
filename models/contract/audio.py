"""How a sound file becomes a model's input: one policy for training data, eval, the engine and scores.

Audio is ``(channels, samples)`` float32.

- Decoding: libsndfile (soundfile) first; what it cannot read goes to librosa's loader
  (audioread/ffmpeg backends) where the full install has it. :class:`Undecodable` carries both
  reasons.
- Channels: a file with another channel count than the model's is adapted the way the dataset
  stores it, so a model hears at play time what it was trained on: mono mixes down (mean),
  otherwise channel ``c`` plays the file's channel ``c mod n`` (mono is duplicated, extra
  channels are dropped).
- Sample rate: resampled with soxr's high-quality filter (:data:`RESAMPLER`), for training data,
  eval and the sound files of scores. Live input is not resampled here: the engine and the
  exported models run a file at its own rate, as a host would (docs/sample-rates.md).

soundfile is imported when a file is read, librosa only when it is needed: this module imports
without either (and without torch).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

RESAMPLER = "soxr_hq"  # librosa's name for soxr's HQ filter; datasets record it in their fingerprint


class Undecodable(ValueError):
    """Neither decoder reads the file: the message holds both reasons."""


def planar(frames: np.ndarray) -> np.ndarray:
    """soundfile's ``(frames, channels)`` (or a 1-D mono signal) -> ``(channels, frames)`` float32."""
    audio = frames[:, None] if frames.ndim == 1 else frames
    return np.ascontiguousarray(audio.T, dtype=np.float32)


def adapt_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """``(c, n)`` -> ``(channels, n)`` float32 by the policy above."""
    have = audio.shape[0]
    if channels == have:
        return np.ascontiguousarray(audio, dtype=np.float32)
    if channels == 1:
        return audio.mean(axis=0, keepdims=True, dtype=np.float32)
    picks = [c % have for c in range(channels)]
    return np.ascontiguousarray(audio[picks], dtype=np.float32)


def one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception as one short line (decoders raise multi-line messages)."""
    text = " ".join(str(getattr(exc, "strerror", None) or exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def decode(path: str | Path) -> tuple[np.ndarray, int]:
    """``path`` as float32 ``(channels, samples)`` and its sample rate, or :class:`Undecodable`."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return planar(data), int(rate)
    except Exception as first:  # libsndfile raises several types for unreadable input
        sf_error = one_line(first)
    try:
        import librosa
    except ImportError:
        raise Undecodable(f"soundfile: {sf_error}") from None
    try:
        with warnings.catch_warnings():
            # librosa warns that it falls back to audioread: that is exactly what is wanted here.
            warnings.simplefilter("ignore")
            data, rate = librosa.load(str(path), sr=None, mono=False, dtype=np.float32)
    except Exception as second:
        raise Undecodable(f"soundfile: {sf_error}; librosa: {one_line(second)}") from None
    return np.ascontiguousarray(np.atleast_2d(np.asarray(data, dtype=np.float32))), int(rate)


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample along the last axis with :data:`RESAMPLER`; a no-op at the same rate."""
    if source_rate == target_rate:
        return audio
    import librosa

    out = librosa.resample(audio, orig_sr=source_rate, target_sr=target_rate, res_type=RESAMPLER, axis=-1)
    return np.ascontiguousarray(out, dtype=np.float32)


def read_sound(path: str | Path, channels: int, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Decode, adapt the channels and, when ``sample_rate`` is given, resample to it.

    Returns ``(audio, the file's own sample rate)``; the audio is at ``sample_rate`` when given.
    """
    audio, rate = decode(path)
    audio = adapt_channels(audio, channels)
    return (audio if sample_rate is None else resample(audio, rate, sample_rate)), rate

"""How a sound file becomes a model's input: one policy for training data, the engine and scores.

Audio is ``(channels, samples)`` float32. A file with another channel count than the model's is
adapted the way the dataset stores it, so a model hears at play time what it was trained on:
mono mixes down (mean), otherwise channel ``c`` plays the file's channel ``c mod n`` (mono is
duplicated, extra channels are dropped). Decoding stays with the callers (soundfile, librosa).
"""

from __future__ import annotations

import numpy as np


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

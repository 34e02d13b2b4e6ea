"""Evaluation metrics of an effect model against the reference effect's output.

- ``l1``: mean absolute error; ``esr``: error-to-signal ratio; ``stft``: auraloss's
  multi-resolution STFT distance (FFT sizes 512, 1024, 2048);
- ``lufs``: |integrated loudness difference| in LU (ITU-R BS.1770: K-weighting, 400 ms blocks,
  75 % overlap, absolute gate -70 LUFS, relative gate -10 LU);
- ``crest``, ``rms``: mean |difference| in dB per segment of peak / RMS and of RMS;
- ``transient``: mean |difference| of the transient level, the mean excess in dB of a fast
  (1 ms) RMS envelope over a slow (50 ms) one: how much attack a signal keeps above its body.
"""

from __future__ import annotations

import math

import auraloss
import numpy as np
import torch
from scipy.signal import lfilter

_EPS = 1e-10


def _k_weighting(sample_rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """BS.1770's two stages (a +4 dB high shelf near 1.7 kHz, a high-pass near 38 Hz) as
    biquads for ``sample_rate``, from their analog parameters by the bilinear transform."""
    stages = []
    # high shelf: f0 1681.97 Hz, gain 3.99984 dB, Q 0.70718
    k = math.tan(math.pi * 1681.974450955533 / sample_rate)
    vh = 10 ** (3.999843853973347 / 20)
    vb = vh ** 0.4996667741545416
    q = 0.7071752369554196
    a0 = 1 + k / q + k * k
    stages.append((np.array([(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0]),
                   np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])))
    # high-pass: f0 38.135 Hz, Q 0.50033
    k = math.tan(math.pi * 38.13547087602444 / sample_rate)
    q = 0.5003270373238773
    a0 = 1 + k / q + k * k
    stages.append((np.array([1.0, -2.0, 1.0]), np.array([1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0])))
    return stages


def integrated_loudness(x: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness (LUFS) of a mono signal; -70 for signals below the absolute gate."""
    y = np.asarray(x, dtype=np.float64)
    for b, a in _k_weighting(sample_rate):
        y = lfilter(b, a, y)
    block, hop = int(0.4 * sample_rate), int(0.1 * sample_rate)
    if len(y) < block:
        y = np.pad(y, (0, block - len(y)))
    powers = np.array([np.mean(y[i:i + block] ** 2) for i in range(0, len(y) - block + 1, hop)])
    loudness = -0.691 + 10 * np.log10(powers + _EPS)
    kept = powers[loudness > -70]
    if not len(kept):
        return -70.0
    relative = -0.691 + 10 * math.log10(kept.mean()) - 10
    kept = powers[(loudness > -70) & (loudness > relative)]
    return float(-0.691 + 10 * math.log10(kept.mean()))


def _db(x: float) -> float:
    return 20 * math.log10(max(x, _EPS))


def crest_db(x: np.ndarray) -> float:
    return _db(float(np.abs(x).max())) - _db(float(np.sqrt(np.mean(x ** 2))))


def rms_db(x: np.ndarray) -> float:
    return _db(float(np.sqrt(np.mean(x ** 2))))


def _envelope_db(x: np.ndarray, window: int, hop: int) -> np.ndarray:
    power = np.convolve(x.astype(np.float64) ** 2, np.ones(window) / window, mode="same")[::hop]
    return 10 * np.log10(power + _EPS)


def transient_db(x: np.ndarray, sample_rate: int) -> float:
    hop = max(1, sample_rate // 1000)
    fast = _envelope_db(x, max(1, sample_rate // 1000), hop)
    slow = _envelope_db(x, sample_rate // 20, hop)
    audible = slow > slow.max() - 60  # leave the silence between events out
    return float(np.maximum(fast - slow, 0.0)[audible].mean()) if audible.any() else 0.0


def effect_metrics(target: np.ndarray, output: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Metrics of ``output`` against ``target``, both (segments, samples)."""
    t = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)).unsqueeze(1)
    o = torch.from_numpy(np.ascontiguousarray(output, dtype=np.float32)).unsqueeze(1)
    stft = auraloss.freq.MultiResolutionSTFTLoss(fft_sizes=[512, 1024, 2048], hop_sizes=[128, 256, 512],
                                                 win_lengths=[512, 1024, 2048])
    with torch.no_grad():
        distance = float(stft(o, t))
    return {
        "l1": float(np.abs(target - output).mean()),
        "stft": distance,
        "lufs": abs(integrated_loudness(target.reshape(-1), sample_rate)
                    - integrated_loudness(output.reshape(-1), sample_rate)),
        "crest": float(np.mean([abs(crest_db(a) - crest_db(b)) for a, b in zip(target, output)])),
        "rms": float(np.mean([abs(rms_db(a) - rms_db(b)) for a, b in zip(target, output)])),
        "transient": float(np.mean([abs(transient_db(a, sample_rate) - transient_db(b, sample_rate))
                                    for a, b in zip(target, output)])),
        "esr": float(((target - output) ** 2).sum() / max(float((target ** 2).sum()), _EPS)),
    }

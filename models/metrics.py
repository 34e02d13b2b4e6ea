"""How close a model's output is to its input: the figures of `tildekit eval` (numpy, scipy, librosa).

No torch here, so the Raspberry Pi runtime can judge a model too. Every signal is mono float
``(samples,)`` at one sample rate, output already aligned with the input (delay removed).

Figures, comparing an estimate ``y`` with the reference ``x`` (the model's input):

- ``stft_distance``: multi-scale log-magnitude STFT distance. At each FFT size of
  ``STFT_SIZES`` (Hann window, hop n/4), magnitudes divided by the window's sum (a full-scale
  sine peaks at 0.5 at every size) and floored at ``MAGNITUDE_FLOOR`` (-100 dB); the mean of
  ``|ln Y - ln X|`` over bins and frames, averaged over the sizes. 0 for identical signals.
- ``mel_distance_db``: mean absolute difference of log-mel power spectrograms in dB
  (``MEL_FFT``, ``MEL_HOP``, ``MEL_BANDS`` bands from 0 Hz to Nyquist, power floored at -100 dB).
- ``loudness_correlation``: frame RMS over non-overlapping ``LOUDNESS_FRAME_SECONDS`` frames, in
  dB, floored at ``LOUDNESS_FLOOR_DB``; the Pearson correlation of the two dB envelopes over the
  frames where either signal is above the floor. None when undefined (fewer than 3 such frames,
  or a flat envelope, e.g. silence). ``loudness_error_db``: mean ``|dB_y - dB_x|`` over the same
  frames.
- pitch, only when the input is pitched (``PITCHED_FRACTION`` of its active frames voiced):
  f0 from librosa's pyin at ``PITCH_RATE`` (``PITCH_FMIN``..``PITCH_FMAX``, 20 ms hop), each voiced
  frame refined to yin's interpolated estimate when the two agree within ``REFINE_CENTS``
  (pyin's Viterbi runs on quarter-tone bins, for speed). ``f0_error_cents``: mean ``|1200 log2
  (f0_y / f0_x)|`` over frames voiced in both (an octave error counts 1200).
  ``voicing_agreement``: the share of active frames (either signal above the loudness floor)
  where pyin's voiced decision on ``y`` equals the one on ``x``. Digital silence is unvoiced.

References that give the figures a scale: :func:`lowpass_reference` (the input low-passed at
4 kHz: a dull but perfectly aligned copy) and :func:`silence_reference`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from tildekit.models.contract.audio import resample

STFT_SIZES = (2048, 1024, 512, 256, 128)  # RAVE's multi-scale sizes, in samples
MAGNITUDE_FLOOR = 1e-5  # -100 dB of a full-scale sine's peak bin (0.5 after normalisation)

MEL_FFT = 2048
MEL_HOP = 512
MEL_BANDS = 80
POWER_FLOOR = 1e-10  # -100 dB

LOUDNESS_FRAME_SECONDS = 0.02
LOUDNESS_FLOOR_DB = -80.0

PITCH_RATE = 16000  # pyin runs on a 16 kHz copy: its cost grows with the rate
PITCH_FRAME = 1024  # 64 ms: two periods of the lowest pitch
PITCH_HOP = 320  # 20 ms, the loudness frame
PITCH_FMIN = 65.41  # C2 (cello's lowest string)
PITCH_FMAX = 2093.0  # C7
PYIN_RESOLUTION = 0.25  # semitones per pitch bin: 4x coarser than pyin's default, 16x faster
REFINE_CENTS = 50.0
PITCHED_FRACTION = 0.4  # of the input's active frames voiced: below, no pitch figures
MIN_PITCHED_FRAMES = 5

LOWPASS_HZ = 4000.0
LOWPASS_ORDER = 8  # Butterworth, run forwards and backwards: zero phase, 16th-order slope


@dataclass(frozen=True)
class Figures:
    """One system's figures on one signal (or their mean over files); None = not applicable."""

    stft_distance: float | None = None
    mel_distance_db: float | None = None
    loudness_correlation: float | None = None
    loudness_error_db: float | None = None
    f0_error_cents: float | None = None
    voicing_agreement: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# Labels and how to read each figure (reports and --help use them).
FIGURE_LABELS: dict[str, tuple[str, str]] = {
    "stft_distance": ("multi-scale log-STFT L1", "lower is better"),
    "mel_distance_db": ("log-mel distance (dB)", "lower is better"),
    "loudness_correlation": ("loudness-envelope correlation", "1 = follows the input's loudness"),
    "loudness_error_db": ("loudness error (dB)", "lower is better"),
    "f0_error_cents": ("f0 error (cents)", "pitched input only; 1200 = an octave off"),
    "voicing_agreement": ("voicing agreement", "pitched input only; 1 = same voiced frames"),
}
# What --transfer reports: following the input, not reproducing it.
TRANSFER_FIGURES = ("loudness_correlation", "loudness_error_db", "f0_error_cents", "voicing_agreement")


@dataclass(frozen=True)
class PitchTrack:
    f0: np.ndarray  # Hz per 20 ms frame, NaN where unvoiced
    voiced: np.ndarray  # bool per frame
    active: np.ndarray  # bool per frame: RMS above the loudness floor

    @property
    def voiced_fraction(self) -> float:
        active = int(self.active.sum())
        return float((self.voiced & self.active).sum() / active) if active else 0.0

    @property
    def pitched(self) -> bool:
        return (self.voiced_fraction >= PITCHED_FRACTION
                and int((self.voiced & self.active).sum()) >= MIN_PITCHED_FRAMES)


@dataclass(frozen=True)
class Analysis:
    """What the comparisons need from one signal; computed once per signal."""

    signal: np.ndarray  # mono float32
    sample_rate: int
    loudness_db: np.ndarray
    pitch: PitchTrack | None


def as_mono(audio: np.ndarray) -> np.ndarray:
    """``(samples,)`` or ``(channels, samples)`` -> mono float32 (channels averaged)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=0)
    if audio.ndim != 1:
        raise ValueError(f"expected (samples,) or (channels, samples), got shape {audio.shape}")
    return audio


# ----------------------------------------------------------------------------- spectra


def magnitude(signal: np.ndarray, n_fft: int) -> np.ndarray:
    """|STFT| (bins, frames), Hann window, hop n/4, divided by the window's sum."""
    import librosa

    with warnings.catch_warnings():  # a file shorter than n_fft: zero-padded by the centring, fine
        warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large")
        spec = librosa.stft(signal, n_fft=n_fft, hop_length=n_fft // 4, window="hann", center=True)
    return np.abs(spec) / (n_fft / 2)  # a periodic Hann window sums to n / 2


def stft_distance(x: np.ndarray, y: np.ndarray, sizes: Sequence[int] = STFT_SIZES) -> float:
    """Mean |ln|Y| - ln|X|| over bins and frames, averaged over FFT sizes (one size at a time in memory)."""
    total = 0.0
    for n_fft in sizes:
        lx = np.log(np.maximum(magnitude(x, n_fft), MAGNITUDE_FLOOR))
        ly = np.log(np.maximum(magnitude(y, n_fft), MAGNITUDE_FLOOR))
        total += float(np.mean(np.abs(ly - lx)))
    return total / len(sizes)


def log_mel_db(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mel-band power in dB (MEL_BANDS, frames), floored at -100 dB (also what the reports plot)."""
    import librosa

    power = magnitude(signal, MEL_FFT) ** 2
    bank = librosa.filters.mel(sr=sample_rate, n_fft=MEL_FFT, n_mels=MEL_BANDS, fmin=0.0,
                               fmax=sample_rate / 2, norm=None)
    return 10.0 * np.log10(np.maximum(bank @ power, POWER_FLOOR))


def mel_distance_db(x: np.ndarray, y: np.ndarray, sample_rate: int) -> float:
    return float(np.mean(np.abs(log_mel_db(y, sample_rate) - log_mel_db(x, sample_rate))))


# ----------------------------------------------------------------------------- loudness


def loudness_db(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """RMS of non-overlapping 20 ms frames in dB (a last partial frame counts), floored."""
    frame = max(1, int(round(LOUDNESS_FRAME_SECONDS * sample_rate)))
    count = -(-len(signal) // frame)
    padded = np.zeros(count * frame, dtype=np.float64)
    padded[:len(signal)] = signal
    frames = padded.reshape(count, frame)
    lengths = np.full(count, frame, dtype=np.float64)
    if count:
        lengths[-1] = len(signal) - (count - 1) * frame
    rms = np.sqrt((frames ** 2).sum(axis=1) / lengths)
    return 20.0 * np.log10(np.maximum(rms, 10 ** (LOUDNESS_FLOOR_DB / 20)))


def _active(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a > LOUDNESS_FLOOR_DB) | (b > LOUDNESS_FLOOR_DB)


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation, None when undefined (fewer than 3 points or a constant side)."""
    if len(a) < 3:
        return None
    a = a - a.mean()
    b = b - b.mean()
    norm = math.sqrt(float(a @ a) * float(b @ b))
    if norm <= 1e-12:
        return None
    return float(np.clip(float(a @ b) / norm, -1.0, 1.0))


def loudness_figures(x_db: np.ndarray, y_db: np.ndarray) -> tuple[float | None, float | None]:
    """(correlation, mean absolute dB error) over the frames where either signal is active."""
    n = min(len(x_db), len(y_db))
    x_db, y_db = x_db[:n], y_db[:n]
    active = _active(x_db, y_db)
    if not active.any():
        return None, None
    return pearson(x_db[active], y_db[active]), float(np.mean(np.abs(y_db[active] - x_db[active])))


# ----------------------------------------------------------------------------- pitch


def pitch_track(signal: np.ndarray, sample_rate: int) -> PitchTrack:
    """pyin's voicing and f0 (refined by yin) per 20 ms frame, on a 16 kHz copy."""
    import librosa

    signal = np.ascontiguousarray(resample(signal, sample_rate, PITCH_RATE), dtype=np.float32)
    if len(signal) < PITCH_FRAME:  # pyin needs one full frame
        signal = np.pad(signal, (0, PITCH_FRAME - len(signal)))
    rms = librosa.feature.rms(y=signal, frame_length=PITCH_FRAME, hop_length=PITCH_HOP, center=True)[0]
    active = 20.0 * np.log10(np.maximum(rms, 1e-12)) > LOUDNESS_FLOOR_DB
    frames = len(rms)
    if not np.any(signal):  # digital silence has no pitch (and pyin would only confirm it)
        return PitchTrack(np.full(frames, np.nan), np.zeros(frames, dtype=bool), active)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyin warns on frames it cannot analyse; they come out unvoiced
        f0, voiced, _ = librosa.pyin(signal, fmin=PITCH_FMIN, fmax=PITCH_FMAX, sr=PITCH_RATE,
                                     frame_length=PITCH_FRAME, hop_length=PITCH_HOP,
                                     resolution=PYIN_RESOLUTION, center=True)
        fine = librosa.yin(signal, fmin=PITCH_FMIN, fmax=PITCH_FMAX, sr=PITCH_RATE,
                           frame_length=PITCH_FRAME, hop_length=PITCH_HOP, center=True)
    voiced = np.asarray(voiced, dtype=bool)[:frames]
    f0 = np.where(voiced, f0[:frames], np.nan)
    agree = voiced & (np.abs(1200.0 * np.log2(fine[:frames] / np.where(voiced, f0, 1.0))) < REFINE_CENTS)
    f0 = np.where(agree, fine[:frames], f0)
    return PitchTrack(f0, voiced, active)


def pitch_figures(x: PitchTrack, y: PitchTrack) -> tuple[float | None, float | None]:
    """(mean |cents| over frames voiced in both, voicing agreement over active frames)."""
    n = min(len(x.f0), len(y.f0))
    both = x.voiced[:n] & y.voiced[:n]
    cents = (float(np.mean(np.abs(1200.0 * np.log2(y.f0[:n][both] / x.f0[:n][both]))))
             if both.any() else None)
    active = x.active[:n] | y.active[:n]
    agreement = float(np.mean(x.voiced[:n][active] == y.voiced[:n][active])) if active.any() else None
    return cents, agreement


# ----------------------------------------------------------------------------- comparing


def analyse(audio: np.ndarray, sample_rate: int, pitch: bool = True) -> Analysis:
    """Loudness (and, with ``pitch``, the pitch track) of one signal, mono-mixed."""
    signal = as_mono(audio)
    track = pitch_track(signal, sample_rate) if pitch else None
    return Analysis(signal, sample_rate, loudness_db(signal, sample_rate), track)


def compare(reference: Analysis, estimate: Analysis, transfer: bool = False) -> Figures:
    """The figures of ``estimate`` against ``reference`` (the input).

    ``transfer``: out-of-domain input, only loudness and pitch following (no spectral distance).
    Pitch figures need a pitched reference and a pitch track of the estimate.
    """
    if reference.sample_rate != estimate.sample_rate:
        raise ValueError("compare needs both signals at one sample rate")
    n = min(len(reference.signal), len(estimate.signal))
    x, y = reference.signal[:n], estimate.signal[:n]
    values: dict[str, float | None] = {}
    if not transfer:
        values["stft_distance"] = stft_distance(x, y)
        values["mel_distance_db"] = mel_distance_db(x, y, reference.sample_rate)
    values["loudness_correlation"], values["loudness_error_db"] = loudness_figures(
        reference.loudness_db, estimate.loudness_db)
    if reference.pitch is not None and reference.pitch.pitched and estimate.pitch is not None:
        values["f0_error_cents"], values["voicing_agreement"] = pitch_figures(reference.pitch, estimate.pitch)
    return Figures(**values)


def mean_figures(items: Sequence[Figures]) -> Figures:
    """Each figure's mean over the items that have it (files count equally)."""
    values: dict[str, float | None] = {}
    for f in fields(Figures):
        present = [getattr(item, f.name) for item in items if getattr(item, f.name) is not None]
        values[f.name] = float(np.mean(present)) if present else None
    return Figures(**values)


# ----------------------------------------------------------------------------- references


def lowpass_reference(audio: np.ndarray, sample_rate: int, cutoff: float = LOWPASS_HZ) -> np.ndarray:
    """The input low-passed at ``cutoff`` (zero-phase Butterworth); unchanged when Nyquist is lower."""
    from scipy.signal import butter, sosfiltfilt

    audio = np.asarray(audio, dtype=np.float32)
    if cutoff >= sample_rate / 2:
        return audio.copy()
    sos = butter(LOWPASS_ORDER, cutoff, btype="low", fs=sample_rate, output="sos")
    padlen = min(audio.shape[-1] - 1, 3 * (2 * len(sos) + 1))
    return sosfiltfilt(sos, audio, axis=-1, padlen=max(padlen, 0)).astype(np.float32)


def silence_reference(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    return np.zeros_like(np.asarray(audio, dtype=np.float32))


REFERENCES = {"lowpass_4k": lowpass_reference, "silence": silence_reference}

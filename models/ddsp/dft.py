"""Real DFTs as matrices, and the other constants that stand in for operators an ONNX graph
cannot hold (ONNX opset 17 through torch's TorchScript-based exporter has neither FFT ops nor
complex tensors, no running maximum, and ``unfold`` only over sizes known at trace time).

The DDSP modules use them only when ``functional`` (the ONNX exporter's tracing mode); nn~ and
training keep the FFTs. The matrices are made with numpy, so a trace records each as one
constant, in float64 (callers cast them to their own precision). Phases are reduced exactly in
integers (``j k mod n``) before the cosine, so every entry is as accurate as float64 allows
whatever the size.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable

import numpy as np
import torch

Method = typing.TypeVar("Method", bound=Callable)


def traced_only(method: Method) -> Method:
    """``torch.jit.unused`` for a method of a module using postponed annotations: TorchScript
    reads an unused method's annotations as objects, so they are evaluated here."""
    method.__annotations__ = typing.get_type_hints(method)
    return typing.cast(Method, torch.jit.unused(method))


def _angles(rows: int, columns: int, n: int) -> np.ndarray:
    j = np.arange(rows, dtype=np.int64)[:, None]
    k = np.arange(columns, dtype=np.int64)[None, :]
    return 2.0 * np.pi * ((j * k) % n) / n


@functools.lru_cache(maxsize=16)
def rfft_matrix(length: int, n_fft: int) -> torch.Tensor:
    """(length, 2 * bins), float64: ``x @ M`` = ``[re | im]`` of ``torch.fft.rfft(x, n_fft)``,
    ``x`` of ``length`` samples."""
    angles = _angles(length, n_fft // 2 + 1, n_fft)
    return torch.from_numpy(np.concatenate([np.cos(angles), -np.sin(angles)], 1))


@functools.lru_cache(maxsize=16)
def irfft_matrix(n_fft: int, outputs: int) -> torch.Tensor:
    """(2 * bins, outputs), float64: ``[re | im] @ M`` = the first ``outputs`` samples of
    ``torch.fft.irfft(z, n_fft)``."""
    bins = n_fft // 2 + 1
    weights = np.full(bins, 2.0)
    weights[0] = 1.0
    if n_fft % 2 == 0:
        weights[-1] = 1.0  # the Nyquist bin has no mirror image
    angles = _angles(bins, outputs, n_fft)
    real = weights[:, None] * np.cos(angles) / n_fft
    imaginary = -weights[:, None] * np.sin(angles) / n_fft
    imaginary[0] = 0.0  # irfft ignores the imaginary parts of DC and Nyquist
    if n_fft % 2 == 0:
        imaginary[-1] = 0.0
    return torch.from_numpy(np.concatenate([real, imaginary], 0))


@functools.lru_cache(maxsize=16)
def sine_tables(n_harmonics: int, table_size: int) -> torch.Tensor:
    """(1 + n_harmonics, table_size + 2): row h is sin(2 pi h n / N) over one cycle, divided by
    the droop of linear interpolation, sinc(h / N)^2 (row 0 is zero), then its first 2 points
    again: amplitudes @ M = the synth's wavetables."""
    h = np.arange(n_harmonics + 1)
    rows = np.sin(_angles(n_harmonics + 1, table_size, table_size)) / (np.sinc(h / table_size) ** 2)[:, None]
    return torch.from_numpy(np.concatenate([rows, rows[:, :2]], 1).astype(np.float32))


def frame_positions(frames: int, size: int, step: int) -> torch.Tensor:
    """(frames, size) indices of ``x.unfold(-1, size, step)``'s windows: ``x[:, M]`` frames ``x``."""
    return torch.from_numpy(np.arange(size)[None, :] + step * np.arange(frames)[:, None])


def lower_triangle(size: int) -> torch.Tensor:
    """(size, size) ones on and below the diagonal: running maxima as one masked reduction."""
    return torch.from_numpy(np.tril(np.ones((size, size), np.int64)))

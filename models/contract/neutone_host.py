"""The Neutone plugin's buffer arithmetic (docs/contracts.md §2): which rate and buffer the model
runs at for a DAW's, how long the queues wait before the first output (the buffering delay the
host is told) and how much a DAW call can return.

Plain int functions: the ``.nm`` root compiles them with TorchScript (so no postponed annotations
here, and ``List`` for the lists), and the checks and the benchmarks call them from Python.
"""

import math
from typing import List


def select_model_sample_rate(daw_sr: int, native: List[int]) -> int:
    """The DAW's rate if the model takes it (or takes any), the only rate, else the closest."""
    if len(native) == 0 or daw_sr in native:
        return daw_sr
    if len(native) == 1:
        return native[0]
    best = native[0]
    for sr in native:
        if abs(sr - daw_sr) < abs(best - daw_sr):
            best = sr
    return best


def select_model_buffer_size(io_bs: int, native: List[int]) -> int:
    """Any: io_bs; one: it; else the first multiple of io_bs, else the first larger, else the closest."""
    if len(native) == 0:
        return io_bs
    if len(native) == 1:
        return native[0]
    ordered = sorted(native)
    for bs in ordered:
        if bs % io_bs == 0:
            return bs
    for bs in ordered:
        if bs > io_bs:
            return bs
    best = ordered[0]
    for bs in ordered:
        if abs(bs - io_bs) < abs(best - io_bs):
            best = bs
    return best


def resampled_buffer_size(from_sr: int, to_sr: int, n: int) -> int:
    """How many samples at ``to_sr`` one buffer of ``n`` samples at ``from_sr`` becomes (ceil)."""
    if from_sr == to_sr:
        return n
    return int(math.ceil(to_sr * n / from_sr))


def _gcd(a: int, b: int) -> int:
    while b != 0:
        a, b = b, a % b
    return a


def saturation_samples(io_bs: int, model_bs: int) -> int:
    """Input samples to collect before the first pop so that no later pop ever starves.

    Pushing ``io_bs`` and popping ``model_bs`` whenever possible leaves ``k * io_bs mod model_bs``
    samples behind after push k; over a cycle that remainder visits every multiple of
    ``g = gcd(io_bs, model_bs)`` below ``model_bs``, so the worst is ``model_bs - g``. Waiting one
    buffer plus enough whole buffers to cover the worst remainder is always enough. This gives
    ``model_bs`` when io_bs divides model_bs and ``io_bs`` when model_bs divides io_bs.
    """
    worst_remainder = model_bs - _gcd(io_bs, model_bs)
    return io_bs * (1 + (worst_remainder + io_bs - 1) // io_bs)


def buffering_delay_samples(io_bs: int, model_bs: int) -> int:
    """Buffering delay in model samples: the zeros output before the first model buffer."""
    return saturation_samples(io_bs, model_bs) - io_bs


def max_daw_queue_size(daw_sr: int, daw_bs: int, model_sr: int, model_bs: int) -> int:
    """The most DAW samples ``forward_bt`` can return at once (the value the host sizes for)."""
    return 2 * daw_bs + int(model_bs * daw_sr / model_sr) + 1

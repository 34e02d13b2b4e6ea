"""Streaming resampling in torch, for the files hosts load (TorchScript) and for ONNX graphs.

:class:`StreamResampler` (the TorchScript files) computes each call as one matrix product over
an unfolded view of the input: blocks of whole periods of at least ``BLOCK_OUTPUTS`` outputs.
:func:`resample_step` is the same step for ONNX graphs, written with tensor ops only (the read
position is a tensor, so a tracer keeps the output length dynamic; ONNX has no dynamic unfold):
gathered windows and batched matrix products over groups of outputs, or one convolution for
integer ratios. Both are twins of :mod:`tildekit.models.resample_stream` (numpy), tested equal.
:class:`ResamplePath` puts a method between two resamplers with the FIFOs of
:mod:`tildekit.models.resample_plan`. Both can be reconfigured in place (another host rate) from
tensors and integers stored in the module, because a TorchScript file cannot design filters.
"""

# No `from __future__ import annotations`: TorchScript reads the annotations as types.
import math
from typing import List, Tuple

import torch
from torch import Tensor, nn

from tildekit.models.resample_plan import MAX_CYCLE_CALLS


def period_matrix(bank: Tensor, up: int, down: int, offset: int, periods: int = 1) -> Tensor:
    """``(K, periods * up)``: ``periods`` whole periods of outputs as one matrix product, from a
    window of ``K`` inputs (see the numpy twin in :func:`tildekit.models.resample_design.period_matrix`,
    one period; this one runs inside the file). Every period has the same structure, so the
    block may start at any period boundary."""
    taps = bank.size(1)
    outputs = periods * up
    r = torch.arange(outputs, dtype=torch.long)
    d = torch.div(r * down + offset, up, rounding_mode="floor") - offset // up
    phases = torch.remainder(r * down + offset, up)
    rows = d.unsqueeze(0) + torch.arange(taps, dtype=torch.long).unsqueeze(1)
    columns = r.unsqueeze(0).expand(taps, outputs)
    matrix = torch.zeros(int(d[outputs - 1]) + taps, outputs)
    matrix[rows, columns] = bank.index_select(0, phases).t()
    return matrix


def block_periods(up: int, outputs: int) -> int:
    """Periods per block of :meth:`StreamResampler.forward`: at least ``outputs`` outputs,
    so that each call is one matrix product of a useful size (a period of an integer decimation
    is a single output, a matrix-vector product that runs at a fraction of the speed)."""
    return max(1, (outputs + up - 1) // up)


# Outputs per row of the file's block matrix product (see block_periods; a module attribute in
# the file: TorchScript cannot read a global). 32 to 64 ran the
# fastest on one core for 2:1 and 1:2; 44.1 <-> 48 kHz periods (147 or 160 outputs) stay whole.
BLOCK_OUTPUTS = 32


def group_matrices(bank: Tensor, up: int, down: int, offset: int) -> Tuple[Tensor, Tensor]:
    """``(G, S, size)`` matrices and ``(G,)`` window offsets for a period cut into groups of
    consecutive outputs (see the numpy twin in :mod:`tildekit.models.resample_design`)."""
    taps = bank.size(1)
    size = max(1, min(up, (taps * up + down - 1) // down))
    groups = (up + size - 1) // size
    r = torch.arange(up, dtype=torch.long)
    d = torch.div(r * down + offset, up, rounding_mode="floor") - offset // up
    phases = torch.remainder(r * down + offset, up)
    group = torch.div(r, size, rounding_mode="floor")
    column = r - group * size
    starts = d.index_select(0, torch.arange(groups, dtype=torch.long) * size)
    rows = d - starts.index_select(0, group)
    span = int(rows.max()) + taps
    matrices = torch.zeros(groups, span, size)
    index = rows.unsqueeze(0) + torch.arange(taps, dtype=torch.long).unsqueeze(1)
    matrices[group.unsqueeze(0).expand(taps, up), index, column.unsqueeze(0).expand(taps, up)] = \
        bank.index_select(0, phases).t()
    return matrices, starts


def conv_weight(matrix: Tensor, up: int, down: int) -> Tensor:
    """``(up, down, Q)``: the period matrix as a convolution over ``down`` interleaved input
    channels (``weight[r, s, q] = matrix[q * down + s, r]``), for integer ratios."""
    span = matrix.size(0)
    taps = (span + down - 1) // down
    padded = torch.zeros(taps * down, up)
    padded[:span] = matrix
    return padded.reshape(taps, down, up).permute(2, 1, 0).contiguous()


def window_index(periods: int, starts: Tensor, span: int, down: int) -> Tensor:
    """``(periods, G, S)``: where each period's group windows read, from the first window start."""
    first = torch.arange(periods, dtype=torch.long).unsqueeze(1) * down + starts.unsqueeze(0)
    return first.unsqueeze(2) + torch.arange(span, dtype=torch.long)


def resample_block(extended: Tensor, start: int, periods: int, count: int, phase: int, matrices: Tensor,
                   starts: Tensor, weight: Tensor, index: Tensor, up: int, down: int) -> Tensor:
    """The ``count`` outputs from output ``phase`` of ``periods`` periods whose first window
    starts at ``extended[..., start]``. Integers in a TorchScript file; a tracer passes 0-d
    tensors instead, so the lengths stay dynamic in an ONNX graph (:func:`resample_step`).
    ``index``: :func:`window_index` for at least ``periods`` periods, or an empty tensor."""
    groups, span, size = matrices.size(0), matrices.size(1), matrices.size(2)
    lead: List[int] = list(extended.shape[:-1])
    if groups == 1:
        # integer ratios, short periods: one convolution is faster than gathering the windows
        taps = weight.size(2)
        if isinstance(start, int):
            segment = extended.narrow(-1, start, (periods + taps - 1) * down)
        else:
            segment = extended.index_select(-1, start + torch.arange((periods + taps - 1) * down, dtype=torch.long))
        if down == 1:
            channels = segment.reshape([-1, 1, segment.size(-1)])
        else:  # decimation: the ``down`` phases of the input become channels
            channels = segment.reshape([-1, segment.size(-1) // down, down]).transpose(1, 2).contiguous()
        y = torch.conv1d(channels, weight).transpose(1, 2).reshape(lead + [-1])
    else:
        # one window per period and group, gathered (ONNX has no dynamic unfold), then one
        # matrix product per group: (G, rows * periods, S) @ (G, S, size)
        if isinstance(periods, int) and index.size(0) >= periods:
            reads = index[:periods] + start
        else:
            reads = window_index(periods, starts, span, down) + start
        windows = extended.index_select(-1, reads.reshape(-1)).reshape([-1, groups, span])
        y = torch.bmm(windows.transpose(0, 1), matrices).transpose(0, 1)  # (rows * periods, G, size)
        y = y.reshape(lead + [-1, groups * size])[..., :up].reshape(lead + [-1])
    return y.narrow(-1, phase, count) if isinstance(phase, int) else \
        y.index_select(-1, phase + torch.arange(count, dtype=torch.long))


def resample_counts(length: int, position: int, phase: int, up: int, down: int) -> Tuple[int, int, int]:
    """(outputs available, first window start, periods to compute) for a call of ``length``."""
    count = max(0, (length * up + down - 1 - position) // down)
    start = (position - phase * down) // up + down  # history holds down + T - 1 inputs
    periods = max(1, (phase + count + up - 1) // up)
    return count, start, periods


def resample_step(x: Tensor, history: Tensor, position: Tensor, phase: Tensor, matrices: Tensor, starts: Tensor,
                  weight: Tensor, up: int, down: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """One call with the whole state as tensors, for tracing to ONNX (inputs and outputs):
    ``x`` (..., n) -> (output (..., m), history, position, phase).

    ``history`` holds the previous ``down + T - 1`` inputs, ``position`` (int64, 0-d) the
    common-rate time of the next output from the start of ``x``, ``phase`` (int64, 0-d) its index
    within its period. ``matrices``/``starts``: :func:`group_matrices`, ``weight``:
    :func:`conv_weight` (used when there is a single group). :class:`StreamResampler` does the
    same with integers (no tensor arithmetic on counts inside a TorchScript file).
    """
    length = x.size(-1)
    lead: List[int] = list(x.shape[:-1])
    extended = torch.cat([history, x, torch.zeros(lead + [matrices.size(1) + 2 * down], dtype=x.dtype)], -1)
    count = torch.clamp(torch.div(length * up + down - 1 - position, down, rounding_mode="floor"), min=0)
    start = torch.div(position - phase * down, up, rounding_mode="floor") + down
    periods = torch.clamp(torch.div(phase + count + up - 1, up, rounding_mode="floor"), min=1)
    y = resample_block(extended, start, periods, count, phase, matrices, starts, weight,
                       torch.zeros(0, dtype=torch.long), up, down)
    new_history = extended.narrow(-1, length, history.size(-1))
    return y, new_history, position + count * down - length * up, torch.remainder(phase + count, up)


def _rows(state: Tensor, batch: int) -> Tensor:
    """``state`` with exactly ``batch`` rows: extra rows dropped, missing rows zero (silence)."""
    if state.size(0) >= batch:
        return state[:batch]
    missing = torch.zeros([batch - state.size(0)] + list(state.shape[1:]), dtype=state.dtype)
    return torch.cat([state, missing], 0)


class StreamResampler(nn.Module):
    """A stateful polyphase resampler over (batch, channels, time); identity until configured.

    Each call is one matrix product: the windows of whole blocks of ``block_periods`` periods
    (an unfolded view of the input, no copy) times the block's matrix. That is fewer and larger
    operations than :func:`resample_step`'s gathered groups (an ONNX graph cannot unfold a
    dynamic length), which matters because a TorchScript call costs a few microseconds per
    operation whatever its size. Same outputs, same state.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.up = 1
        self.down = 1
        self.offset = 0
        self.kept = 0
        self.block = torch.ones(1, 1)
        self.block_outputs = 1
        self.block_inputs = 1
        self.block_target = BLOCK_OUTPUTS
        self.history = torch.zeros(1, channels, 0)
        self.position = 0
        self.phase = 0

    @torch.jit.export
    def configure(self, bank: Tensor, up: int, down: int, offset: int) -> None:
        """``bank``: ``Prototype.bank()``, ``(up, T)``."""
        periods = block_periods(up, self.block_target)
        self.block = period_matrix(bank, up, down, offset, periods)
        self.block_outputs = periods * up
        self.block_inputs = periods * down
        self.up = up
        self.down = down
        self.offset = offset
        self.kept = down + bank.size(1) - 1
        self.reset_state()

    @torch.jit.export
    def reset_state(self) -> None:
        self.history = torch.zeros(1, self.channels, self.kept)
        self.position = self.offset
        self.phase = 0

    def forward(self, x: Tensor) -> Tensor:
        length = x.size(-1)
        phase = self.phase
        count, start, _ = resample_counts(length, self.position, phase, self.up, self.down)
        blocks = max(1, (phase + count + self.block_outputs - 1) // self.block_outputs)
        window = self.block.size(0)
        needed = start + (blocks - 1) * self.block_inputs + window  # beyond the input: zeros,
        pad = max(0, needed - self.kept - length)  # which only reach outputs not given yet
        extended = torch.cat([_rows(self.history, x.size(0)), x,
                              torch.zeros(x.size(0), x.size(1), pad)], -1)
        windows = extended.narrow(-1, start, needed - start).unfold(-1, window, self.block_inputs)
        y = windows.reshape(-1, window).mm(self.block).reshape(x.size(0), x.size(1), blocks * self.block_outputs)
        self.history = extended.narrow(-1, length, self.kept)
        self.position += count * self.down - length * self.up
        self.phase = (self.phase + count) % self.up
        return y.narrow(-1, phase, count)


def call_cycle(ints: List[int], call: int, limit: int) -> int:
    """Twin of :func:`tildekit.models.resample_plan.call_cycle` (the file cannot import numpy code)."""
    pre_up, pre_down, post_up, post_down, g = ints[0], ints[1], ints[3], ints[4], ints[6]
    calls = pre_down // math.gcd(call * pre_up, pre_down)
    made = calls * call * pre_up // pre_down
    calls *= g // math.gcd(made, g)
    levels = calls * call * pre_up // pre_down // g
    per_level = g * ints[9] // ints[10]
    calls *= post_down // math.gcd(levels * per_level * post_up, post_down)
    return calls if calls <= limit else 0


def call_prefill(ints: List[int], call: int, limit: int) -> int:
    """Twin of :func:`tildekit.models.resample_plan.call_prefill`, in int64 tensors (``limit``:
    ``MAX_CYCLE_CALLS``, passed in because a TorchScript function cannot read a global)."""
    if call <= 0 or call % ints[7] != 0:
        return ints[8]
    cycle = call_cycle(ints, call, limit)
    if cycle == 0:
        return ints[8]
    pre_up, pre_down, pre_offset, post_up, post_down, post_offset, g = \
        ints[0], ints[1], ints[2], ints[3], ints[4], ints[5], ints[6]
    x = torch.arange(1, 2 * cycle + 1, dtype=torch.long) * call
    y = torch.clamp(torch.div(x * pre_up + pre_down - 1 - pre_offset, pre_down, rounding_mode="floor"), min=0)
    out = torch.div(y, g, rounding_mode="floor") * (g * ints[9] // ints[10])
    w = torch.clamp(torch.div(out * post_up + post_down - 1 - post_offset, post_down, rounding_mode="floor"), min=0)
    short = int((torch.div(x * ints[9], ints[10], rounding_mode="floor") - w).max())
    return min(ints[8], max(0, short))


class ResamplePath(nn.Module):
    """The resamplers and FIFOs around one method (see :mod:`tildekit.models.resample_plan`).

    ``enter(x)`` takes host units and returns the whole granules ready for the method (maybe
    none); ``leave(y, count)`` takes the method's output and returns exactly ``count`` host units.

    The output FIFO's zeros are put in on the first call after a reset, when the call size is
    known: hosts call with one buffer size, and :func:`call_prefill` for that size is often
    less than the prefill for calls of any size. If a later call has another size, the FIFO is
    topped up once to the any-size prefill (the output moves later by the difference, as after
    a host's buffer change) and never runs dry.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pre = StreamResampler(in_channels)
        self.post = StreamResampler(out_channels)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.ints = [1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1]  # PLAN_INTS of the identity
        self.granularity = 1
        self.step = 1
        self.prefill = 0
        self.max_cycle = MAX_CYCLE_CALLS
        self.call = -1  # host units per call: -1 before the first call, 0 once sizes differed
        self.filled = 0  # zeros put in the output FIFO since the reset
        self.waiting = torch.zeros(1, in_channels, 0)
        self.ready = torch.zeros(1, out_channels, 0)

    @torch.jit.export
    def configure(self, pre_bank: Tensor, post_bank: Tensor, ints: List[int]) -> None:
        """``ints`` in ``PLAN_INTS`` order (``MethodPlan.ints()``)."""
        self.pre.configure(pre_bank, ints[0], ints[1], ints[2])
        self.post.configure(post_bank, ints[3], ints[4], ints[5])
        self.ints = ints
        self.granularity = ints[6]
        self.step = ints[7]
        self.prefill = ints[8]
        self.reset_state()

    @torch.jit.export
    def reset_state(self) -> None:
        self.pre.reset_state()
        self.post.reset_state()
        self.waiting = torch.zeros(1, self.in_channels, 0)
        self.ready = torch.zeros(1, self.out_channels, 0)
        self.call = -1
        self.filled = 0

    @torch.jit.export
    def filled_for(self, call: int) -> int:
        """The zeros the output FIFO starts with when every call brings ``call`` host units."""
        return call_prefill(self.ints, call, self.max_cycle)

    @torch.jit.export
    def enter(self, x: Tensor) -> Tensor:
        size = x.size(-1)
        if size % self.step != 0:
            raise ValueError("tildekit: at this host rate this method takes multiples of "
                             + str(self.step) + " input frames, got " + str(size))
        if self.call < 0:
            self._fill(self.filled_for(size), x.size(0))
            self.call = size
        elif self.call > 0 and size != self.call:
            self._fill(self.prefill - self.filled, x.size(0))
            self.call = 0
        waiting = torch.cat([_rows(self.waiting, x.size(0)), self.pre(x)], -1)
        whole = waiting.size(-1) - waiting.size(-1) % self.granularity
        self.waiting = waiting[..., whole:]
        return waiting[..., :whole]

    def _fill(self, zeros: int, rows: int) -> None:
        """Put ``zeros`` more zero units in front of the output FIFO."""
        if zeros > 0:
            ready = _rows(self.ready, rows)
            self.ready = torch.cat([torch.zeros(rows, self.out_channels, zeros), ready], -1)
            self.filled += zeros

    @torch.jit.export
    def leave(self, y: Tensor, count: int) -> Tensor:
        ready = torch.cat([_rows(self.ready, y.size(0)), self.post(y)], -1)
        if ready.size(-1) < count:  # cannot happen with the planned prefill: say so if it does
            raise RuntimeError("tildekit: resampler FIFO ran dry (" + str(ready.size(-1)) + " of "
                               + str(count) + " samples): please report this model and host rate")
        self.ready = ready[..., count:]
        return ready[..., :count]

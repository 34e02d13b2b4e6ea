"""Causal dilated TCN core with FiLM in every block, computed time-first.

::

    x (B, 1, T) [+ knobs (B, K, T) for concat]
      └─ linear (1 [+ K] -> C) ─► h (T, B, C)
    block i (dilation d_i), repeated:
      h ─► causal conv (kernel k, dilation d_i) ─► FiLM_i ─► sigmoid (- its value at silence) ─► linear C -> C ─► + h
    out = gain_out * linear (C -> 1) + direct * x

Every conv is causal (left padding only), so the delay is 0 and the receptive field is
``1 + (k - 1) * sum(d_i)`` samples. The streaming build keeps the last ``(k - 1) * d_i`` frames
of each block's input (:class:`CausalConv`); the whole-signal build pads with zeros instead,
through the same code, so both give the same samples.

Why time-first ``(T, B, C)`` and not ``F.conv1d`` on ``(B, C, T)``: at a 512-sample buffer with
16 channels every op is tiny, and the cost is the number of ops and copies. ``F.conv1d`` sends
dilated and 1x1 convs to slow generic kernels (``slow_conv_dilated2d``, ``_slow_conv2d``).
Time-first, a dilated conv is one im2col copy (an ``unfold`` view, every ``d``-th tap) and one
GEMM, and the 1x1 mix a GEMM on the same layout (benchmarks/effects_speed.py measures the
previous form and this one in one run).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tildekit.models.effects.conditioning import film_gains
from tildekit.models.streaming import MAX_BATCH_SIZE, Stateful

# Streaming FiLM folds into the conv's weight from this width: at 16 channels the fold (two ops
# on the weight) beat the per-sample FiLM op by 1.14x a call, at 8 it lost by 0.89x
# (benchmarks/effects_speed.py's effect-tcn and effect-raspberry, docs/effects.md)
FOLD_MIN_CHANNELS = 16


class CausalConv(Stateful):
    """Causal dilated conv, time-first (T, B, C_in) -> (T * B, C_out), ``nn.Conv1d``'s weight
    layout (out, in, k). Streaming builds carry the last ``(k - 1) d`` input frames across calls
    in ``past`` (rows, frames, channels)."""

    state_names = ("past",)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int,
                 streaming: bool) -> None:
        super().__init__()
        template = nn.Conv1d(in_channels, out_channels, kernel_size)  # torch's default init
        self.weight = nn.Parameter(template.weight.detach().clone())
        self.bias = nn.Parameter(template.bias.detach().clone())
        self.taps, self.dilation = kernel_size, dilation
        self.span = (kernel_size - 1) * dilation
        self.streaming = streaming
        # rows first, so one stream's cache is contiguous: time-first (span, MAX_BATCH_SIZE, C)
        # put one stream's frames 64 rows (4 kB) apart, a page touched per frame of the cache
        self.register_buffer("past", torch.zeros(MAX_BATCH_SIZE, self.span if streaming else 0, in_channels),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, batch = x.shape[0], x.shape[1]
        if self.streaming:
            if self.functional:  # traced for ONNX: one Conv node, not a slice per window
                past = self.past[:batch].transpose(0, 1)
                padded = torch.cat([past, x], 0)
                self.past = padded[padded.shape[0] - self.span:].transpose(0, 1)
                y = F.conv1d(padded.permute(1, 2, 0), self.weight, self.bias, dilation=self.dilation)
                return y.permute(2, 0, 1).reshape(frames * batch, -1)
            return F.linear(self.columns(x), self.tap_major(self.weight), self.bias)
        # whole signals (training): long and batched, where F.conv1d beats the im2col form and
        # its backward is far cheaper than the strided windows'; same sums, same samples
        y = F.conv1d(F.pad(x.permute(1, 2, 0), (self.span, 0)), self.weight, self.bias, dilation=self.dilation)
        return y.permute(2, 0, 1).reshape(frames * batch, -1)

    def scaled(self, x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``gain * (conv(x) - conv bias) + bias`` with constant (C_out,) ``gain`` and ``bias``, for
        one stream (batch 1, streaming): FiLM folded into the weight, so one GEMM and no
        per-sample FiLM op."""
        return F.linear(self.columns(x), self.tap_major(self.weight * gain.unsqueeze(1).unsqueeze(2)), bias)

    def tap_major(self, weight: torch.Tensor) -> torch.Tensor:
        """(out, in, k) -> (out, k * in), the order of :meth:`columns`."""
        return weight.transpose(1, 2).reshape(weight.shape[0], -1)

    def columns(self, x: torch.Tensor) -> torch.Tensor:
        """Streaming im2col: (T, B, C) -> (T * B, k * C), tap-major, carrying the cache."""
        frames, batch, channels = x.shape[0], x.shape[1], x.shape[2]
        past = self.past[:batch].transpose(0, 1)
        padded = torch.cat([past, x], 0)
        tail = padded[padded.shape[0] - self.span:]
        if self.functional:
            self.past = tail.transpose(0, 1)
        else:
            past.copy_(tail.detach() if tail.requires_grad else tail)
        # (T, B, C, span + 1) windows, every d-th tap, taps before channels: (T, B, k, C), so
        # the one copy (the reshape) moves runs of C contiguous floats
        windows = padded.unfold(0, self.span + 1, 1)
        if self.dilation > 1:
            windows = windows[..., ::self.dilation]
        return windows.transpose(2, 3).reshape(frames * batch, channels * self.taps)

    def reset_state(self) -> None:
        self.past.zero_()


class TCNBlock(nn.Module):
    """``h + (sigmoid(u) - sigmoid(u0)) @ mix`` with ``u = FiLM(conv(h))`` and ``u0`` what ``u``
    is for a silent ``h`` (the conv's bias through FiLM, one value per channel): silence in
    stays silence out (to float rounding), whatever the knobs (FiLM cores; see :class:`TCNCore`). The
    sigmoid is tanh up to an affine map (``tanh(y) = 2 sigmoid(2y) - 1``, absorbed by the conv
    and ``mix``) and costs a fifth of torch's tanh on CPU."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, film: bool, streaming: bool,
                 scale: float) -> None:
        super().__init__()
        self.conv = CausalConv(channels, channels, kernel_size, dilation, streaming)
        # start as ``h + tanh(y) @ (scale * W)`` with torch's default init: the conv sees 2y
        # and the mix is 2 scale W (in, out)
        with torch.no_grad():
            self.conv.weight.mul_(2.0)
            self.conv.bias.mul_(2.0)
        self.mix = nn.Parameter(2.0 * scale * nn.Linear(channels, channels).weight.detach().t().contiguous())
        self.film = film
        self.channels = channels
        self.fold = channels >= FOLD_MIN_CHANNELS

    def forward(self, h: torch.Tensor, cond: torch.Tensor, gains: torch.Tensor, offset: int) -> torch.Tensor:
        """h (T, B, C); cond time-first (T or 1, B, D); gains: ``exp`` of cond's log-gains
        (computed once per call for every site; ``conditioning.film_gains`` says why a log-gain)."""
        frames, batch, c = h.shape[0], h.shape[1], self.channels
        conv = self.conv
        rest = conv.bias
        if self.film:
            gain = gains[..., offset:offset + c]
            beta = cond[..., offset + c:offset + 2 * c]
            rest = torch.addcmul(beta, rest, gain)
            if conv.streaming and batch == 1 and rest.shape[0] == 1 and self.fold:
                # knobs at rest (the smoother done): FiLM folded into the conv's weight
                y = conv.scaled(h, gain.reshape(c), rest.reshape(c)).view(frames, batch, c)
            else:
                y = torch.addcmul(beta, conv(h).view(frames, batch, c), gain)
        else:
            y = conv(h).view(frames, batch, c)
        active = torch.sigmoid(y) - torch.sigmoid(rest)
        return torch.addmm(h.reshape(frames * batch, c), active.reshape(frames * batch, c), self.mix).view(
            frames, batch, c)


class TCNCore(nn.Module):
    """FiLM cores have no other biases (input and output linears without; the output's FiLM is
    a gain only), so a silent input gives a silent output (to float rounding) at every knob setting, as
    the effects do: the log-magnitude STFT term then sees no leakage in the silence between
    notes. Concat cores feed the knobs as input channels, which silence does not zero."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int], knobs: int, film: bool,
                 streaming: bool) -> None:
        super().__init__()
        self.film = film
        self.inp = nn.Linear(1 if film else 1 + knobs, channels, bias=not film)
        # each block's update is scaled so that the residual sum of all blocks keeps the size of one
        scale = 1.0 / math.sqrt(len(dilations))
        self.blocks = nn.ModuleList([TCNBlock(channels, kernel_size, d, film, streaming, scale)
                                     for d in dilations])
        self.out = nn.Linear(channels, 1, bias=False)
        # start near the identity (the dry signal), not loud: ``direct`` passes x and the
        # stack's output starts small
        self.direct = nn.Parameter(torch.ones(1))
        with torch.no_grad():
            self.out.weight.mul_(0.1)
        self.channels = channels
        # FiLM: one site per block, then a log-gain of the output (the level knobs)
        self.film_size = 2 * channels * len(dilations) + 1 if film else 0
        self.receptive_field = 1 + (kernel_size - 1) * sum(dilations)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) audio and (B, D, T or 1) conditioning -> (B, 1, T)."""
        rows = x.permute(2, 0, 1)  # (T, B, 1)
        cond = cond.permute(2, 0, 1)  # (T or 1, B, D)
        if self.film:
            h = rows * self.inp.weight.t()  # the bias-free linear 1 -> C as a broadcast product
        else:
            h = self.inp(torch.cat([rows, cond.expand(rows.shape[0], -1, -1)], 2))
        # every site's log-gain to a gain in one op (the shifts are exp'd too, and never read)
        gains = film_gains(cond) if self.film else cond
        offset = 0
        for block in self.blocks:
            h = block(h, cond, gains, offset)
            offset += 2 * self.channels
        y = self.out(h)
        if self.film:
            y = y * gains[..., offset:offset + 1]
        return y.permute(1, 2, 0) + self.direct * x

    def reset_state(self) -> None:
        for block in self.blocks:
            block.conv.reset_state()

"""Streaming-safe convolution layers: the only module of tildekit that touches ``cached_conv``.

Whether a layer streams is an explicit ``streaming`` argument of :class:`Layers`, never
cached_conv's global ``use_cached_conv`` switch (which tildekit does not call).

A streaming layer keeps the tail of the previous buffer and prepends it to the next, so
running consecutive buffers gives the samples of one whole-signal pass, **delayed**. A
centered kernel needs ``right`` samples of future; a streaming layer cannot see the future,
so it outputs them that many steps late::

    whole signal, centered pad:   [0 0 0 | x0 x1 x2 x3 ... | 0 0 0]      left=3, right=3
    streaming, cached pad:        [cache (left+right) | x0 x1 x2 ...]    output lags by right

A strided layer must also see frames at the same phase as the whole pass: cached_conv adds
``stride_delay`` samples so that ``(right + delay_in + stride_delay)`` is a multiple of the
stride, and the output delay, counted in output frames, is ``(right + delay_in + stride_delay)
/ stride``. A transposed convolution with kernel ``k`` and stride ``s`` overlap-adds ``k - s``
samples into the next buffer (kept in a cache) and delays by ``padding = (k - s) / 2``
input-rate steps, times ``s`` at the output rate.

:func:`conv_delay` and :func:`conv_transpose_delay` restate that arithmetic so that both
builds (streaming and not) know their delays; the streaming build checks it against
cached_conv's own ``cumulative_delay``.

State: every stateful layer keeps its cache in a non-persistent buffer of
``MAX_BATCH_SIZE`` rows (one independent stream per batch row), so streaming and
non-streaming builds have identical ``state_dict`` keys. ``functional`` mode (used by the
ONNX exporter) replaces in-place updates by attribute assignment so a tracer sees the new
state as a value that can become a graph output.
"""

from __future__ import annotations

from collections.abc import Iterator

import cached_conv as cc
import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_BATCH_SIZE: int = cc.MAX_BATCH_SIZE


def padding_for(kernel_size: int, dilation: int = 1, causal: bool = False,
                stride: int = 1) -> tuple[int, int]:
    """(left, right) padding keeping ``length / stride`` frames."""
    return cc.get_padding(kernel_size, stride, dilation, "causal" if causal else "centered")


def conv_delay(delay_in: int, right: int, stride: int) -> int:
    """Output delay (output frames) of a cached conv, as cached_conv computes it."""
    stride_delay = (stride - ((right + delay_in) % stride)) % stride
    return (right + stride_delay + delay_in) // stride


def conv_transpose_delay(delay_in: int, padding: int, stride: int) -> int:
    """Output delay (output samples) of a cached transposed conv."""
    return padding + delay_in * stride


class Stateful(nn.Module):
    """A layer with streaming state. ``state_names`` lists its state buffers."""

    # Python-side only (the ONNX exporter reads it); not a TorchScript attribute.
    state_names = ()

    def __init__(self) -> None:
        super().__init__()
        self.functional = False

    def reset_state(self) -> None:
        """Zero the streaming state (layers with state override this; TorchScript needs it explicit)."""
        pass


class CachePad(cc.CachedPadding1d, Stateful):
    """cached_conv's cached padding with its cache allocated eagerly (known channel count).

    Prepends the last ``padding`` input samples of the previous call; with ``crop`` it drops
    as many at the end, which makes it a pure delay line of ``padding`` samples.
    """

    state_names = ("pad",)

    def __init__(self, channels: int, padding: int, crop: bool = False) -> None:
        cc.CachedPadding1d.__init__(self, padding, crop)
        self.functional = False
        self.register_buffer("pad", torch.zeros(MAX_BATCH_SIZE, channels, padding), persistent=False)
        self.initialized = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            return x
        past = self.pad[: x.shape[0]]
        x = torch.cat([past, x], -1)
        tail = x[..., -self.padding:]
        if self.functional:
            self.pad = tail
        else:
            # a view of ``pad``: writes the state in place (detach only when grad is on)
            past.copy_(tail.detach() if tail.requires_grad else tail)
        if self.crop:
            x = x[..., : -self.padding]
        return x

    def reset_state(self) -> None:
        self.pad.zero_()


def prefers_gemm(frames: int, out_channels: int, dilation: int, groups: int) -> bool:
    """Whether a conv producing ``frames`` outputs runs faster as one GEMM than as ``F.conv1d``.

    At streaming lengths (1 thread, MKL; /tmp-style microbenchmarks summarised in
    models/profiles/default.yaml) ``F.conv1d`` computes ``W @ cols``, which MKL runs 3-7x
    slower than ``cols^T @ W^T`` when there are few frames (deep layers: 768 channels,
    1-2 frames), and sends dilated convs to ``slow_conv_dilated2d`` (per-channel loops).
    With many frames and few channels its C++ im2col beats the same thing written as ops.
    A single frame is a matrix-vector product, as fast either way.
    """
    return groups == 1 and frames >= 2 and (dilation > 1 or 8 * frames <= out_channels)


class StreamConv1d(cc.CachedConv1d, Stateful):
    """cached_conv's CachedConv1d with eager caches (see :class:`CachePad`).

    cached_conv chains two cached paddings (the stride delay, cropped, then the kernel's
    padding). Both are delay lines of the same input, so one cache of their summed length
    holds the same samples; the stride delay is then cropped from its output::

        cat(cache (padding + stride_delay), x) ─► drop the last stride_delay samples ─► conv

    ``downsampling_delay`` stays as an empty (stateless) padding for attribute compatibility.
    """

    def __init__(self, *args, **kwargs) -> None:
        cc.CachedConv1d.__init__(self, *args, **kwargs)
        self.functional = False
        self.trim = self.downsampling_delay.padding
        self.cache = CachePad(self.in_channels, self.cache.padding + self.trim)
        self.downsampling_delay = CachePad(self.in_channels, 0, crop=True)
        self.taps = self.kernel_size[0]
        self.tap_step = self.dilation[0]
        self.hop = self.stride[0]
        self.gemm_enabled = True  # False: always F.conv1d (see :func:`set_gemm`)

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        """The input with its cached past prepended: what the (unpadded) conv reads."""
        x = self.cache(x)
        if self.trim > 0:
            x = x[..., : x.shape[-1] - self.trim]
        return x

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        """The conv on an already padded input."""
        frames = (x.shape[-1] - (self.taps - 1) * self.tap_step - 1) // self.hop + 1
        # functional mode is what the ONNX exporter traces: one Conv node there (ONNX Runtime's
        # own kernels, and ``unfold`` does not export with a dynamic time axis)
        if self.gemm_enabled and not self.functional and prefers_gemm(frames, self.out_channels,
                                                                      self.tap_step, self.groups):
            return self.gemm(x, frames)
        return F.conv1d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def gemm(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """Time-major im2col and one ``F.linear`` (bias fused), columns ordered (channel, tap)
        like the weight so that it is used as a free view: no precomputed copy to go stale
        when weights are loaded::

            cols[b, t, c * k + j] = x[b, c, t * stride + j * dilation]
            y[b, :, t] = W.reshape(out, in * k) @ cols[b, t]

        The output is a (B, out, T) view of a time-major result; elementwise ops keep that
        layout and the next cache's ``cat`` makes it contiguous again.
        """
        taps, step, hop = self.taps, self.tap_step, self.hop
        weight = self.weight.reshape(self.out_channels, self.in_channels * taps)
        rows = x.transpose(1, 2)  # (B, L, in), a view
        if taps == 1 and hop == 1:
            return F.linear(rows, weight, self.bias).transpose(1, 2)
        # windows of the dilated kernel's extent every ``hop`` samples, then every
        # ``dilation``-th sample of each: (B, in, T, k) views, one copy by the reshape
        windows = x.unfold(2, (taps - 1) * step + 1, hop)
        if step > 1:
            windows = windows[..., ::step]
        cols = windows.permute(0, 2, 1, 3).reshape(x.shape[0], frames, self.in_channels * taps)
        return F.linear(cols, weight, self.bias).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.compute(self.padded(x))

    def reset_state(self) -> None:
        self.cache.reset_state()
        self.downsampling_delay.reset_state()


class StreamConvTranspose1d(cc.CachedConvTranspose1d, Stateful):
    """cached_conv's CachedConvTranspose1d, eager cache, no in-place write into its output.

    ::

        conv_transpose output of T frames:  [ head (k-s) |  rest ........................ ]
        plus the previous call's tail:      [ cache      ]
        emitted this call:                  [ first T*s samples  ][ tail (k-s): kept ]

    (the kernel may span many strides, as in the PQMF synthesis, so k - s may exceed T*s)
    """

    state_names = ("cache",)

    def __init__(self, *args, **kwargs) -> None:
        cc.CachedConvTranspose1d.__init__(self, *args, **kwargs)
        self.functional = False
        overlap = 2 * self.padding[0]
        assert overlap == self.kernel_size[0] - self.stride[0], "kernel - stride must equal 2 * padding"
        self.register_buffer("cache", torch.zeros(MAX_BATCH_SIZE, self.out_channels, overlap),
                             persistent=False)
        self.initialized = 1
        self.overlap = overlap
        self.hop = self.stride[0]
        # kernels of one or two strides (every decoder upsampler) take the matmul path
        self.frame_gemm = self.groups == 1 and self.kernel_size[0] in (self.hop, 2 * self.hop)
        self.gemm_enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frame_gemm and self.gemm_enabled:
            return self.gemm(x)
        y = F.conv_transpose1d(x, self.weight, None, self.stride, 0, self.output_padding,
                               self.groups, self.dilation)
        if self.overlap > 0:
            batch = y.shape[0]
            emitted = y.shape[-1] - self.overlap  # T * stride
            full = torch.cat([y[..., : self.overlap] + self.cache[:batch], y[..., self.overlap:]], -1)
            tail = full[..., emitted:]
            if self.functional:
                self.cache = tail
            else:
                self.cache[:batch].copy_(tail.detach())
            y = full[..., :emitted]
        bias = self.bias
        if bias is not None:
            y = y + bias.unsqueeze(-1)
        return y

    def gemm(self, x: torch.Tensor) -> torch.Tensor:
        """Kernel of one or two strides: every frame's contribution from one matmul.

        ``x^T @ W.reshape(in, out * k)`` (MKL runs this orientation 3-10x faster than
        conv_transpose1d's at streaming lengths) gives, per input frame, ``k`` output samples
        per channel; with ``k == 2 * stride`` the second half of each frame overlaps the first
        half of the next, and the last frame's second half is the cache (same content as the
        general path's)::

            block u = first half of frame u + second half of frame u - 1 (or the cache)
        """
        batch, frames = x.shape[0], x.shape[-1]
        hop = self.hop
        parts = torch.matmul(x.transpose(1, 2), self.weight.reshape(self.in_channels, -1))
        parts = parts.reshape(batch, frames, self.out_channels, self.kernel_size[0])
        if self.overlap > 0:
            second = parts[..., hop:]
            previous = torch.cat([self.cache[:batch].unsqueeze(1), second[:, : frames - 1]], 1)
            tail = second[:, frames - 1]
            if self.functional:
                self.cache = tail
            else:
                self.cache[:batch].copy_(tail.detach())
            parts = parts[..., :hop] + previous
        y = parts.permute(0, 2, 1, 3).reshape(batch, self.out_channels, frames * hop)
        bias = self.bias
        if bias is not None:
            y = y + bias.unsqueeze(-1)
        return y

    def reset_state(self) -> None:
        self.cache.zero_()


class WholeConv1d(cc.convs.Conv1d, Stateful):
    """Non-streaming conv with explicit (left, right) zero padding (cached_conv's Conv1d)."""

    def __init__(self, *args, **kwargs) -> None:
        cc.convs.Conv1d.__init__(self, *args, **kwargs)
        self.functional = False
        self._pad = tuple(self._pad)

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self._pad)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class WholeConvTranspose1d(cc.convs.ConvTranspose1d, Stateful):
    def __init__(self, *args, **kwargs) -> None:
        cc.convs.ConvTranspose1d.__init__(self, *args, **kwargs)
        self.functional = False


class Delay(Stateful):
    """A pure delay of ``frames`` steps in streaming builds, identity otherwise."""

    def __init__(self, channels: int, frames: int, streaming: bool) -> None:
        super().__init__()
        self.line = CachePad(channels, frames, crop=True) if streaming and frames > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        line = self.line
        if line is not None:
            return line(x)
        return x

    def reset_state(self) -> None:
        line = self.line
        if line is not None:
            line.reset_state()


class Layers:
    """Factory for streaming or whole-signal layers, with their delays.

    Every method returns ``(module, delay_out)`` where delays count steps at the output rate
    of the layer and include the delay of the layer's input (``delay_in``).
    """

    def __init__(self, streaming: bool, bias: bool = True) -> None:
        self.streaming = streaming
        self.bias = bias  # the default of every conv built here

    def conv(self, in_channels: int, out_channels: int, kernel_size: int, delay_in: int, *,
             stride: int = 1, dilation: int = 1, causal: bool = False, groups: int = 1,
             bias: bool | None = None, padding: tuple[int, int] | None = None) -> tuple[nn.Module, int]:
        bias = self.bias if bias is None else bias
        if padding is None:
            padding = padding_for(kernel_size, dilation, causal, stride)
        delay_out = conv_delay(delay_in, padding[1], stride)
        kwargs = dict(stride=stride, dilation=dilation, padding=padding, groups=groups, bias=bias,
                      cumulative_delay=delay_in)
        if self.streaming:
            module = StreamConv1d(in_channels, out_channels, kernel_size, **kwargs)
            assert module.cumulative_delay == delay_out, (module.cumulative_delay, delay_out)
        else:
            module = WholeConv1d(in_channels, out_channels, kernel_size, **kwargs)
        return module, delay_out

    def conv_transpose(self, in_channels: int, out_channels: int, stride: int, delay_in: int, *,
                       overlap: bool = True, groups: int = 1, kernel_size: int | None = None,
                       bias: bool | None = None) -> tuple[nn.Module, int]:
        """Upsampling by ``stride``; with ``overlap`` the kernel spans about two strides."""
        bias = self.bias if bias is None else bias
        if kernel_size is None:
            kernel_size = (2 * stride - stride % 2) if overlap else stride
        if (kernel_size - stride) % 2:
            raise ValueError(f"kernel {kernel_size} - stride {stride} must be even")
        padding = (kernel_size - stride) // 2
        delay_out = conv_transpose_delay(delay_in, padding, stride)
        kwargs = dict(stride=stride, padding=padding, groups=groups, bias=bias, cumulative_delay=delay_in)
        if self.streaming:
            module = StreamConvTranspose1d(in_channels, out_channels, kernel_size, **kwargs)
            assert module.cumulative_delay == delay_out, (module.cumulative_delay, delay_out)
        else:
            module = WholeConvTranspose1d(in_channels, out_channels, kernel_size, **kwargs)
        return module, delay_out

    def delay(self, channels: int, frames: int) -> Delay:
        return Delay(channels, frames, self.streaming)


def stateful_layers(model: nn.Module) -> Iterator[Stateful]:
    for module in model.modules():
        if isinstance(module, Stateful) and module.state_names:
            yield module


def reset_state(model: nn.Module) -> None:
    for module in stateful_layers(model):
        module.reset_state()


def set_functional(model: nn.Module, functional: bool) -> None:
    """Switch every stateful layer between in-place state updates and attribute assignment."""
    for module in model.modules():
        if isinstance(module, Stateful):
            module.functional = functional


def set_gemm(model: nn.Module, enabled: bool) -> None:
    """Let streaming convs pick their GEMM path by shape (the default), or force the plain
    ``F.conv1d`` / ``F.conv_transpose1d`` path (for comparisons; nothing else changes).

    The GEMM paths read the weights as views, so there is nothing to prepare or refresh
    after loading weights.
    """
    for module in model.modules():
        if isinstance(module, (StreamConv1d, StreamConvTranspose1d)):
            module.gemm_enabled = enabled

"""The root module of a Neutone FX file: DAW buffers in, model buffers through, DAW buffers out.

The Neutone plugin talks to the root of a ``.nm`` file (the SDK calls it the sample-queue wrapper)
in DAW terms: any sample rate, any buffer size, mono or stereo. The wrapped model
(``w2w_base``) wants its own rate and buffer size. ``NeutoneRoot`` sits between them, exactly as
docs/contracts.md §2 restates the SDK's behaviour:

- channels are adapted both ways (stereo averaged for a mono model, mono duplicated for stereo);
- each DAW buffer is resampled on its own to ``io_bs`` model samples (4-point cubic Hermite for
  audio, linear for the knob rows), with both corners kept in place;
- FIFOs collect ``io_bs`` pushes until ``model_bs`` samples are there, then the model runs;
- output is zeros until the queues are saturated, so every later pop finds a full buffer;
  that wait is the buffering delay reported to the host.

Everything here is TorchScript: the plugin loads the file with plain libtorch.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn

from tildekit.models.contract.neutone_host import (
    buffering_delay_samples,
    max_daw_queue_size,
    resampled_buffer_size,
    saturation_samples,
    select_model_buffer_size,
    select_model_sample_rate,
)

N_PARAMS = 4  # the plugin always sends 4 knob rows


# ---------------------------------------------------------------------------------------------
# Channels (the same rule as tildekit.models.contract.audio, for the plugin's 1 or 2 channels)


def adapt_channels(x: Tensor, channels: int) -> Tensor:
    """(1 or 2, n) -> (channels, n): stereo is averaged to mono, mono duplicated to stereo."""
    if x.size(0) == channels:
        return x
    if channels == 1:
        return (x[0:1] + x[1:2]) * 0.5
    return x.expand(channels, x.size(1))


# ---------------------------------------------------------------------------------------------
# Building blocks


class SampleFifo(nn.Module):
    """A circular FIFO of multichannel samples that allocates only when resized.

    Pushing beyond capacity drops the oldest samples (counted in ``dropped``), as the SDK's queue
    does; with the capacities the root uses this never happens, and the tests check that.
    """

    def __init__(self, channels: int, capacity: int) -> None:
        super().__init__()
        self.data = torch.zeros(channels, capacity)
        self.capacity = capacity
        self.head = 0  # index of the oldest sample
        self.size = 0
        self.dropped = 0

    @torch.jit.export
    def resize(self, channels: int, capacity: int) -> None:
        self.data = torch.zeros(channels, capacity)
        self.capacity = capacity
        self.reset()

    @torch.jit.export
    def reset(self) -> None:
        self.data.zero_()
        self.head = 0
        self.size = 0
        self.dropped = 0

    @torch.jit.export
    def push(self, x: Tensor) -> None:
        n = x.size(1)
        if n >= self.capacity:  # only the newest capacity samples survive
            self.dropped += self.size + n - self.capacity
            self.data.copy_(x[:, n - self.capacity:])
            self.head = 0
            self.size = self.capacity
            return
        overflow = self.size + n - self.capacity
        if overflow > 0:
            self.head = (self.head + overflow) % self.capacity
            self.size -= overflow
            self.dropped += overflow
        start = (self.head + self.size) % self.capacity
        first = min(n, self.capacity - start)
        self.data[:, start:start + first] = x[:, :first]
        if first < n:
            self.data[:, :n - first] = x[:, first:]
        self.size += n

    @torch.jit.export
    def pop(self, out: Tensor) -> int:
        """Move up to ``out.size(1)`` of the oldest samples into ``out``; return how many."""
        n = min(out.size(1), self.size)
        if n <= 0:
            return 0
        first = min(n, self.capacity - self.head)
        out[:, :first] = self.data[:, self.head:self.head + first]
        if first < n:
            out[:, first:n] = self.data[:, :n - first]
        self.head = (self.head + n) % self.capacity
        self.size -= n
        return n


class BlockResampler(nn.Module):
    """Stretches one buffer of ``n_in`` samples to ``n_out`` samples, first and last kept in place.

    Output sample j reads the input at position ``j * (n_in - 1) / (n_out - 1)``. ``cubic``
    interpolates through the 4 neighbours with a cubic Hermite (Catmull-Rom) spline, repeating
    the edge samples at the ends; otherwise linearly between the 2 neighbours. Each buffer is
    resampled on its own, with no state between buffers (the SDK's behaviour).
    """

    def __init__(self, n_in: int, n_out: int, cubic: bool) -> None:
        super().__init__()
        self.cubic = cubic
        self.n_in = n_in
        self.n_out = n_out
        self.frac = torch.zeros(1)
        self.i_m1 = torch.zeros(1, dtype=torch.long)
        self.i_0 = torch.zeros(1, dtype=torch.long)
        self.i_1 = torch.zeros(1, dtype=torch.long)
        self.i_2 = torch.zeros(1, dtype=torch.long)
        self.configure(n_in, n_out)

    @torch.jit.export
    def configure(self, n_in: int, n_out: int) -> None:
        self.n_in = n_in
        self.n_out = n_out
        step = 0.0 if n_out < 2 else (n_in - 1) / (n_out - 1)
        position = torch.arange(n_out, dtype=torch.float64) * step
        # Snap positions within float error of a sample onto it, so the corners are exact.
        position = torch.where((position - position.round()).abs() < 1e-9, position.round(), position)
        base = position.floor().clamp(0, n_in - 1)
        self.frac = (position - base).clamp(0.0, 1.0).to(torch.float32)
        self.i_0 = base.to(torch.long)
        self.i_m1 = (self.i_0 - 1).clamp(0, n_in - 1)
        self.i_1 = (self.i_0 + 1).clamp(0, n_in - 1)
        self.i_2 = (self.i_0 + 2).clamp(0, n_in - 1)

    @torch.jit.export
    def is_resampling(self) -> bool:
        return self.n_in != self.n_out

    def forward(self, y: Tensor) -> Tensor:
        if self.n_in == self.n_out:
            return y
        t = self.frac
        y0 = y.index_select(1, self.i_0)
        y1 = y.index_select(1, self.i_1)
        if not self.cubic:
            return y0 + (y1 - y0) * t
        ym1 = y.index_select(1, self.i_m1)
        y2 = y.index_select(1, self.i_2)
        c1 = 0.5 * (y1 - ym1)
        c2 = ym1 - 2.5 * y0 + 2.0 * y1 - 0.5 * y2
        c3 = 0.5 * (y2 - ym1) + 1.5 * (y0 - y1)
        return ((c3 * t + c2) * t + c1) * t + y0


# ---------------------------------------------------------------------------------------------
# The root module


class NeutoneRoot(nn.Module):
    """Sample-queue root of a Neutone FX file; ``w2w_base`` is the wrapped model (same name as the SDK)."""

    def __init__(self, w2w_base: nn.Module, daw_sr: int = 48000, daw_bs: int = 512) -> None:
        super().__init__()
        self.realtime = True
        self.n_params = N_PARAMS
        self.preserved_attributes: List[str] = list(ROOT_PRESERVED_ATTRIBUTES)
        self.w2w_base = w2w_base
        self.in_ch = 1 if w2w_base.is_input_mono() else 2
        self.out_ch = 1 if w2w_base.is_output_mono() else 2
        self.daw_sr = daw_sr
        self.daw_bs = daw_bs
        self.model_sr = daw_sr
        self.model_bs = daw_bs
        self.io_bs = daw_bs
        self.saturation_n = daw_bs
        self.seen_n = 0
        self.saturated = False
        self.in_queue = SampleFifo(self.in_ch, 1)
        self.params_queue = SampleFifo(self.n_params, 1)
        self.out_queue = SampleFifo(self.out_ch, 1)
        self.audio_in_resampler = BlockResampler(daw_bs, daw_bs, True)
        self.audio_out_resampler = BlockResampler(daw_bs, daw_bs, True)
        self.params_resampler = BlockResampler(daw_bs, daw_bs, False)
        self.model_in = torch.zeros(self.in_ch, 1)
        self.model_params = torch.zeros(self.n_params, 1)
        self.io_out = torch.zeros(self.out_ch, 1)
        self.bt_out = torch.zeros(2, 1)
        self.set_daw_sample_rate_and_buffer_size(daw_sr, daw_bs)

    # -- configuration ---------------------------------------------------------------------

    @torch.jit.export
    def set_daw_sample_rate_and_buffer_size(self, daw_sr: int, daw_bs: int,
                                            model_sr: Optional[int] = None,
                                            model_bs: Optional[int] = None) -> int:
        if daw_sr <= 0 or daw_bs <= 0:
            raise ValueError("Neutone: DAW sample rate and buffer size must be positive, got "
                             + str(daw_sr) + " Hz / " + str(daw_bs) + " samples")
        native_rates = self.get_native_sample_rates()
        if model_sr is None:
            sr = select_model_sample_rate(daw_sr, native_rates)
        else:
            sr = model_sr
            if len(native_rates) > 0 and sr not in native_rates:
                raise ValueError("Neutone: model_sr " + str(sr) + " is not a native sample rate of this model")
        io_bs = resampled_buffer_size(daw_sr, sr, daw_bs)
        native_sizes = self.get_native_buffer_sizes()
        if model_bs is None:
            bs = select_model_buffer_size(io_bs, native_sizes)
        else:
            bs = model_bs
            if len(native_sizes) > 0 and bs not in native_sizes:
                raise ValueError("Neutone: model_bs " + str(bs) + " is not a native buffer size of this model")
        if io_bs != daw_bs and min(io_bs, daw_bs) < 2:
            raise ValueError("Neutone: a buffer of " + str(daw_bs) + " samples is too short to resample")
        self.w2w_base.set_sample_rate_and_buffer_size(sr, bs)
        self.daw_sr = daw_sr
        self.daw_bs = daw_bs
        self.model_sr = sr
        self.model_bs = bs
        self.io_bs = io_bs
        self.saturation_n = saturation_samples(io_bs, bs)
        capacity = 2 * io_bs + bs
        self.in_queue.resize(self.in_ch, capacity)
        self.params_queue.resize(self.n_params, capacity)
        self.out_queue.resize(self.out_ch, capacity)
        self.audio_in_resampler.configure(daw_bs, io_bs)
        self.audio_out_resampler.configure(io_bs, daw_bs)
        self.params_resampler.configure(daw_bs, io_bs)
        self.model_in = torch.zeros(self.in_ch, bs)
        self.model_params = torch.zeros(self.n_params, bs)
        self.io_out = torch.zeros(self.out_ch, io_bs)
        queue_size = max_daw_queue_size(daw_sr, daw_bs, sr, bs)
        self.bt_out = torch.zeros(2, queue_size)
        self.reset()
        return queue_size

    @torch.jit.export
    def reset(self) -> None:
        self.w2w_base.reset()
        self.in_queue.reset()
        self.params_queue.reset()
        self.out_queue.reset()
        self.model_in.zero_()
        self.model_params.zero_()
        self.io_out.zero_()
        self.bt_out.zero_()
        self.seen_n = 0
        self.saturated = False

    # -- audio -------------------------------------------------------------------------------

    def _check_input(self, x: Tensor, params: Optional[Tensor]) -> None:
        if x.dim() != 2 or x.size(0) < 1 or x.size(0) > 2 or x.size(1) != self.daw_bs:
            raise ValueError(
                "Neutone: expected audio of shape (1 or 2, " + str(self.daw_bs) + "), got "
                + str(x.shape) + ": call set_daw_sample_rate_and_buffer_size with the DAW buffer "
                + "size first")
        if params is not None:
            rows = self.n_params
            if params.dim() != 2 or params.size(0) != rows or params.size(1) != self.daw_bs:
                raise ValueError(
                    "Neutone: expected params of shape (" + str(rows) + ", " + str(self.daw_bs)
                    + "), got " + str(params.shape))

    def _push_and_run(self, x: Tensor, params: Optional[Tensor]) -> None:
        """Push one DAW buffer (already model channels) and run the model on every full buffer."""
        self.in_queue.push(self.audio_in_resampler(x))
        if params is not None:
            self.params_queue.push(self.params_resampler(params))
        if not self.saturated:
            self.seen_n += self.io_bs
            if self.seen_n >= self.saturation_n:
                self.saturated = True
        while self.in_queue.size >= self.model_bs:
            self.in_queue.pop(self.model_in)
            if self.params_queue.size >= self.model_bs:
                self.params_queue.pop(self.model_params)
                y = self.w2w_base.forward(self.model_in, self.model_params)
            else:
                y = self.w2w_base.forward(self.model_in, None)
            if y.dim() != 2 or y.size(0) != self.out_ch or y.size(1) != self.model_bs:
                raise ValueError(
                    "Neutone: the model returned shape " + str(y.shape) + " for a buffer of "
                    + str(self.model_bs) + " samples; expected (" + str(self.out_ch) + ", "
                    + str(self.model_bs) + ")")
            self.out_queue.push(y)

    def forward(self, x: Tensor, params: Optional[Tensor] = None) -> Tensor:
        self._check_input(x, params)
        daw_ch = x.size(0)
        self._push_and_run(adapt_channels(x, self.in_ch), params)
        if self.saturated:
            self.out_queue.pop(self.io_out)
        else:
            self.io_out.zero_()
        y = self.audio_out_resampler(self.io_out)
        return adapt_channels(y, daw_ch).clone()

    @torch.jit.export
    def forward_bt(self, x: Tensor, params: Optional[Tensor] = None) -> Optional[Tensor]:
        self._check_input(x, params)
        daw_ch = x.size(0)
        self._push_and_run(adapt_channels(x, self.in_ch), params)
        filled = 0
        while self.saturated and self.out_queue.size >= self.io_bs:
            self.out_queue.pop(self.io_out)
            y = adapt_channels(self.audio_out_resampler(self.io_out), daw_ch)
            self.bt_out[0:daw_ch, filled:filled + self.daw_bs] = y
            filled += self.daw_bs
        if filled == 0:
            return None
        return self.bt_out[0:daw_ch, 0:filled].clone()

    @torch.jit.export
    def forward_offline(self, x: Tensor, params: Optional[Tensor] = None) -> Tensor:
        """Render a whole clip in DAW buffers and return it aligned: all delay removed."""
        self.reset()
        n = x.size(1)
        delay = self.calc_buffering_delay_samples() + self.calc_model_delay_samples()
        n_chunks = (n + delay + self.daw_bs - 1) // self.daw_bs
        padding = n_chunks * self.daw_bs - n
        audio = torch.cat([x, torch.zeros(x.size(0), padding, dtype=x.dtype)], dim=1)
        knobs = params
        if params is not None:
            if params.size(1) != n:
                raise ValueError("Neutone: params must have as many samples as the audio")
            last = params[:, n - 1:n].expand(params.size(0), padding)  # hold the last knob values
            knobs = torch.cat([params, last], dim=1)
        outputs: List[Tensor] = []
        for i in range(n_chunks):
            chunk = audio[:, i * self.daw_bs:(i + 1) * self.daw_bs]
            if knobs is None:
                outputs.append(self.forward(chunk, None))
            else:
                outputs.append(self.forward(chunk, knobs[:, i * self.daw_bs:(i + 1) * self.daw_bs]))
        return torch.cat(outputs, dim=1)[:, delay:delay + n]

    # -- queries -------------------------------------------------------------------------------

    @torch.jit.export
    def is_resampling(self) -> bool:
        return self.io_bs != self.daw_bs

    @torch.jit.export
    def calc_buffering_delay_samples(self) -> int:
        delay = buffering_delay_samples(self.io_bs, self.model_bs)
        if self.is_resampling():
            delay = int(delay * self.daw_bs / self.io_bs)
        return delay

    @torch.jit.export
    def calc_model_delay_samples(self) -> int:
        delay = self.w2w_base.calc_model_delay_samples()
        if self.is_resampling():
            delay = int(delay * self.daw_bs / self.io_bs)
        return delay

    @torch.jit.export
    def is_input_mono(self) -> bool:
        return self.w2w_base.is_input_mono()

    @torch.jit.export
    def is_output_mono(self) -> bool:
        return self.w2w_base.is_output_mono()

    @torch.jit.export
    def get_native_sample_rates(self) -> List[int]:
        return self.w2w_base.get_native_sample_rates()

    @torch.jit.export
    def get_native_buffer_sizes(self) -> List[int]:
        return self.w2w_base.get_native_buffer_sizes()

    @torch.jit.export
    def get_default_param_values(self) -> Tensor:
        values = self.w2w_base.get_numerical_params_default_values_0to1()
        out = torch.zeros(self.n_params, 1)
        n = min(values.size(0), self.n_params)
        out[0:n] = values[0:n].reshape(n, 1)
        return out

    @torch.jit.export
    def get_wet_default_value(self) -> float:
        return self.w2w_base.get_wet_default_value()

    @torch.jit.export
    def get_dry_default_value(self) -> float:
        return self.w2w_base.get_dry_default_value()

    @torch.jit.export
    def get_input_gain_default_value(self) -> float:
        return self.w2w_base.get_input_gain_default_value()

    @torch.jit.export
    def get_output_gain_default_value(self) -> float:
        return self.w2w_base.get_output_gain_default_value()

    @torch.jit.export
    def to_metadata(self) -> Dict[str, Any]:
        return self.w2w_base.to_metadata()

    @torch.jit.export
    def get_metadata_json(self) -> str:
        return self.w2w_base.get_metadata_json()

    @torch.jit.export
    def get_preserved_attributes(self) -> List[str]:
        return list(self.preserved_attributes)


# Every method the plugin or the SDK may call, except forward and forward_offline, plus w2w_base.
ROOT_PRESERVED_ATTRIBUTES: List[str] = [
    "w2w_base",
    "forward_bt",
    "is_input_mono",
    "is_output_mono",
    "get_native_sample_rates",
    "get_native_buffer_sizes",
    "is_resampling",
    "calc_buffering_delay_samples",
    "calc_model_delay_samples",
    "set_daw_sample_rate_and_buffer_size",
    "reset",
    "get_preserved_attributes",
    "to_metadata",
    "get_metadata_json",
    "get_wet_default_value",
    "get_dry_default_value",
    "get_default_param_values",
    "get_input_gain_default_value",
    "get_output_gain_default_value",
]

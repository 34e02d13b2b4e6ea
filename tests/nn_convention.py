"""nn~-convention TorchScript models built the way other tools export them, with no tildekit card.

``RaveLike`` is laid out as RAVE's ``scripts/export.py --streaming`` lays out its files (through
nn_tilde's Python module): ``forward`` / ``encode`` / ``decode``, int64 ``<method>_params``
buffers, label lists, ``get_methods`` / ``get_attributes``, attributes whose getters return a
bare value (RAVE) or a tuple (nn_tilde's generated getters), an int ``sr``. Its streaming stack
is made of tildekit's cached_conv layers (models/streaming.py) with known delays:

    encode: centered conv k=3 (an identity: streams 1 sample late) -> delay line of ENCODE_LINE
            -> polyphase split: each frame of COMPRESSION samples becomes COMPRESSION latent dims
    decode: latent + offset -> polyphase join -> gain -> delay line of DECODE_LINE

so ``forward`` is the input delayed by exactly FORWARD_DELAY samples (times ``gain``).
With ``stochastic`` the decoder adds tiny Gaussian noise, as RAVE's decoder fills the latent
dimensions it does not export with noise.

``Bare`` is the least nn~ accepts: a stereo ``forward`` with a ``forward_params`` buffer, no
``get_methods`` (nn~ then lists the methods that have ``_params``), no labels, no rate, and one
float attribute found the same way (``gain_params`` + ``set_gain``, getter returning a bare float).
"""

# No `from __future__ import annotations`: TorchScript reads the class annotations as types.
from pathlib import Path
from typing import List, Tuple

import torch
from torch import Tensor, nn

from tildekit.models.streaming import Layers

SAMPLE_RATE = 44100
COMPRESSION = 8
ENCODE_LINE = 40
DECODE_LINE = 23
CONV_DELAY = 1
FORWARD_DELAY = CONV_DELAY + ENCODE_LINE + DECODE_LINE
BARE_DELAY = 100


class RaveLike(nn.Module):
    forward_input_labels: List[str]
    forward_output_labels: List[str]
    encode_input_labels: List[str]
    encode_output_labels: List[str]
    decode_input_labels: List[str]
    decode_output_labels: List[str]

    def __init__(self, stochastic: bool = False) -> None:
        super().__init__()
        layers = Layers(streaming=True)
        self.conv, delay = layers.conv(1, 1, 3, 0)
        assert delay == CONV_DELAY
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0, 1] = 1.0
            self.conv.bias.zero_()
        self.encode_line = layers.delay(1, ENCODE_LINE)
        self.decode_line = layers.delay(1, DECODE_LINE)
        self.sr = SAMPLE_RATE
        self.compression = COMPRESSION
        self.latent_size = COMPRESSION
        self.stochastic = stochastic
        audio = ["(signal) Channel 1"]
        latents = [f"(signal) Latent dimension {i + 1}" for i in range(COMPRESSION)]
        for name, params, inputs, outputs in (
                ("encode", [1, 1, COMPRESSION, COMPRESSION], audio, latents),
                ("decode", [COMPRESSION, COMPRESSION, 1, 1], latents, audio),
                ("forward", [1, 1, 1, 1], audio, audio)):
            self.register_buffer(f"{name}_params", torch.tensor(params))  # int64, as nn_tilde
            setattr(self, f"{name}_input_labels", inputs)
            setattr(self, f"{name}_output_labels", outputs)
        self.methods = ["encode", "decode", "forward"]
        self.attributes = ["gain", "offset", "learn_target", "steps"]
        self.gain: Tuple[float] = (1.0,)
        self.offset: Tuple[float] = (0.0,)
        self.learn_target: Tuple[bool] = (False,)
        self.steps: Tuple[int, int] = (3, 4)
        self.register_buffer("gain_params", torch.tensor([2]))
        self.register_buffer("offset_params", torch.tensor([2]))
        self.register_buffer("learn_target_params", torch.tensor([0]))
        self.register_buffer("steps_params", torch.tensor([1, 1]))

    @torch.jit.export
    def get_methods(self) -> List[str]:
        return self.methods

    @torch.jit.export
    def get_attributes(self) -> List[str]:
        return self.attributes

    @torch.jit.export
    def encode(self, x: Tensor) -> Tensor:
        y = self.encode_line(self.conv(x))
        b, _, t = y.shape
        frames = t // self.compression
        return y.reshape(b, frames, self.compression).permute(0, 2, 1).contiguous()

    @torch.jit.export
    def decode(self, z: Tensor) -> Tensor:
        b, _, frames = z.shape
        z = z + self.offset[0]
        if self.stochastic:
            z = z + 1e-3 * torch.randn(z.shape)
        y = z.permute(0, 2, 1).reshape(b, 1, frames * self.compression) * self.gain[0]
        return self.decode_line(y)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    # RAVE's getters return the bare value; nn_tilde's generated ones a tuple.
    @torch.jit.export
    def get_gain(self) -> Tuple[float]:
        return self.gain

    @torch.jit.export
    def set_gain(self, gain: float) -> int:
        self.gain = (gain,)
        return 0

    @torch.jit.export
    def get_offset(self) -> Tuple[float]:
        return self.offset

    @torch.jit.export
    def set_offset(self, offset: float) -> int:
        self.offset = (offset,)
        return 0

    @torch.jit.export
    def get_learn_target(self) -> bool:
        return self.learn_target[0]

    @torch.jit.export
    def set_learn_target(self, learn_target: bool) -> int:
        self.learn_target = (learn_target,)
        return 0

    @torch.jit.export
    def get_steps(self) -> Tuple[int, int]:
        return self.steps

    @torch.jit.export
    def set_steps(self, a: int, b: int) -> int:
        self.steps = (a, b)
        return 0


class Bare(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.line = Layers(streaming=True).delay(2, BARE_DELAY)
        self.register_buffer("forward_params", torch.tensor([2, 1, 2, 1], dtype=torch.int))
        self.register_buffer("gain_params", torch.tensor([2], dtype=torch.int))
        self.gain = 1.0

    def forward(self, x: Tensor) -> Tensor:
        return self.line(x) * self.gain

    @torch.jit.export
    def get_gain(self) -> float:
        return self.gain

    @torch.jit.export
    def set_gain(self, gain: float) -> int:
        self.gain = gain
        return 0


def save(module: nn.Module, path: Path) -> Path:
    """Script and save as nn_tilde's ``export_to_ts`` does: no extra files, so no tildekit card."""
    torch.jit.script(module.eval()).save(str(path))
    return path


class ShortForward(Bare):
    """Broken: forward drops the last sample, so nn~ reports an inconsistent output size."""

    def forward(self, x: Tensor) -> Tensor:
        return self.line(x)[..., :-1] * self.gain


class RaisingRate(Bare):
    """Broken: set_sample_rate raises on a rate it was not made for ([reload( aborts Pd)."""

    @torch.jit.export
    def set_sample_rate(self, sample_rate: int) -> int:
        if sample_rate != 44100:
            raise ValueError("unsupported rate")
        return 0


class NotNN(nn.Module):
    """TorchScript, but no nn~ convention: no get_methods and no <method>_params buffer."""

    def forward(self, x: Tensor) -> Tensor:
        return x

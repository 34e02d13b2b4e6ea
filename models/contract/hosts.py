"""What the hosts accept, and the defaults every tool shares (docs/contracts.md).

One home for the numbers that patches, the engine, the exporters, the bundle and the CLI would
otherwise each restate: the default buffer and OSC endpoint, and the buffer sizes each host takes.
"""

from __future__ import annotations

from typing import Literal

from tildekit.errors import TildekitError
from tildekit.models.contract.card import ModelCard

DEFAULT_BUFFER = 2048  # samples: a host's usual buffer; patches, engine, exports and benchmarks
DEFAULT_OSC_PORT = 9000  # UDP: where patches and the engine listen and the controller sends
DEFAULT_OSC_HOST = "127.0.0.1"  # this machine only, until the user opens it to the network

# Neutone: the DAW buffers the plugin is timed at (48 kHz), and the longest native model buffer.
NEUTONE_DAW_BUFFERS = (128, 256, 512, 1024, 2048)
NEUTONE_MAX_NATIVE_BUFFER = 16384

# nn~ (docs/contracts.md §1) needs a power of two; the engine and ONNX Runtime take any whole
# number of latent frames.
BufferHost = Literal["nn", "engine"]


def nn_buffer_problem(ratio: int, buffer: int) -> str | None:
    """Why nn~ cannot stream a model of highest ratio ``ratio`` at ``buffer``, or None."""
    if buffer < 1 or buffer & (buffer - 1) or buffer < ratio:
        return f"nn~ needs a power of two >= the model's highest ratio {ratio} (e.g. {max(ratio, DEFAULT_BUFFER)})"
    return None


def engine_buffer_problem(ratio: int, buffer: int) -> str | None:
    """Why the engine (and evaluation) cannot stream at ``buffer``: it must hold whole latent frames."""
    if buffer < ratio or buffer % ratio:
        return (f"must be a positive multiple of {ratio} (the model's compression), "
                f"e.g. {max(ratio, DEFAULT_BUFFER // ratio * ratio)}")
    return None


def check_buffer(card: ModelCard, buffer: int, host: BufferHost = "engine") -> None:
    """Raise a one-line TildekitError when ``host`` cannot run ``card``'s model at ``buffer``."""
    rule = nn_buffer_problem if host == "nn" else engine_buffer_problem
    problem = rule(card.highest_ratio, buffer)
    if problem is not None:
        raise TildekitError(f"--buffer {buffer}: {problem}")


def neutone_native_buffers(compression: int) -> list[int]:
    """Buffers a Neutone model streams whole: the compression times powers of two, up to 16384."""
    sizes = [compression]
    while sizes[-1] * 2 <= max(NEUTONE_MAX_NATIVE_BUFFER, compression):
        sizes.append(sizes[-1] * 2)
    return sizes

"""Reproducible noise for streaming models.

Noise drawn with ``torch.rand`` would differ between one whole-signal pass and the same
signal in buffers, breaking streaming equality. Instead each noise source reads a fixed table
(made once from a seed) at the absolute position of each sample: the same position gives the
same value whatever the buffer size, in TorchScript, ONNX Runtime or Python.

The streaming build counts positions in ``counter`` (state). Its output at stream position
``n`` is the whole-signal output at position ``n - lag``, so it reads the table there; the lag
is the delay the layers before it add, plus ``extra_lag`` given per call (the decoder's input
is late by the encoder's delay when ``forward`` chains them). Rows of a batch read at offsets
``row * ROW_STRIDE`` so voices of ``mc.nn~`` get independent noise.
"""

from __future__ import annotations

import torch

from tildekit.models.streaming import Stateful

TABLE_LENGTH = 1 << 15
ROW_STRIDE = 7919  # prime: rows do not line up with the table period


class NoiseTable(Stateful):
    state_names = ("counter",)

    def __init__(self, channels: int, lag: int, streaming: bool, kind: str = "uniform",
                 seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        if kind == "uniform":
            table = torch.rand(channels, TABLE_LENGTH, generator=generator) * 2 - 1
        else:
            table = torch.randn(channels, TABLE_LENGTH, generator=generator)
        self.register_buffer("table", table, persistent=False)
        self.register_buffer("counter", torch.zeros(1, dtype=torch.long), persistent=False)
        self.lag = lag
        self.streaming = streaming
        self.offset = 0  # start position of a whole-signal pass (randomised in training)
        self.table_length = TABLE_LENGTH
        self.row_stride = ROW_STRIDE

    def forward(self, batch: int, length: int, extra_lag: int) -> torch.Tensor:
        """(batch, channels, length) noise at the current positions."""
        positions = torch.arange(length, device=self.table.device, dtype=torch.long)
        if self.streaming:
            positions = positions + self.counter - (self.lag + extra_lag)
            if self.functional:
                self.counter = self.counter + length
            else:
                self.counter.add_(length)
        else:
            positions = positions + self.offset
        rows = torch.arange(batch, device=self.table.device, dtype=torch.long).unsqueeze(1) * self.row_stride
        index = torch.remainder(positions.unsqueeze(0) + rows, self.table_length)  # (batch, length)
        return self.table[:, index].permute(1, 0, 2)

    def reset_state(self) -> None:
        self.counter.zero_()

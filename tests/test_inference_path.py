"""The GEMM inference paths of the streaming convs compute what the plain convs compute.

Streaming convs pick, by shape, an im2col ``F.linear`` (``StreamConv1d``) or a per-frame
matmul (``StreamConvTranspose1d``) instead of ``F.conv1d`` / ``F.conv_transpose1d``
(:func:`tildekit.models.streaming.set_gemm` forces the plain path). Checked on the scripted
ExportCore (what nn~ runs), over consecutive buffers, batch 1 and 4, and layer by layer on
shapes that take every branch (dilation, stride, pointwise, one frame, bias or not).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from tildekit.export.core import ExportCore
from tildekit.models.autoencoder import build_model
from tildekit.models.config import load_profile
from tildekit.models.streaming import Layers, prefers_gemm, set_gemm

TOLERANCE = 1e-5


def _scripted_core(profile: str, gemm: bool) -> torch.jit.ScriptModule:
    torch.manual_seed(0)
    model = build_model(load_profile(profile).model, streaming=True)
    set_gemm(model, gemm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(ExportCore(model))


@pytest.mark.parametrize("profile", ["small", "raspberry"])
@pytest.mark.parametrize("batch", [1, 4])
@torch.no_grad()
def test_scripted_gemm_path_equals_plain_path(profile: str, batch: int) -> None:
    compression = load_profile(profile).model.compression
    x = 0.3 * torch.randn(batch, 1, 6 * 2048, generator=torch.Generator().manual_seed(1))
    for buffer in (2048, compression):
        # fresh scripts: both start from zero state
        fast, plain = _scripted_core(profile, True), _scripted_core(profile, False)
        for chunk in x.split(buffer, -1):
            y_fast, y_plain = fast(chunk), plain(chunk)
            assert y_fast.shape == y_plain.shape == chunk.shape
            err = (y_fast - y_plain).abs().max().item()
            assert err <= TOLERANCE, f"{profile} batch {batch} buffer {buffer}: {err:.2e}"


CONV_SHAPES = [  # in, out, kernel, dilation, stride, input frames
    (24, 24, 3, 3, 1, 32), (96, 96, 3, 9, 1, 8), (64, 128, 8, 1, 4, 32), (128, 128, 1, 1, 1, 4),
    (128, 128, 3, 1, 1, 2), (32, 32, 3, 1, 1, 1),
]


@pytest.mark.parametrize("shape", CONV_SHAPES)
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("bias", [True, False])
@torch.no_grad()
def test_conv_gemm_equals_conv1d(shape: tuple[int, ...], batch: int, bias: bool) -> None:
    cin, cout, kernel, dilation, stride, frames = shape
    conv, _ = Layers(True).conv(cin, cout, kernel, 0, dilation=dilation, stride=stride, bias=bias)
    x = torch.randn(batch, cin, frames * stride * 3)
    padded = conv.padded(x)
    out_frames = (padded.shape[-1] - (kernel - 1) * dilation - 1) // stride + 1
    expected = torch.nn.functional.conv1d(padded, conv.weight, conv.bias, stride, 0, dilation)
    got = conv.gemm(padded, out_frames)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("stride,overlap", [(2, True), (4, True), (4, False)])
@pytest.mark.parametrize("batch", [1, 4])
@torch.no_grad()
def test_conv_transpose_gemm_streams_like_conv_transpose(stride: int, overlap: bool, batch: int) -> None:
    torch.manual_seed(2)
    fast, _ = Layers(True).conv_transpose(48, 24, stride, 0, overlap=overlap)
    plain, _ = Layers(True).conv_transpose(48, 24, stride, 0, overlap=overlap)
    plain.load_state_dict(fast.state_dict())
    plain.gemm_enabled = False
    assert fast.frame_gemm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted_fast, scripted_plain = torch.jit.script(fast), torch.jit.script(plain)
    x = torch.randn(batch, 48, 24)
    for chunk in x.split(6, -1):
        err = (scripted_fast(chunk) - scripted_plain(chunk)).abs().max().item()
        assert err <= TOLERANCE


def test_gemm_choice_follows_the_measured_rule() -> None:
    assert prefers_gemm(128, 24, 3, 1)  # dilated: slow_conv_dilated2d otherwise
    assert not prefers_gemm(128, 24, 1, 1)  # many frames, few channels: F.conv1d
    assert prefers_gemm(2, 768, 1, 1)  # deep layers: MKL's W @ cols orientation is slow
    assert not prefers_gemm(1, 768, 1, 1)  # one frame: a matrix-vector product either way
    assert not prefers_gemm(8, 768, 1, 16)  # grouped convs keep F.conv1d

"""Neutone FX export: the plugin's call sequence on a reloaded .nm, buffering arithmetic, metadata rules.

The stand-in core is exactly invertible (each latent frame holds the frame's samples, one latent
dimension per sample phase) with a known streaming delay, so the wrapper's output can be
compared sample for sample with the input shifted by the delays it reports.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Optional

import pytest
import torch
from torch import Tensor, nn

from tests.conftest import make_card
from tildekit.errors import TildekitError
from tildekit.export.card_io import card_extra_files, read_card
from tildekit.export.check import check_file
from tildekit.export.neutone import KNOBS, W2W_PRESERVED_ATTRIBUTES, TildekitW2W
from tildekit.export.neutone_check import check_neutone_file
from tildekit.export.neutone_contract import (
    CORE_METADATA_KEYS,
    CORE_PRESERVED_ATTRIBUTES,
    ROOT_SIGNATURES,
    W2W_METADATA_KEYS,
    W2W_SIGNATURES,
    method_signature,
)
from tildekit.export.neutone_metadata import (
    METADATA_FILE_NAME,
    NeutoneInfo,
    NeutoneMetadataError,
    build_metadata,
    validate_metadata,
    with_sounds,
)
from tildekit.export.neutone_queue import ROOT_PRESERVED_ATTRIBUTES, BlockResampler, NeutoneRoot, SampleFifo
from tildekit.export.target_neutone import export_neutone
from tildekit.models.contract.card import ModelCard
from tildekit.models.contract.hosts import neutone_native_buffers
from tildekit.models.contract.neutone_host import (
    buffering_delay_samples,
    max_daw_queue_size,
    saturation_samples,
    select_model_buffer_size,
    select_model_sample_rate,
)

pytestmark = pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning")

MODEL_SR = 48000
COMPRESSION = 16
CORE_DELAY = 37
DAW_RATES = (44100, 48000, 96000)
DAW_BUFFERS = (64, 128, 256, 512, 1024, 2048, 4096)


class PolyphaseCore(nn.Module):
    """Scriptable stand-in for ExportCore: an exact, delayed identity through a polyphase latent.

    ``encode`` delays the signal by ``delay`` samples (state kept between calls) and lays each
    frame's ``compression`` samples of each channel out as latent dimensions; ``decode`` undoes it.
    """

    def __init__(self, channels: int = 1, compression: int = COMPRESSION, delay: int = CORE_DELAY,
                 sample_rate: int = MODEL_SR) -> None:
        super().__init__()
        self.channels = channels
        self.compression = compression
        self.latent_size = channels * compression
        self.sample_rate = sample_rate
        self.delay = delay
        self.temperature = 0.0
        self.encoder_frames_delay = 0
        self.gain = nn.Parameter(torch.ones(1))  # a real parameter: export must freeze it
        self.state = torch.zeros(1, channels, delay)

    def encode(self, x: Tensor) -> Tensor:
        joined = torch.cat([self.state.expand(x.size(0), self.channels, self.delay), x], dim=2)
        self.state = joined[:1, :, joined.size(2) - self.delay:].clone()
        y = joined[:, :, :x.size(2)] * self.gain
        b, c, t = y.shape
        frames = t // self.compression
        return (y.reshape(b, c, frames, self.compression).permute(0, 1, 3, 2)
                .reshape(b, c * self.compression, frames))

    def decode(self, z: Tensor) -> Tensor:
        b, _, frames = z.shape
        return (z.reshape(b, self.channels, self.compression, frames).permute(0, 1, 3, 2)
                .reshape(b, self.channels, frames * self.compression))

    def decode_from(self, z: Tensor, input_delay: int) -> Tensor:
        return self.decode(z)

    @torch.jit.export
    def reset_state(self) -> None:
        self.state.zero_()


class ShortCore(PolyphaseCore):
    """A broken core: decoding drops the last latent frame, so buffers come back too short."""

    def decode_from(self, z: Tensor, input_delay: int) -> Tensor:
        return self.decode(z[:, :, : z.size(2) - 1])


def card_for(channels: int = 1, compression: int = COMPRESSION, delay: int = CORE_DELAY,
             name: str = "tiny", with_stats: bool = False) -> ModelCard:
    card = make_card(latent_size=channels * compression, compression=compression,
                     sample_rate=MODEL_SR, name=name, channels=channels, delay=delay)
    return card if with_stats else dataclasses.replace(card, latents=[])


def make_w2w(channels: int = 1, delay: int = CORE_DELAY) -> TildekitW2W:
    return TildekitW2W(PolyphaseCore(channels, delay=delay), card_for(channels, delay=delay),
                       date_created=1.7e9)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("neutone")


def _export_and_load(folder: Path, name: str, channels: int, delay: int):
    path = folder / f"{name}.nm"
    export_neutone(make_w2w(channels, delay), card_for(channels, delay=delay), path, quick=True)
    return torch.jit.load(str(path), _extra_files={"metadata.json": ""})


@pytest.fixture(scope="module")
def mono_nm(export_dir):
    return _export_and_load(export_dir, "mono", 1, CORE_DELAY)


@pytest.fixture(scope="module")
def stereo_nm(export_dir):
    return _export_and_load(export_dir, "stereo", 2, CORE_DELAY)


@pytest.fixture(scope="module")
def undelayed_nm(export_dir):
    return _export_and_load(export_dir, "undelayed", 1, 0)


def stream(model, audio: Tensor, block: int, params: Tensor | None = None) -> Tensor:
    """Feed ``audio`` through ``model.forward`` in blocks, as the plugin does, and join the output."""
    outs = []
    for start in range(0, audio.size(1), block):
        chunk = audio[:, start:start + block]
        knobs = None if params is None else params[:, start:start + block]
        outs.append(model.forward(chunk, knobs))
    return torch.cat(outs, dim=1)


def shifted(x: Tensor, delay: int) -> Tensor:
    """``x`` delayed by ``delay`` samples, same length."""
    return torch.cat([torch.zeros(x.size(0), delay), x[:, : x.size(1) - delay]], dim=1)


def noise(channels: int, n: int, seed: int = 0) -> Tensor:
    return 0.3 * torch.randn(channels, n, generator=torch.Generator().manual_seed(seed))


def leading_zeros(x: Tensor) -> int:
    nonzero = (x.abs().amax(dim=0) > 1e-6).nonzero()
    return int(nonzero[0, 0]) if len(nonzero) else x.size(1)


# --------------------------------------------------------------------------------------------
# Buffer arithmetic


def simulated_saturation(io_bs: int, model_bs: int, horizon: int = 400) -> int:
    """Smallest wait (in pushed samples, whole buffers) after which popping io_bs never starves."""
    for wait_buffers in range(1, horizon):
        queued_in = queued_out = 0
        ok = True
        for step in range(1, horizon):
            queued_in += io_bs
            while queued_in >= model_bs:
                queued_in -= model_bs
                queued_out += model_bs
            if step >= wait_buffers:
                if queued_out < io_bs:
                    ok = False
                    break
                queued_out -= io_bs
        if ok:
            return wait_buffers * io_bs
    raise AssertionError("no saturation found")


@pytest.mark.parametrize("io_bs,model_bs", [
    (4, 7), (7, 4), (64, 2048), (512, 512), (4096, 2048), (558, 2048), (70, 16), (1115, 4096),
    (3, 5), (6, 4), (128, 96), (2229, 256),
])
def test_saturation_is_the_smallest_wait_that_never_starves(io_bs, model_bs):
    assert saturation_samples(io_bs, model_bs) == simulated_saturation(io_bs, model_bs)
    assert buffering_delay_samples(io_bs, model_bs) == saturation_samples(io_bs, model_bs) - io_bs


def test_saturation_cases_named_by_the_contract():
    assert saturation_samples(256, 2048) == 2048  # io_bs divides model_bs
    assert saturation_samples(4096, 1024) == 4096  # model_bs divides io_bs
    assert saturation_samples(4, 7) == 12  # worst-case fill level


def test_model_rate_and_buffer_selection_rules():
    assert select_model_sample_rate(44100, []) == 44100
    assert select_model_sample_rate(44100, [44100, 48000]) == 44100
    assert select_model_sample_rate(96000, [48000]) == 48000
    assert select_model_sample_rate(88200, [22050, 44100, 96000]) == 96000
    assert select_model_buffer_size(300, []) == 300
    assert select_model_buffer_size(300, [2048]) == 2048
    assert select_model_buffer_size(512, [4096, 1024, 2048]) == 1024  # first multiple, sorted
    assert select_model_buffer_size(300, [256, 512, 1024]) == 512  # no multiple: first larger
    assert select_model_buffer_size(5000, [256, 512, 1024]) == 1024  # none larger: closest
    assert max_daw_queue_size(44100, 512, 48000, 2048) == 2 * 512 + int(2048 * 44100 / 48000) + 1


def test_native_buffer_sizes_are_whole_frames():
    assert neutone_native_buffers(2048) == [2048, 4096, 8192, 16384]
    assert neutone_native_buffers(32768) == [32768]
    assert all(bs % 16 == 0 for bs in neutone_native_buffers(16))


def test_fifo_keeps_order_across_wraparound_and_counts_drops():
    fifo = SampleFifo(2, 10)
    ramp = torch.arange(40, dtype=torch.float32).expand(2, 40)
    out = torch.zeros(2, 4)
    got = []
    pos = 0
    for _ in range(8):  # push 3, pop 4 when possible: wraps many times
        fifo.push(ramp[:, pos:pos + 3])
        pos += 3
        while fifo.size >= 4:
            assert fifo.pop(out) == 4
            got.append(out[0].clone())
    assert torch.equal(torch.cat(got), torch.arange(len(got) * 4, dtype=torch.float32))
    assert fifo.dropped == 0
    fifo.reset()
    fifo.push(ramp[:, :8])
    fifo.push(ramp[:, 8:14])  # 14 > 10: the 4 oldest are dropped
    assert fifo.dropped == 4 and fifo.size == 10
    out10 = torch.zeros(2, 10)
    assert fifo.pop(out10) == 10
    assert torch.equal(out10[0], torch.arange(4, 14, dtype=torch.float32))
    assert fifo.pop(out10) == 0


@pytest.mark.parametrize("cubic", [True, False])
def test_block_resampler_keeps_corners_and_follows_a_sine(cubic):
    n_in, n_out = 512, 558  # one 44.1 kHz buffer at 48 kHz
    resampler = BlockResampler(n_in, n_out, cubic)
    assert resampler.is_resampling()
    t_in = torch.arange(n_in, dtype=torch.float64)
    sine = torch.sin(2 * math.pi * t_in / 64).float().unsqueeze(0)
    out = resampler(sine)
    assert out.shape == (1, n_out)
    assert out[0, 0] == sine[0, 0] and out[0, -1] == sine[0, -1]
    positions = torch.arange(n_out, dtype=torch.float64) * (n_in - 1) / (n_out - 1)
    expected = torch.sin(2 * math.pi * positions / 64).float()
    error = (out[0, 2:-2] - expected[2:-2]).abs().max()
    assert error < (2e-4 if cubic else 5e-3)
    constant = torch.full((2, n_in), 0.25)
    assert torch.equal(resampler(constant), torch.full((2, n_out), 0.25))
    assert torch.equal(BlockResampler(64, 64, cubic)(sine[:, :64]), sine[:, :64])


# --------------------------------------------------------------------------------------------
# The reloaded file: structure, metadata, preserved names


def test_saved_file_reloads_with_every_preserved_name(mono_nm, export_dir):
    preserved = mono_nm.get_preserved_attributes()
    assert set(preserved) == set(ROOT_PRESERVED_ATTRIBUTES)
    assert "w2w_base" in preserved
    assert "forward" not in preserved and "forward_offline" not in preserved
    for name in preserved + ["forward", "forward_offline"]:
        assert hasattr(mono_nm, name), name
    assert mono_nm.realtime is True
    for name in mono_nm.w2w_base.get_preserved_attributes():
        assert hasattr(mono_nm.w2w_base, name), name
    assert set(mono_nm.w2w_base.get_preserved_attributes()) == set(W2W_PRESERVED_ATTRIBUTES)
    assert not list(export_dir.glob(".*.tmp"))  # nothing half-written left behind


def test_embedded_metadata_is_valid_and_matches_to_metadata(export_dir, mono_nm):
    extra = {"metadata.json": ""}
    torch.jit.load(str(export_dir / "mono.nm"), _extra_files=extra)
    embedded = json.loads(extra["metadata.json"])
    validate_metadata(embedded)
    assert embedded["sample_sound_files"] == []
    assert {k: v for k, v in embedded.items() if k != "sample_sound_files"} == mono_nm.to_metadata()
    assert json.loads(mono_nm.get_metadata_json()) == mono_nm.to_metadata()
    assert embedded["model_type"] == "mono-mono"
    assert embedded["native_sample_rates"] == [MODEL_SR]
    assert embedded["native_buffer_sizes"] == neutone_native_buffers(COMPRESSION)
    assert [embedded["neutone_parameters"][f"p{i}"]["name"] for i in (1, 2, 3, 4)] == \
        ["chaos", "latent dim", "dim scale", "dim offset"]
    assert read_card(export_dir / "mono.nm") == card_for(1)


def test_host_queries_and_defaults(mono_nm, stereo_nm):
    assert mono_nm.is_input_mono() and mono_nm.is_output_mono()
    assert not stereo_nm.is_input_mono() and not stereo_nm.is_output_mono()
    assert mono_nm.get_native_sample_rates() == [MODEL_SR]
    assert mono_nm.get_native_buffer_sizes() == neutone_native_buffers(COMPRESSION)
    defaults = mono_nm.get_default_param_values()
    assert defaults.shape == (4, 1)
    assert defaults[:, 0].tolist() == [k.default_0to1 for k in KNOBS] == [0.0, 0.0, 0.5, 0.5]
    assert mono_nm.get_wet_default_value() == 1.0 and mono_nm.get_dry_default_value() == 0.0
    assert mono_nm.get_input_gain_default_value() == 0.5
    assert mono_nm.get_output_gain_default_value() == 0.5
    assert mono_nm.w2w_base.calc_model_delay_samples() == CORE_DELAY
    assert mono_nm.w2w_base.get_numerical_params_default_values_0to1().shape == (4, 1)
    assert set(mono_nm.w2w_base.get_neutone_parameters_metadata()) == {"p1", "p2", "p3", "p4"}


# --------------------------------------------------------------------------------------------
# w2w_base: the SDK's WaveformToWaveformBase structure


def test_w2w_base_preserves_the_sdk_names_in_the_sdk_order(mono_nm):
    w2w = mono_nm.w2w_base
    assert w2w.get_core_preserved_attributes() == CORE_PRESERVED_ATTRIBUTES
    assert CORE_PRESERVED_ATTRIBUTES[0] == "model" and "to_core_metadata" in CORE_PRESERVED_ATTRIBUTES
    full = w2w.get_preserved_attributes()
    assert full[:len(CORE_PRESERVED_ATTRIBUTES)] == CORE_PRESERVED_ATTRIBUTES
    for name in ("is_resampling", "set_daw_sample_rate_and_buffer_size", "get_metadata_json"):
        assert name in full
    assert isinstance(w2w.model, torch.jit.ScriptModule)
    assert w2w.realtime is True


def test_w2w_base_and_root_have_the_sdk_signatures(mono_nm):
    for name, want in W2W_SIGNATURES.items():
        assert method_signature(mono_nm.w2w_base, name) == want, name
    for name, want in ROOT_SIGNATURES.items():
        assert method_signature(mono_nm, name) == want, name
    assert method_signature(mono_nm.w2w_base, "set_daw_sample_rate_and_buffer_size") == \
        "(int, int, int?=None, int?=None) -> NoneType"
    assert method_signature(mono_nm, "no_such_method") is None


def test_to_core_metadata_is_to_metadata_without_the_realtime_fields(mono_nm):
    w2w = mono_nm.w2w_base
    core, full = w2w.to_core_metadata(), w2w.to_metadata()
    assert set(core) == set(CORE_METADATA_KEYS)
    assert set(full) - set(core) == set(W2W_METADATA_KEYS)
    assert all(core[k] == full[k] for k in core)
    assert core["model_name"] == "tiny" and core["sdk_version"] == "1.5.2"
    assert full == mono_nm.to_metadata()


def test_w2w_base_never_resamples_and_its_daw_setter_only_forwards(mono_nm):
    w2w = mono_nm.w2w_base
    mono_nm.set_daw_sample_rate_and_buffer_size(48000, 512)
    assert w2w.is_resampling() is False and w2w.model_bs == 512
    # native rate and buffer: forwarded to set_sample_rate_and_buffer_size, which takes them
    assert w2w.set_daw_sample_rate_and_buffer_size(MODEL_SR, 64) is None
    assert w2w.model_bs == 64
    # a rate the model was not trained at, and a buffer of partial frames: refused, not raised
    assert w2w.set_daw_sample_rate_and_buffer_size(44100, 100, None, None) is None
    assert w2w.model_bs == 64 and w2w.is_resampling() is False
    assert w2w.set_sample_rate_and_buffer_size(44100, 64) is False
    # the SDK's path for that rate is the root's: it resamples and picks a native buffer
    mono_nm.set_daw_sample_rate_and_buffer_size(44100, 100)
    assert mono_nm.is_resampling() and w2w.is_resampling() is False
    assert w2w.model_bs in neutone_native_buffers(COMPRESSION)
    assert mono_nm.forward(noise(1, 100)).shape == (1, 100)
    mono_nm.set_daw_sample_rate_and_buffer_size(48000, 512)


def test_check_lists_every_structure_item_and_passes(export_dir, mono_nm):
    results = check_file(export_dir / "mono.nm")
    items = [r.item for r in results]
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    for expected in ("root: every preserved name", "w2w_base: every preserved name",
                     "get_core_preserved_attributes", "to_core_metadata", "is_resampling False",
                     "set_daw_sample_rate_and_buffer_size forwards"):
        assert any(expected in item for item in items), expected


class IntSetterW2W(TildekitW2W):
    """A wrapper whose DAW setter returns an int (the root's signature), not the SDK's None."""

    @torch.jit.export
    def set_daw_sample_rate_and_buffer_size(self, daw_sr: int, daw_buffer_size: int,
                                            model_sr: Optional[int] = None,
                                            model_buffer_size: Optional[int] = None) -> int:
        self.set_sample_rate_and_buffer_size(daw_sr, daw_buffer_size)
        return 0


class ResamplingW2W(TildekitW2W):
    @torch.jit.export
    def is_resampling(self) -> bool:
        return True


def _save_unchecked(w2w: nn.Module, path: Path) -> Path:
    """Save a wrapper as export_neutone does, without its self-check (a file from elsewhere)."""
    card = card_for(1)
    scripted = torch.jit.script(NeutoneRoot(w2w.eval()))
    meta = with_sounds(w2w.to_metadata())
    torch.jit.save(scripted, str(path), _extra_files={METADATA_FILE_NAME: json.dumps(meta),
                                                      **card_extra_files(card)})
    return path


@pytest.mark.parametrize("wrapper, reason", [
    (IntSetterW2W, r"set_daw_sample_rate_and_buffer_size\(int, int, int\?=None, int\?=None\) -> int"),
    (ResamplingW2W, "is_resampling"),
])
def test_check_names_a_structure_that_differs_from_the_sdk(tmp_path, wrapper, reason):
    w2w = wrapper(PolyphaseCore(1), card_for(1), date_created=1.7e9)
    path = _save_unchecked(w2w, tmp_path / "odd.nm")
    failed = [r for r in check_file(path) if not r.passed]
    assert failed and any(re.search(reason, f"{r.item}: {r.reason}") for r in failed), failed
    with pytest.raises(TildekitError, match="not structured as the SDK's files"):
        export_neutone(wrapper(PolyphaseCore(1), card_for(1)), card_for(1), tmp_path / "refused.nm")
    assert not (tmp_path / "refused.nm").exists()


# --------------------------------------------------------------------------------------------
# The plugin's call sequence


@pytest.mark.parametrize("daw_sr", DAW_RATES)
def test_plugin_call_sequence_for_every_rate_and_buffer(mono_nm, stereo_nm, daw_sr):
    for model in (mono_nm, stereo_nm):
        for daw_bs in DAW_BUFFERS:
            io_bs = math.ceil(daw_bs * MODEL_SR / daw_sr)
            queue = model.set_daw_sample_rate_and_buffer_size(daw_sr, daw_bs)
            model_bs = select_model_buffer_size(io_bs, neutone_native_buffers(COMPRESSION))
            assert queue == 2 * daw_bs + int(model_bs * daw_sr / MODEL_SR) + 1
            model.reset()
            assert model.is_resampling() == (daw_sr != MODEL_SR)
            buffering = model.calc_buffering_delay_samples()
            expected = buffering_delay_samples(io_bs, model_bs)
            if daw_sr != MODEL_SR:
                expected = int(expected * daw_bs / io_bs)
            assert buffering == expected
            model_delay = model.calc_model_delay_samples()
            assert model_delay == (CORE_DELAY if daw_sr == MODEL_SR else int(CORE_DELAY * daw_bs / io_bs))
            knobs = model.get_default_param_values().expand(4, daw_bs)
            for i in range(3):
                stereo_in = noise(2, daw_bs, seed=i)
                assert model.forward(stereo_in, knobs).shape == (2, daw_bs)
                mono_in = noise(1, daw_bs, seed=10 + i)
                assert model.forward(mono_in).shape == (1, daw_bs)


@pytest.mark.parametrize("daw_bs", [64, 256, 512, 1000, 4096])
def test_buffering_delay_equals_leading_silence(undelayed_nm, daw_bs):
    model = undelayed_nm
    model.set_daw_sample_rate_and_buffer_size(MODEL_SR, daw_bs)
    dc = torch.ones(1, daw_bs * 12)
    out = stream(model, dc, daw_bs)
    assert model.calc_model_delay_samples() == 0
    assert leading_zeros(out) == model.calc_buffering_delay_samples()
    assert torch.equal(out[:, leading_zeros(out):], torch.ones(1, out.size(1) - leading_zeros(out)))


@pytest.mark.parametrize("daw_sr,daw_bs", [(44100, 64), (44100, 512), (44100, 4096), (96000, 128),
                                           (96000, 2048)])
def test_buffering_delay_equals_leading_silence_when_resampling(undelayed_nm, daw_sr, daw_bs):
    model = undelayed_nm
    model.set_daw_sample_rate_and_buffer_size(daw_sr, daw_bs)
    assert model.is_resampling()
    out = stream(model, torch.ones(2, daw_bs * 12), daw_bs)
    silence = leading_zeros(out)
    assert silence == model.calc_buffering_delay_samples()
    # Cubic Hermite keeps a constant exactly: after the silence, the DC comes through untouched.
    assert torch.allclose(out[:, silence:], torch.ones(2, out.size(1) - silence), atol=1e-6)


@pytest.mark.parametrize("daw_bs", [64, 128, 512, 2048, 4096])
def test_forward_is_the_input_delayed_by_both_reported_delays(mono_nm, daw_bs):
    mono_nm.set_daw_sample_rate_and_buffer_size(MODEL_SR, daw_bs)
    x = noise(1, daw_bs * 10)
    out = stream(mono_nm, x, daw_bs)
    total = mono_nm.calc_buffering_delay_samples() + mono_nm.calc_model_delay_samples()
    assert torch.equal(out, shifted(x, total))
    assert leading_zeros(out) >= total


def test_stereo_model_keeps_channels_and_takes_mono_input(stereo_nm):
    stereo_nm.set_daw_sample_rate_and_buffer_size(MODEL_SR, 256)
    x = noise(2, 256 * 8)
    out = stream(stereo_nm, x, 256)
    total = stereo_nm.calc_buffering_delay_samples() + stereo_nm.calc_model_delay_samples()
    assert torch.equal(out, shifted(x, total))  # left stays left, right stays right
    stereo_nm.reset()
    mono = noise(1, 256 * 8, seed=3)
    out = stream(stereo_nm, mono, 256)  # mono DAW track: duplicated in, averaged back out
    assert out.shape == mono.shape
    assert torch.allclose(out, shifted(mono, total))


def test_mono_model_averages_stereo_input_and_returns_stereo(mono_nm):
    mono_nm.set_daw_sample_rate_and_buffer_size(MODEL_SR, 512)
    x = noise(2, 512 * 6)
    out = stream(mono_nm, x, 512)
    total = mono_nm.calc_buffering_delay_samples() + mono_nm.calc_model_delay_samples()
    mid = shifted((x[0:1] + x[1:2]) * 0.5, total)
    assert out.shape == (2, x.size(1))
    assert torch.equal(out[0:1], mid) and torch.equal(out[1:2], mid)


def test_reset_clears_the_stream_state(mono_nm):
    mono_nm.set_daw_sample_rate_and_buffer_size(MODEL_SR, 128)
    x = noise(1, 128 * 20)
    first = stream(mono_nm, x, 128)
    mono_nm.reset()
    second = stream(mono_nm, x, 128)
    assert torch.equal(first, second)
    mono_nm.reset()
    silence = stream(mono_nm, torch.zeros(1, 128 * 20), 128)
    assert torch.equal(silence, torch.zeros_like(silence))  # no tail of the previous clip


# --------------------------------------------------------------------------------------------
# Knobs


def knob_rows(n: int, chaos=0.0, dim=0.0, scale=0.5, offset=0.5) -> Tensor:
    return torch.tensor([[chaos], [dim], [scale], [offset]]).expand(4, n).contiguous()


def test_default_knobs_leave_the_sound_unchanged(mono_nm):
    mono_nm.set_daw_sample_rate_and_buffer_size(MODEL_SR, 512)
    x = noise(1, 512 * 8)
    plain = stream(mono_nm, x, 512)
    mono_nm.reset()
    with_defaults = stream(mono_nm, x, 512, mono_nm.get_default_param_values().expand(4, x.size(1)))
    assert torch.equal(plain, with_defaults)
    # Knob rows are averaged over each model buffer: 0/1 alternating scale is a mean of 0.5.
    mono_nm.reset()
    wobble = knob_rows(x.size(1))
    wobble[2] = (torch.arange(x.size(1)) % 2).float()
    assert torch.equal(stream(mono_nm, x, 512, wobble), plain)


def test_scale_and_offset_edit_only_the_chosen_dimension(mono_nm):
    # The stand-in's latent dimension d holds sample phase d of every 16-sample frame the model
    # sees; at 512 samples (a native size) there is no buffering, so output sample j is phase j % 16.
    mono_nm.set_daw_sample_rate_and_buffer_size(MODEL_SR, 512)
    assert mono_nm.calc_buffering_delay_samples() == 0
    x = noise(1, 512 * 8)
    dim = 5
    dim_knob = (dim + 0.5) / COMPRESSION
    clean = shifted(x, mono_nm.calc_model_delay_samples())
    chosen = torch.arange(x.size(1)) % COMPRESSION == dim
    muted = stream(mono_nm, x, 512, knob_rows(x.size(1), dim=dim_knob, scale=0.0))
    assert torch.equal(muted[:, ~chosen], clean[:, ~chosen])
    assert torch.equal(muted[:, chosen], torch.zeros(1, int(chosen.sum())))

    mono_nm.reset()
    raised = stream(mono_nm, x, 512, knob_rows(x.size(1), dim=dim_knob, offset=1.0))
    assert torch.equal(raised[:, ~chosen], clean[:, ~chosen])
    assert torch.allclose(raised[:, chosen], clean[:, chosen] + 3.0)  # +3 stds (1 without statistics)


def test_chaos_adds_reproducible_noise(mono_nm):
    mono_nm.set_daw_sample_rate_and_buffer_size(MODEL_SR, 256)
    x = noise(1, 256 * 16)
    knobs = knob_rows(x.size(1), chaos=0.5)
    first = stream(mono_nm, x, 256, knobs)
    mono_nm.reset()
    second = stream(mono_nm, x, 256, knobs)
    mono_nm.reset()
    clean = stream(mono_nm, x, 256)
    assert torch.equal(first, second)
    total = mono_nm.calc_buffering_delay_samples() + mono_nm.calc_model_delay_samples()
    added = (first - clean)[:, total:]
    assert 0.5 < float(added.std()) < 1.5  # chaos 0.5 -> noise of one latent std


def test_card_statistics_set_the_knob_ranges():
    card = card_for(1, with_stats=True)
    w2w = TildekitW2W(PolyphaseCore(1, delay=0), dataclasses.replace(card, delay=0))
    z = torch.zeros(1, COMPRESSION, 4)
    dim = 3  # conftest card: mean 0.3, std 1
    edited = w2w.edit_latent(z, torch.tensor([0.0, (dim + 0.5) / COMPRESSION, 0.0, 0.5]))
    assert torch.allclose(edited[0, dim], torch.full((4,), 0.3))  # scale 0 -> the mean
    assert torch.equal(edited[0, :dim], z[0, :dim])


# --------------------------------------------------------------------------------------------
# forward_offline and forward_bt


@pytest.mark.parametrize("daw_sr,daw_bs", [(48000, 256), (48000, 1000), (44100, 4096), (96000, 512)])
def test_forward_offline_equals_shifted_streaming(mono_nm, daw_sr, daw_bs):
    mono_nm.set_daw_sample_rate_and_buffer_size(daw_sr, daw_bs)
    n = 3 * daw_bs + 123
    x = noise(1, n)
    knobs = knob_rows(n, chaos=0.3, dim=0.2, scale=0.7, offset=0.4)
    offline = mono_nm.forward_offline(x, knobs)
    assert offline.shape == x.shape
    total = mono_nm.calc_buffering_delay_samples() + mono_nm.calc_model_delay_samples()
    padded_n = math.ceil((n + total) / daw_bs) * daw_bs
    mono_nm.reset()
    padded_knobs = torch.cat([knobs, knobs[:, -1:].expand(4, padded_n - n)], dim=1)
    streamed = stream(mono_nm, torch.cat([x, torch.zeros(1, padded_n - n)], dim=1), daw_bs, padded_knobs)
    assert torch.equal(offline, streamed[:, total:total + n])


@pytest.mark.parametrize("daw_bs", [64, 512, 1000])
def test_forward_offline_is_aligned(mono_nm, stereo_nm, daw_bs):
    mono_nm.set_daw_sample_rate_and_buffer_size(MODEL_SR, daw_bs)
    x = noise(1, 5000)
    assert torch.equal(mono_nm.forward_offline(x), x)  # identity core: all delay removed
    stereo_nm.set_daw_sample_rate_and_buffer_size(MODEL_SR, daw_bs)
    x2 = noise(2, 5000, seed=4)
    assert torch.equal(stereo_nm.forward_offline(x2), x2)


def test_forward_offline_at_44k_4096_like_the_sdk_self_test(mono_nm):
    mono_nm.set_daw_sample_rate_and_buffer_size(44100, 4096)
    t = torch.arange(44100) / 44100
    sine = 0.5 * torch.sin(2 * math.pi * 220 * t).unsqueeze(0).expand(2, -1).contiguous()
    out = mono_nm.forward_offline(sine)
    assert out.shape == sine.shape
    # Block-wise cubic resampling (both ways) of a slow sine: close to the input, aligned to
    # within the rounding of the model delay to DAW samples.
    assert (out[:, 4096:-4096] - sine[:, 4096:-4096]).abs().max() < 0.05


def test_forward_bt_returns_whole_buffers_once_saturated(mono_nm):
    daw_bs = 64
    mono_nm.set_daw_sample_rate_and_buffer_size(MODEL_SR, daw_bs)
    x = noise(1, daw_bs * 40)
    reference = stream(mono_nm, x, daw_bs)
    mono_nm.reset()
    collected = []
    for start in range(0, x.size(1), daw_bs):
        out = mono_nm.forward_bt(x[:, start:start + daw_bs])
        if out is not None:
            assert out.size(0) == 1 and out.size(1) % daw_bs == 0
            collected.append(out)
    joined = torch.cat(collected, dim=1)
    silence = mono_nm.calc_buffering_delay_samples()
    assert torch.equal(joined, reference[:, silence:silence + joined.size(1)])


def test_host_may_force_a_native_model_buffer(mono_nm):
    mono_nm.set_daw_sample_rate_and_buffer_size(MODEL_SR, 128, None, 1024)
    assert mono_nm.calc_buffering_delay_samples() == 1024 - 128
    with pytest.raises(Exception, match="not a native buffer size"):
        mono_nm.set_daw_sample_rate_and_buffer_size(MODEL_SR, 128, None, 1000)
    with pytest.raises(Exception, match="not a native sample rate"):
        mono_nm.set_daw_sample_rate_and_buffer_size(MODEL_SR, 128, 44100, None)


def test_wrong_buffer_shape_is_a_clear_error(mono_nm):
    mono_nm.set_daw_sample_rate_and_buffer_size(MODEL_SR, 512)
    with pytest.raises(Exception, match="set_daw_sample_rate_and_buffer_size"):
        mono_nm.forward(torch.zeros(1, 256))
    with pytest.raises(Exception, match="params of shape"):
        mono_nm.forward(torch.zeros(1, 512), torch.zeros(3, 512))


def test_queues_never_overflow_with_odd_buffer_ratios():
    root = torch.jit.script(NeutoneRoot(make_w2w(1, 0)))
    for daw_sr, daw_bs in ((44100, 333), (96000, 1000), (44100, 4096), (48000, 100)):
        root.set_daw_sample_rate_and_buffer_size(daw_sr, daw_bs)
        for i in range(30):
            root.forward(noise(1, daw_bs, seed=i), knob_rows(daw_bs))
        assert root.in_queue.dropped == 0 and root.out_queue.dropped == 0
        assert root.params_queue.dropped == 0


# --------------------------------------------------------------------------------------------
# Export failures leave nothing behind


def test_export_refuses_a_core_that_does_not_match_its_card():
    with pytest.raises(TildekitError, match="compression"):
        TildekitW2W(PolyphaseCore(1, compression=8), card_for(1))


def test_export_refuses_a_non_nm_path(tmp_path):
    with pytest.raises(TildekitError, match=r"\.nm"):
        export_neutone(make_w2w(), card_for(1), tmp_path / "model.ts")


def test_failed_self_check_leaves_no_file(tmp_path):
    w2w = TildekitW2W(ShortCore(1), card_for(1))
    with pytest.raises(TildekitError, match="host's call sequence.*model returned shape"):
        export_neutone(w2w, card_for(1), tmp_path / "broken.nm")
    assert list(tmp_path.iterdir()) == []


def test_check_neutone_file_reports_delays(export_dir, mono_nm):
    check = check_neutone_file(export_dir / "mono.nm")
    assert check.resampling_at_48k is False
    assert check.model_delay_48k_512 == CORE_DELAY
    assert check.buffering_delay_48k_512 == 0  # 512 is a native size: no buffering


# --------------------------------------------------------------------------------------------
# Metadata rules


@pytest.fixture
def good_metadata() -> dict:
    meta = build_metadata(card_for(1), KNOBS, NeutoneInfo(), native_sample_rates=[48000],
                          native_buffer_sizes=[16, 32], pytorch_version="2.13.0",
                          date_created=1.7e9)
    return with_sounds(meta)


def test_built_metadata_is_valid(good_metadata):
    validate_metadata(good_metadata)
    validate_metadata(json.loads(json.dumps(good_metadata)))


def _broken(meta: dict, path: str, value) -> dict:
    meta = copy.deepcopy(meta)
    *parents, last = path.split(".")
    target = meta
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return meta


@pytest.mark.parametrize("path,value,field", [
    ("model_name", "x" * 31, "model_name"),
    ("tags", [f"tag{i}" for i in range(8)], "tags"),
    ("tags", ["a-very-long-tag-name"], "tags"),
    ("tags", ["rave", "rave"], "tags"),
    ("model_authors", [f"a{i}" for i in range(6)], "model_authors"),
    ("model_authors", ["me", "me"], "model_authors"),
    ("model_version", 1, "model_version"),
    ("model_short_description", "x" * 151, "model_short_description"),
    ("model_long_description", "x" * 501, "model_long_description"),
    ("technical_description", "x" * 501, "technical_description"),
    ("citation", "x" * 301, "citation"),
    ("technical_links", {"Code": "not a url"}, "technical_links"),
    ("technical_links", {f"l{i}": f"https://e.org/{i}" for i in range(4)}, "technical_links"),
    ("is_experimental", 1, "is_experimental"),
    ("sample_sound_files", [{"in": "!!", "out": ""}], "sample_sound_files"),
    ("sample_sound_files", [{"in": "", "out": ""}] * 4, "sample_sound_files"),
    ("model_type", "mono", "model_type"),
    ("model_type", "stereo-stereo", "model_type"),
    ("is_input_mono", "yes", "is_input_mono"),
    ("look_behind_samples", -1, "look_behind_samples"),
    ("wet_default_value", 1.5, "wet_default_value"),
    ("dry_default_value", True, "dry_default_value"),
    ("native_sample_rates", [192000], "native_sample_rates"),
    ("native_sample_rates", [48000, 48000], "native_sample_rates"),
    ("native_buffer_sizes", [0], "native_buffer_sizes"),
    ("native_buffer_sizes", [512.0], "native_buffer_sizes"),
    ("sdk_version", None, "sdk_version"),
    ("pytorch_version", KeyError, "pytorch_version"),
    ("date_created", "today", "date_created"),
    ("neutone_parameters.p3", KeyError, "neutone_parameters"),  # p1, p2, p4: not contiguous
    ("neutone_parameters.p5", {}, "neutone_parameters"),
    ("neutone_parameters.p1.type", "knob", "neutone_parameters.p1.type"),
    ("neutone_parameters.p2.used", "True", "neutone_parameters.p2.used"),
    ("neutone_parameters.p2.default_value", 1.5, "neutone_parameters.p2.default_value"),
    ("neutone_parameters.p4.name", "chaos", "neutone_parameters"),  # duplicate knob name
    ("neutone_parameters.p1.description", KeyError, "neutone_parameters.p1"),
])
def test_metadata_validation_names_the_bad_field(good_metadata, path, value, field):
    with pytest.raises(NeutoneMetadataError, match=f"'{field}'|{field}"):
        validate_metadata(_broken(good_metadata, path, value))
    assert issubclass(NeutoneMetadataError, TildekitError)  # the CLI prints it on one line


def test_fewer_knobs_are_fine_when_contiguous(good_metadata):
    meta = copy.deepcopy(good_metadata)
    del meta["neutone_parameters"]["p4"], meta["neutone_parameters"]["p3"]
    validate_metadata(meta)
    meta["neutone_parameters"] = {}
    with pytest.raises(NeutoneMetadataError, match="p1"):
        validate_metadata(meta)


def test_export_refuses_a_card_name_too_long_for_neutone():
    card = card_for(1, name="an-extremely-long-model-name-over-30")
    with pytest.raises(NeutoneMetadataError, match="model_name"):
        TildekitW2W(PolyphaseCore(1), card)


# --------------------------------------------------------------------------------------------
# A real (tiny, untrained) tildekit model, end to end


def test_real_tiny_model_exports_and_matches_the_core_forward(tmp_path):
    from tildekit.export.core import ExportCore
    from tildekit.models.autoencoder import AutoEncoder
    from tildekit.models.config import ModelConfig
    from tildekit.models.contract.card import MethodSpec

    cfg = ModelConfig(sample_rate=MODEL_SR, n_band=2, pqmf_taps_per_band=4, capacity=4,
                      ratios=[2, 2], latent_size=4, dilations=[1], max_channels=16)
    cfg.validate("test")
    torch.manual_seed(0)
    core = ExportCore(AutoEncoder(cfg, streaming=True))
    reference = copy.deepcopy(core)
    card = ModelCard(name="tiny-real", sample_rate=MODEL_SR, channels=1,
                     compression=core.compression, latent_size=core.latent_size,
                     methods={"forward": MethodSpec(1, 1, 1, 1, delay=core.delay)},
                     attributes=[], delay=core.delay, profile="test")
    path = tmp_path / "tiny-real.nm"
    check = export_neutone(TildekitW2W(core, card), card, path, quick=True)
    assert check.model_delay_48k_512 == core.delay
    assert read_card(path) == card
    nm = torch.jit.load(str(path), _extra_files={"metadata.json": ""})

    daw_bs = 256  # a native size (whole frames): no buffering, model delay only
    nm.set_daw_sample_rate_and_buffer_size(MODEL_SR, daw_bs)
    assert nm.calc_buffering_delay_samples() == 0
    assert nm.calc_model_delay_samples() == core.delay
    x = noise(1, daw_bs * 12)
    out = stream(nm, x, daw_bs)
    reference.reset_state()
    with torch.no_grad():
        expected = torch.cat([reference(x[None, :, i:i + daw_bs])[0]
                              for i in range(0, x.size(1), daw_bs)], dim=1)
    assert torch.allclose(out, expected, atol=1e-5)

    nm.reset()
    edited = stream(nm, x, daw_bs, knob_rows(x.size(1), chaos=0.5, scale=0.0))
    assert not torch.allclose(edited, out, atol=1e-4)
    assert torch.isfinite(edited).all()

    nm.set_daw_sample_rate_and_buffer_size(44100, 4096)
    assert nm.is_resampling()
    clip = noise(2, 44100, seed=5)
    offline = nm.forward_offline(clip)
    assert offline.shape == clip.shape and torch.isfinite(offline).all()

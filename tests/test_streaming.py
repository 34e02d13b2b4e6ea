"""The central invariant: consecutive buffers give the whole-signal output, after a known delay.

Checked for every shipped profile (random weights, full size), for forward, encode and
decode, at buffer sizes from the compression ratio up to 16384, batch 1 and 4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tildekit.models.autoencoder import AutoEncoder, build_model
from tildekit.models.config import available_profiles, load_profile
from tildekit.models.pqmf import PQMFAnalysis, PQMFSynthesis
from tildekit.models.streaming import Layers, reset_state
from tildekit.models.synthetic import chirp, harmonic_tone, noise_burst

TOLERANCE = 1e-5
PROFILES = available_profiles()


def test_every_profile_is_covered() -> None:
    assert {"default", "small", "causal", "raspberry"} <= set(PROFILES)


def _pair(profile: str) -> tuple[AutoEncoder, AutoEncoder]:
    torch.manual_seed(0)
    cfg = load_profile(profile).model
    whole = build_model(cfg, streaming=False).eval()
    stream = build_model(cfg, streaming=True).eval()
    stream.load_state_dict(whole.state_dict())  # strict: same keys in both builds
    return whole, stream


def _signal(sample_rate: int, length: int, batch: int) -> torch.Tensor:
    """Batch rows of different generated material: tones, chirps, noise bursts."""
    seconds = length / sample_rate + 0.01
    makers = [
        lambda: harmonic_tone(220.0, seconds, sample_rate),
        lambda: chirp(50.0, sample_rate / 3, seconds, sample_rate),
        lambda: noise_burst(seconds, sample_rate),
        lambda: harmonic_tone(97.0, seconds, sample_rate) + 0.3 * noise_burst(seconds, sample_rate, seed=1),
    ]
    rows = [np.asarray(makers[i % len(makers)](), dtype=np.float32)[:length] for i in range(batch)]
    return torch.from_numpy(np.stack(rows))[:, None, :]


def _buffers(compression: int) -> list[int]:
    sizes = [compression, 4 * compression, 16384]
    return sorted({b for b in sizes if compression <= b <= 16384})


def _stream(fn, x: torch.Tensor, buffer: int) -> torch.Tensor:
    return torch.cat([fn(chunk) for chunk in x.split(buffer, -1)], -1)


def _length(model: AutoEncoder) -> int:
    # warm-up (receptive field) + delay + a few of the largest buffers, a multiple of 16384
    needed = model.receptive_field + model.delay + 4 * 16384
    return -(-needed // 16384) * 16384


def _aligned_error(streamed: torch.Tensor, whole: torch.Tensor, delay: int, warmup: int) -> float:
    length = whole.shape[-1]
    diff = streamed[..., delay:] - whole[..., : length - delay]
    assert diff.shape[-1] > warmup, "signal too short for the comparison"
    return diff[..., warmup:].abs().max().item()


# The full-size `default` profile takes most of this file's time: it runs with the slow tests.
@pytest.mark.parametrize("profile", [pytest.param(p, marks=pytest.mark.slow) if p == "default" else p
                                     for p in PROFILES])
@torch.no_grad()
def test_streaming_equality(profile: str) -> None:
    whole, stream = _pair(profile)
    compression = whole.compression
    length = _length(whole)
    warmup = whole.receptive_field
    frames_warmup = -(-warmup // compression)
    encoder_frames = stream.encode_delay // compression
    for batch in (1, 4):
        x = _signal(whole.sample_rate, length, batch)
        y_whole = whole(x)
        z_whole = whole.encode(x, 1.0)  # posterior noise included: it is reproducible too
        audio_from_z = whole.decode(z_whole)
        buffers = _buffers(compression) if batch == 1 else [max(_buffers(compression)[:2])]
        for buffer in buffers:
            reset_state(stream)
            y = _stream(stream, x, buffer)
            assert y.shape == y_whole.shape
            err = _aligned_error(y, y_whole, stream.delay, warmup)
            assert err <= TOLERANCE, f"{profile} forward B={buffer} batch={batch}: {err:.2e}"

            reset_state(stream)
            z = _stream(lambda c: stream.encode(c, 1.0), x, buffer)
            err = _aligned_error(z, z_whole, encoder_frames, frames_warmup)
            assert err <= TOLERANCE, f"{profile} encode B={buffer} batch={batch}: {err:.2e}"

            reset_state(stream)
            audio = _stream(stream.decode, z_whole, buffer // compression)
            err = _aligned_error(audio, audio_from_z, stream.decode_delay, warmup)
            assert err <= TOLERANCE, f"{profile} decode B={buffer} batch={batch}: {err:.2e}"


@torch.no_grad()
def test_batch_rows_are_independent_streams() -> None:
    """Changing the other rows of a batch leaves a row's output (and state) untouched."""
    _, stream = _pair("small")
    x = _signal(stream.sample_rate, 8192, 4)
    other = x.clone()
    other[1:] = other[1:].flip(-1) * 0.5
    first = _stream(stream, x, 512)
    reset_state(stream)
    second = _stream(stream, other, 512)
    assert torch.equal(first[0], second[0])
    assert not torch.allclose(first[1:], second[1:])


@torch.no_grad()
def test_reset_restarts_the_stream() -> None:
    _, stream = _pair("small")
    x = _signal(stream.sample_rate, 4096, 1)
    first = _stream(stream, x, 1024)
    second = _stream(stream, x, 1024)
    assert not torch.allclose(first, second)  # state carried over
    reset_state(stream)
    assert torch.equal(_stream(stream, x, 1024), first)


def test_same_weights_load_in_both_builds() -> None:
    cfg = load_profile("small").model
    whole = build_model(cfg, streaming=False)
    stream = build_model(cfg, streaming=True)
    assert set(whole.state_dict()) == set(stream.state_dict())
    whole.load_state_dict(stream.state_dict())  # strict both ways
    stream.load_state_dict(whole.state_dict())


@pytest.mark.parametrize("n_band,taps", [(4, 16), (16, 16), (16, 8)])
@torch.no_grad()
def test_filter_bank_delay_is_the_true_delay(n_band: int, taps: int) -> None:
    """An impulse through streaming analysis + synthesis comes out exactly `delay` samples late."""
    analysis = PQMFAnalysis(Layers(True), 1, n_band, taps)
    synthesis = PQMFSynthesis(Layers(True), 1, n_band, taps, delay_in=analysis.delay)
    whole_a = PQMFAnalysis(Layers(False), 1, n_band, taps)
    whole_s = PQMFSynthesis(Layers(False), 1, n_band, taps)
    x = torch.zeros(1, 1, 64 * n_band * taps)
    position = 32 * n_band * taps + 3
    x[..., position] = 1.0
    whole_out = whole_s(whole_a(x))[0, 0]
    assert int(whole_out.abs().argmax()) == position  # zero delay on the whole signal
    streamed = _stream(lambda c: synthesis(analysis(c)), x, 256)[0, 0]
    assert int(streamed.abs().argmax()) == position + synthesis.delay
    assert streamed.abs().max().item() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("profile", ["small", "causal"])
@torch.no_grad()
def test_model_delay_is_the_true_delay(profile: str) -> None:
    """Cross-correlating streamed and whole responses to an impulse peaks at the reported delay."""
    whole, stream = _pair(profile)
    length = _length(whole)
    x = torch.zeros(1, 1, length)
    x[..., length // 2] = 1.0
    x = x + 1e-3 * _signal(whole.sample_rate, length, 1)
    y_whole = whole(x)[0, 0].numpy()
    y_stream = _stream(stream, x, 2048)[0, 0].numpy()
    lags = range(0, 2 * stream.delay + 1)
    scores = [float(np.dot(y_stream[lag:], y_whole[: length - lag])) / (length - lag) for lag in lags]
    assert int(np.argmax(scores)) == stream.delay


def test_causal_profile_meets_its_latency_target() -> None:
    cfg = load_profile("causal").model
    model = build_model(cfg, streaming=True)
    assert cfg.compression <= 256
    assert model.delay <= 480  # 10 ms at 48 kHz

"""A trained model transforms sound: its output follows its input and beats trivial references,
and the exported files compute what the trained model computes.

One tiny ``small`` model is trained for a few hundred steps on generated audio (the demo's
example folder), then judged on held-out tones and noise bursts of other seeds, pitches and
levels, with the figures of ``tildekit eval`` (models/metrics.py):

(a) loudness-envelope correlation with the input >= 0.8,
(b) multi-scale log-STFT distance below the silence reference for both, and below the input
    low-passed at 4 kHz for the noise bursts (broadband: the low-pass loses their top half, the
    model renders it); an output for silence at least 30 dB quieter than for sound. For the tones
    the low-pass, which keeps every partial below 4 kHz exactly, is not beaten at this budget (log-STFT
    1.51 against 0.73: the model's partials are not yet clean): the test prints both figures,
(c) the exported .ts (as nn~ runs it) and .onnx (ONNX Runtime), played in host buffers, equal the
    training build's whole-signal output after the reported delay, with these trained weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

from tildekit.export.evaluate import open_model, play
from tildekit.export.targets import export_run
from tildekit.models import metrics
from tildekit.models.autoencoder import build_model
from tildekit.models.config import load_profile
from tildekit.models.preprocess import preprocess
from tildekit.models.run import load_checkpoint, newest_checkpoint, read_profile
from tildekit.models.synthetic import alternating_levels, write_example_folder
from tildekit.models.trainer import train, training_window

STEPS = 500
SECONDS_OF_AUDIO = 90.0
MIN_LOUDNESS_CORRELATION = 0.8
SILENCE_MARGIN = 10 ** (30 / 20)  # output RMS for the sound over output RMS for digital silence


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("quality")
    profile = load_profile("small")
    rate = profile.model.sample_rate
    write_example_folder(root / "audio", seconds=SECONDS_OF_AUDIO, sample_rate=rate, seed=0)
    preprocess(root / "audio", root / "dataset", sample_rate=rate, channels=1,
               min_samples=training_window(profile), progress=False)
    threads = torch.get_num_threads()
    try:
        train(root / "dataset", root / "run", profile, steps=STEPS, progress=False)
    finally:
        torch.set_num_threads(threads)
    return root / "run"


def _whole_signal(run: Path, audio: np.ndarray) -> np.ndarray:
    """The training build (streaming=False) on the whole signal, posterior mean, as trained."""
    profile = read_profile(run)
    model = build_model(profile.model, streaming=False)
    model.load_state_dict(load_checkpoint(newest_checkpoint(run))["model"])
    model.eval()
    compression = profile.model.compression
    padded = np.zeros(-(-len(audio) // compression) * compression, dtype=np.float32)
    padded[:len(audio)] = audio
    with torch.no_grad():
        return model(torch.from_numpy(padded)[None, None])[0, 0, :len(audio)].numpy()


@pytest.mark.parametrize("kind", ["tones", "bursts"])
def test_trained_model_follows_its_input_and_beats_the_references(trained: Path,
                                                                   kind: Literal["tones", "bursts"]) -> None:
    rate = read_profile(trained).model.sample_rate
    audio = alternating_levels(kind, rate)
    output = _whole_signal(trained, audio)
    correlation, _ = metrics.loudness_figures(metrics.loudness_db(audio, rate),
                                              metrics.loudness_db(output, rate))
    assert correlation is not None and correlation >= MIN_LOUDNESS_CORRELATION, correlation
    distance = metrics.stft_distance(audio, output)
    lowpass = metrics.stft_distance(audio, metrics.lowpass_reference(audio, rate))
    silence = metrics.stft_distance(audio, metrics.silence_reference(audio, rate))
    print(f"\n{kind}: loudness corr {correlation:.3f}; log-STFT L1 model {distance:.3f}, "
          f"low-pass 4 kHz {lowpass:.3f}, silence {silence:.3f}")
    assert distance < silence, (distance, silence)
    if kind == "bursts":
        assert distance < lowpass, (distance, lowpass)
    # the output is not the same for every input: silence in, silence out (30 dB quieter at least)
    other = _whole_signal(trained, np.zeros_like(audio))
    assert np.sqrt(np.mean(output ** 2)) > SILENCE_MARGIN * np.sqrt(np.mean(other ** 2))


def test_exports_compute_what_the_trained_model_computes(trained: Path, tmp_path: Path) -> None:
    card, written = export_run(trained, ("nn", "onnx"), tmp_path, name="quality", buffer=512)
    rate = card.sample_rate
    audio = np.concatenate([alternating_levels("tones", rate), alternating_levels("bursts", rate)])
    expected = _whole_signal(trained, audio)
    for suffix in (".ts", ".onnx"):
        model = open_model(tmp_path / f"quality{suffix}", buffer=512)
        streamed = play(model, audio[None], 512)[0]
        # away from both ends: the streaming state fills over the receptive field at the start,
        # and at the end the whole-signal pass pads its last frames where the stream goes on
        skip = 4096
        error = float(np.max(np.abs(streamed[skip:-skip] - expected[skip:-skip])))
        assert error <= 1e-4 * max(1.0, float(np.max(np.abs(expected)))), (suffix, error)

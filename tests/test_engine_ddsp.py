"""The headless engine plays a DDSP export: forward with its attributes over OSC, and notes
over OSC through its ``synth`` method (generation mode); real UDP sockets on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import socket

import numpy as np
import pytest

from tests.families import tiny_ddsp
from tests.test_engine import osc, wait_for
from tildekit.export.targets import export_core
from tildekit.models.contract.oscmap import Control
from tildekit.models.contract.synth_controls import LOUDNESS_RANGE_KEY, midi_to_hz
from tildekit.models.synthetic import harmonic_tone
from tildekit.scripting.engine import Engine
from tildekit.scripting.notes import NoteControls
from tildekit.scripting.runner import open_runner

pytestmark = pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning")

BUFFER = 1024
LOUDNESS = [-60.0, -20.0]


@pytest.fixture(scope="module")
def model_ts(tmp_path_factory):
    model, card = tiny_ddsp()
    card = dataclasses.replace(card, extra={**card.extra, LOUDNESS_RANGE_KEY: LOUDNESS})
    folder = tmp_path_factory.mktemp("ddsp")
    export_core(model, card, ["nn", "onnx"], folder, buffer=BUFFER, quick=True)
    return folder / "tinyddsp.ts"


@pytest.fixture(params=[".ts", ".onnx"])
def model_file(model_ts, request):
    """The nn~ file and the ONNX graph of the same model (its attributes are graph inputs)."""
    return model_ts.with_suffix(request.param)


def _tone() -> np.ndarray:
    return harmonic_tone(330.0, 0.5, 48000, harmonics=6, seed=3)[None]


def _run(model_ts, messages: list[bytes], audio: np.ndarray | None, frames: int = 0) -> tuple[Engine, np.ndarray]:
    with Engine(open_runner(model_ts), "127.0.0.1", 0, buffer=BUFFER) as engine:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for message in messages:
                sender.sendto(message, engine.osc_address)
            assert wait_for(lambda: engine.stats.received == len(messages))
        out = engine.run_array(audio, frames)
    return engine, out


def test_forward_and_attributes_over_osc(model_file):
    _, plain = _run(model_file, [], _tone())
    engine, shifted = _run(model_file, [osc("/tildekit/tinyddsp/attr/pitch_shift", 7.0),
                                      osc("/tildekit/tinyddsp/attr/noise_gain", 0.0),
                                      osc("/tildekit/tinyddsp/attr/pitch_shift", 99.0)], _tone())  # out of range
    assert engine.stats.applied == 2 and engine.stats.bad_value == 1 and engine.stats.refused == 0
    assert [c for _, c in engine.applied] == [Control("attr", name="pitch_shift", values=(7.0,)),
                                              Control("attr", name="noise_gain", values=(0.0,))]
    assert plain.shape == shifted.shape == (1, _tone().shape[1]) and np.isfinite(shifted).all()
    assert not np.allclose(plain, shifted)


def test_notes_over_osc_play_the_synth(model_ts):
    """Generation mode: /note reaches the synth method as the controls NoteControls gives."""
    frames = 4 * BUFFER
    _, silent = _run(model_ts, [], None, frames)
    engine, played = _run(model_ts, [osc("/tildekit/tinyddsp/note", 69.0, 127.0)], None, frames)
    assert engine.stats.applied == 1 and engine.stats.refused == 0
    assert played.shape == (1, frames) and np.isfinite(played).all()
    runner = open_runner(model_ts)
    notes = NoteControls(runner.card)
    notes.play(69.0, 127.0)
    expected = runner.synth(notes.controls(frames // notes.ratio))
    np.testing.assert_allclose(played, expected, atol=1e-5)
    assert not np.allclose(played, silent, atol=1e-3)


def test_note_controls_glide_and_hold_the_pitch(model_ts):
    card = open_runner(model_ts).card
    notes = NoteControls(card)
    assert notes.controls(1)[1, 0] == LOUDNESS[0]  # silent before the first note
    notes.play(69.0, 127.0)
    on = notes.controls(200)
    assert on[0, 0] == pytest.approx(midi_to_hz(69.0)) and on[1, -1] == LOUDNESS[1]
    assert np.all(np.diff(on[1]) >= 0) and on[1, 0] < LOUDNESS[1]  # glided, not stepped
    notes.play(69.0, 0.0)
    off = notes.controls(400)
    assert off[1, -1] == LOUDNESS[0] and np.all(off[0] == on[0, 0])  # the release keeps its pitch


def test_a_note_off_during_the_attack_waits_for_its_end(model_ts):
    notes = NoteControls(open_runner(model_ts).card)
    notes.play(64.0, 127.0)
    notes.play(64.0, 0.0)  # before a single frame: a note shorter than the engine's buffer
    loudness = notes.controls(400)[1]
    peak = int(np.argmax(loudness))
    assert loudness[peak] == LOUDNESS[1] and loudness[-1] == LOUDNESS[0]  # heard at its level, then released
    assert np.all(np.diff(loudness[:peak + 1]) >= 0) and np.all(np.diff(loudness[peak:]) <= 0)


def test_a_note_on_and_off_within_one_buffer_are_both_played(model_ts):
    frames = 4 * BUFFER
    _, silent = _run(model_ts, [], None, frames)
    engine, played = _run(model_ts, [osc("/tildekit/tinyddsp/note", 69.0, 127.0),
                                     osc("/tildekit/tinyddsp/note", 69.0, 0.0)], None, frames)
    assert [c.values for _, c in engine.applied] == [(69.0, 127.0), (69.0, 0.0)]  # in the order they came
    runner = open_runner(model_ts)
    notes = NoteControls(runner.card)
    notes.play(69.0, 127.0)
    notes.play(69.0, 0.0)
    np.testing.assert_allclose(played, runner.synth(notes.controls(frames // notes.ratio)), atol=1e-5)
    assert not np.allclose(played, silent, atol=1e-3)

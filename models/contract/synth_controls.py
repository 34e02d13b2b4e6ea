"""How notes become a synth method's controls: MIDI pitch to f0, velocity to loudness in dB.

A model with a ``synth`` method (the DDSP family) plays frame-rate controls, f0 in Hz and
loudness in dB. The Pd and Max synth patches and the OSC note address share one rule, kept
here, torch-free: pitch ``p`` is ``440 * 2^((p - 69) / 12)`` Hz; velocity ``v`` in 1..127 is
``low + v / 127 * (high - low)`` dB, linear in dB across the loudness range of the training
data (the card's ``extra["loudness_range"]``, written at export); velocity 0 (note off) goes
to ``low``, the quietest the model heard in training (the data's silence).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SYNTH_METHOD = "synth"  # (f0 Hz, loudness dB) per frame -> audio
LOUDNESS_RANGE_KEY = "loudness_range"  # card extra: [low, high] dB of the training data's frames
# Percentiles of the training frames' loudness that bound the range (outliers left out).
LOUDNESS_PERCENTILES = (2.0, 98.0)
# Any loudness a card may state: A-weighted power of float audio lies well inside this.
LOUDNESS_LIMITS = (-150.0, 50.0)
# For a card without a range (a model exported before the range was recorded): the features'
# silence threshold (-70 dB) up to a loud note of the generated training audio.
FALLBACK_LOUDNESS_RANGE = (-70.0, -15.0)
MIDI_MAX = 127.0
ATTACK_MS = 10.0  # loudness glide on a note on: short, but no click
RELEASE_MS = 150.0  # and on a note off


# These take a card's parts, not the card: card_check.py (imported by card.py) reads the
# constants above, so this module cannot import card.py.
def has_synth(methods: Mapping[str, Any]) -> bool:
    """Does a card's ``methods`` table play (f0, loudness) controls? Two channels in, audio out."""
    spec = methods.get(SYNTH_METHOD)
    return spec is not None and spec.in_channels == 2 and spec.out_channels >= 1


def loudness_range(extra: Mapping[str, Any]) -> tuple[float, float]:
    """[low, high] dB the velocities span: a card ``extra``'s (checked when read), else the fallback."""
    value = extra.get(LOUDNESS_RANGE_KEY)
    if value is None:
        return FALLBACK_LOUDNESS_RANGE
    low, high = value
    return float(low), float(high)


def midi_to_hz(pitch: float) -> float:
    return 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)


def velocity_to_db(velocity: float, span: tuple[float, float]) -> float:
    low, high = span
    return low + velocity / MIDI_MAX * (high - low)

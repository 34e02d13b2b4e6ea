"""Notes played over OSC, turned into a synth method's frame-rate controls (f0 Hz, loudness dB).

The engine's generation mode (``tildekit serve --silence``) plays a model with a ``synth``
method (the DDSP family) from ``/note PITCH VELOCITY`` messages, as the synth patches play it
from MIDI: one voice, the pitch of the newest note on (a note off keeps it, so the release
sounds its note), the loudness gliding linearly in dB to the velocity's level
(``models/contract/synth_controls.py``) over ``ATTACK_MS``, or to the floor over ``RELEASE_MS``.

The engine applies controls at buffer boundaries, so a short note's on and off can arrive
together: a note off during the attack glide waits for it to end, then releases, and the note
is heard (a synth's shortest note is its attack).
"""

from __future__ import annotations

import numpy as np

from tildekit.models.contract.card import ModelCard
from tildekit.models.contract.synth_controls import (
    ATTACK_MS,
    RELEASE_MS,
    SYNTH_METHOD,
    loudness_range,
    midi_to_hz,
    velocity_to_db,
)

REST_PITCH = 60.0  # f0 before the first note; silent, the loudness is at its floor


class NoteControls:
    """The held note and the loudness glide, advanced one frame at a time."""

    def __init__(self, card: ModelCard) -> None:
        self.ratio = card.methods[SYNTH_METHOD].in_ratio  # samples per control frame
        self.frame_ms = 1000.0 * self.ratio / card.sample_rate
        self.span = loudness_range(card.extra)
        self.f0 = midi_to_hz(REST_PITCH)
        self.loudness = self.target = self.span[0]
        self.step = 0.0  # dB per frame towards the target
        self.attacking = False  # gliding up to a note on's level
        self.release_waits = False  # a note off came during the attack

    def play(self, pitch: float, velocity: float) -> None:
        """A note on (velocity > 0) or off (0), as validated by OscMap."""
        if velocity > 0:
            self.f0 = midi_to_hz(pitch)
            self.attacking, self.release_waits = True, False
            self._glide(velocity_to_db(velocity, self.span), ATTACK_MS)
        elif self.attacking and self.loudness != self.target:
            self.release_waits = True
        else:
            self._release()

    def _glide(self, target: float, glide_ms: float) -> None:
        self.target = target
        self.step = abs(self.target - self.loudness) / max(1.0, glide_ms / self.frame_ms)

    def _release(self) -> None:
        self.attacking = self.release_waits = False
        self._glide(self.span[0], RELEASE_MS)

    def controls(self, frames: int) -> np.ndarray:
        """(2, frames) float32: f0 and loudness of the next ``frames`` frames."""
        out = np.empty((2, frames), dtype=np.float32)
        out[0] = self.f0
        for k in range(frames):
            gap = self.target - self.loudness
            self.loudness = self.target if abs(gap) <= self.step else self.loudness + np.sign(gap) * self.step
            out[1, k] = self.loudness
            if self.loudness == self.target and self.release_waits:
                self._release()  # the attack is over: the waiting note off starts the release
        return out

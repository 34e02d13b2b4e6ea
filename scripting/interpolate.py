"""Latent interpolation: move from one sound's latent trajectory to another's over time.

Both sounds are encoded with the model; the result plays both trajectories at once (the
shorter one loops) and crossfades their latents from A to B with a curve. It can be decoded
to audio (``render_interpolation``) or sent live as ``/latent/bias`` frames
(``send_interpolation``).

``equal-power`` weights A and B by cos/sin, so for independent latents the variance stays
constant through the middle instead of dipping as a linear blend does (a Gaussian prior's
latents keep sounding "typical").

torch is imported only by the functions that run a model.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from tildekit.errors import TildekitError
from tildekit.scripting.schedule import MAX_RATE_HZ, PlayReport, Scheduler, TimedMessage, update_times

if TYPE_CHECKING:
    from tildekit.scripting.controller import Controller

INTERPOLATION_CURVES = ("linear", "equal-power", "smoothstep")
# Rendered audio is held in memory: this many seconds at most (about 110 MB of float32 at 48 kHz).
MAX_RENDER_SECONDS = 600.0


def crossfade_weights(progress: np.ndarray, curve: str = "linear") -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(w_a, w_b)`` for progress in [0, 1]; exactly (1, 0) at 0 and (0, 1) at 1."""
    u = np.clip(np.asarray(progress, dtype=np.float64), 0.0, 1.0)
    if curve == "linear":
        wb = u
    elif curve == "smoothstep":
        wb = u * u * (3.0 - 2.0 * u)
    elif curve == "equal-power":
        wa = np.where(u >= 1.0, 0.0, np.cos(0.5 * math.pi * u))
        wb = np.where(u >= 1.0, 1.0, np.sin(0.5 * math.pi * u))
        return wa, wb
    else:
        raise TildekitError(f"unknown interpolation curve {curve!r} "
                            f"(choose from {', '.join(INTERPOLATION_CURVES)})")
    return 1.0 - wb, wb


def _as_trajectory(z: Any, which: str) -> np.ndarray:
    arr = np.asarray(z, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]  # (1, L, T) straight from a model
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise TildekitError(f"latent trajectory {which} must be (latent_size, frames), got shape {arr.shape}")
    return arr


def interpolate_latents(za: Any, zb: Any, frames: int | None = None, curve: str = "linear") -> np.ndarray:
    """A ``(L, frames)`` trajectory going from ``za`` to ``zb``; both loop to fill ``frames``.

    Frame 0 is ``za[:, 0]`` and the last frame is ``zb[:, (frames - 1) % Tb]``.
    ``frames`` defaults to the longer trajectory's length.
    """
    a, b = _as_trajectory(za, "A"), _as_trajectory(zb, "B")
    frames = max(a.shape[1], b.shape[1]) if frames is None else int(frames)
    return _latents_at(a, b, np.arange(max(frames, 0)), frames, curve)


def _latents_at(a: np.ndarray, b: np.ndarray, steps: np.ndarray, frames: int, curve: str) -> np.ndarray:
    """Frames ``steps`` (``(L, len(steps))``) of the ``frames``-long interpolation from ``a`` to ``b``."""
    if a.shape[0] != b.shape[0]:
        raise TildekitError(f"latent sizes differ: A has {a.shape[0]} dimensions, B has {b.shape[0]}")
    if frames < 1:
        raise TildekitError(f"an interpolation needs at least 1 frame, got {frames}")
    progress = steps / (frames - 1) if frames > 1 else np.ones(len(steps))
    wa, wb = crossfade_weights(progress, curve)
    return a[:, steps % a.shape[1]] * wa + b[:, steps % b.shape[1]] * wb


# -- running a model -------------------------------------------------------------------

def _method_ratio(model: Any, method: str, index: int) -> int | None:
    """``in_ratio``/``out_ratio`` from an nn~-style ``<method>_params`` buffer, if the model has one."""
    params = getattr(model, f"{method}_params", None)
    try:
        return int(params[index]) if params is not None else None
    except (TypeError, IndexError):
        return None


def encode_audio(model: Any, audio: Any) -> np.ndarray:
    """Latents ``(L, frames)`` of ``audio`` (``(T,)`` mono or ``(C, T)``) via ``model.encode``.

    The audio is zero-padded to a whole number of latent frames when the model states its
    ratio (nn~ exports do, in ``encode_params``).
    """
    import torch

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] == 0:
        raise TildekitError(f"audio must be (samples,) or (channels, samples), got shape {x.shape}")
    ratio = _method_ratio(model, "encode", 3)
    if ratio and x.shape[1] % ratio:
        x = np.pad(x, ((0, 0), (0, ratio - x.shape[1] % ratio)))
    with torch.no_grad():
        z = model.encode(torch.from_numpy(np.ascontiguousarray(x))[None])
    return z[0].double().numpy()


def decode_latents(model: Any, z: Any) -> np.ndarray:
    """Audio ``(C, samples)`` of latents ``(L, frames)`` via ``model.decode``."""
    import torch

    arr = _as_trajectory(z, "to decode").astype(np.float32)
    with torch.no_grad():
        y = model.decode(torch.from_numpy(np.ascontiguousarray(arr))[None])
    return y[0].double().numpy()


def model_sample_rate(model: Any) -> int | None:
    for name in ("sample_rate", "sr"):
        value = getattr(model, name, None)
        if isinstance(value, (int, float)) and value > 0:
            return int(value)
    return None


def render_interpolation(model: Any, audio_a: Any, audio_b: Any, seconds: float, curve: str = "linear",
                         sample_rate: int | None = None) -> np.ndarray:
    """Audio ``(C, round(seconds * sample_rate))`` moving from sound A to sound B.

    ``sample_rate`` defaults to the model's own ``sample_rate`` (or ``sr``) attribute.
    """
    rate = sample_rate or model_sample_rate(model)
    if not rate:
        raise TildekitError("render_interpolation: this model does not state its sample rate; "
                            "pass sample_rate=...")
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_RENDER_SECONDS):
        raise TildekitError(f"interpolation length must be a positive number of seconds, at most "
                            f"{MAX_RENDER_SECONDS:g}, got {seconds!r}")
    samples = round(seconds * rate)
    za, zb = encode_audio(model, audio_a), encode_audio(model, audio_b)
    # Samples per latent frame, measured on the model itself (padded input: exact).
    a_len = np.asarray(audio_a).shape[-1]
    ratio = _method_ratio(model, "encode", 3) or max(1, round(a_len / za.shape[1]))
    frames = math.ceil(samples / ratio)
    audio = decode_latents(model, interpolate_latents(za, zb, frames, curve))
    if audio.shape[1] < samples:
        raise TildekitError(f"the model decoded {audio.shape[1]} samples from {frames} frames, "
                            f"expected at least {samples}: is its ratio {ratio}?")
    return audio[:, :samples]


def interpolation_messages(address: str, za: Any, zb: Any, seconds: float, rate_hz: float,
                           frame_rate: float, curve: str = "linear",
                           offset: float = 0.0) -> list[TimedMessage]:
    """``/latent/bias`` frames at ``rate_hz`` for ``seconds``; the trajectories advance at ``frame_rate``.

    The first message carries A's first frame, the last one B's frame at the end time.
    """
    if not (math.isfinite(seconds) and seconds > 0):
        raise TildekitError(f"interpolation length must be a positive number of seconds, got {seconds!r}")
    if not (math.isfinite(frame_rate) and frame_rate > 0):
        raise TildekitError(f"latent frame rate must be a positive number, got {frame_rate!r}")
    times = update_times(seconds, rate_hz)  # bounded: MAX_UPDATES
    frames = math.floor(seconds * frame_rate + 1e-9) + 1
    # Each send shows the latent frame playing at that time; the last send is the last frame.
    index = np.minimum(np.round(times * frame_rate).astype(np.int64), frames - 1)
    index[-1] = frames - 1
    # Only the frames that are sent are computed: a long, slow interpolation stays small.
    path = _latents_at(_as_trajectory(za, "A"), _as_trajectory(zb, "B"), index, frames, curve)
    return [TimedMessage(offset + float(t), address, tuple(float(v) for v in path[:, i]))
            for i, t in enumerate(times)]


def send_interpolation(controller: Controller, za: Any, zb: Any, seconds: float,
                       rate: float | None = None, curve: str = "linear",
                       scheduler: Scheduler | None = None) -> PlayReport:
    """Send the interpolation live as ``/latent/bias`` messages, ``rate`` per second.

    ``rate`` defaults to the model's latent frame rate (sample_rate / compression), at most
    ``MAX_RATE_HZ``.
    """
    card = controller.card
    frame_rate = card.sample_rate / card.compression
    messages = interpolation_messages(controller.map.bias_all, za, zb, seconds,
                                      rate or min(frame_rate, MAX_RATE_HZ), frame_rate, curve)
    return controller.play(messages, scheduler)

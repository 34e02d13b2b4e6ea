"""The DDSP timbre-transfer model: audio -> (f0, loudness) -> decoder -> harmonic + noise synth.

::

    audio ─► Features ─► f0 Hz, loudness dB ─► (× 2^(pitch_shift/12), + loudness_offset)
                                                   │
                                                   ▼
                              Decoder ─┬─ amplitudes ─► Harmonic ─► × harmonic_gain ───┐
                                       └─ noise bands ─► FilteredNoise ─► × noise_gain ─(+)─► audio

Streaming is a constructor argument, as for the autoencoder: ``DDSP(cfg, streaming=True)``
keeps every state (input history, held f0, GRU hidden state, the oscillator's last frame and
phase, the noise FIR's ring and noise position) in non-persistent buffers of
``MAX_BATCH_SIZE`` rows, so both builds share ``state_dict`` keys. Every part is causal:
frame ``k`` reads audio before sample ``k * hop`` and is rendered into samples
``k * hop .. (k + 1) * hop - 1``, so consecutive buffers of whole hops reproduce one
whole-signal pass with **no delay** for every method.

Methods take and return (batch, channels, time) tensors:

=========  ===========  ========  ============  =========
method     in channels  in ratio  out channels  out ratio
=========  ===========  ========  ============  =========
forward    1            1         1             1
features   1            1         2 (f0, dB)    hop
synth      2 (f0, dB)   hop       1             1
=========  ===========  ========  ============  =========
"""

from __future__ import annotations

import math

import torch

from tildekit.models.config import DDSPConfig
from tildekit.models.ddsp.decoder import Decoder, decoder_flops_per_frame
from tildekit.models.ddsp.features import Features
from tildekit.models.ddsp.synth import FilteredNoise, Harmonic
from tildekit.models.streaming import Stateful, reset_state

# name -> (default, minimum, maximum); settable float attributes of the scripted model
ATTRIBUTES: dict[str, tuple[float, float, float]] = {
    "pitch_shift": (0.0, -24.0, 24.0),  # semitones
    "loudness_offset": (0.0, -40.0, 40.0),  # dB
    "harmonic_gain": (1.0, 0.0, 4.0),
    "noise_gain": (1.0, 0.0, 4.0),
}


class DDSP(Stateful):
    def __init__(self, cfg: DDSPConfig, streaming: bool) -> None:
        super().__init__()
        self.analysis = Features(cfg, streaming)
        self.decoder = Decoder(cfg, streaming)
        self.harmonic = Harmonic(cfg.n_harmonics, cfg.sample_rate, cfg.hop, streaming)
        self.noise = FilteredNoise(cfg.noise_bands, cfg.hop, streaming)
        self.streaming = streaming
        self.sample_rate = cfg.sample_rate
        self.channels = 1
        self.hop = cfg.hop
        self.delay = 0  # samples, every method (see the module docstring)
        self.pitch_shift = ATTRIBUTES["pitch_shift"][0]
        self.loudness_offset = ATTRIBUTES["loudness_offset"][0]
        self.harmonic_gain = ATTRIBUTES["harmonic_gain"][0]
        self.noise_gain = ATTRIBUTES["noise_gain"][0]

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) -> (B, 2, T / hop): f0 in Hz, loudness in dB (A-weighted)."""
        return self.analysis(x)

    @torch.jit.export
    def synth(self, controls: torch.Tensor) -> torch.Tensor:
        """(B, 2, F) f0 Hz and loudness dB -> (B, 1, F * hop), after the attributes' changes."""
        f0 = controls[:, 0] * 2.0 ** (self.pitch_shift / 12.0)
        loudness = controls[:, 1] + self.loudness_offset
        harmonic, noise = self.render(f0, loudness)
        return harmonic * self.harmonic_gain + noise * self.noise_gain

    def render(self, f0: torch.Tensor, loudness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f0, loudness (B, F) -> harmonic and noise parts, each (B, 1, F * hop)."""
        amplitudes, magnitudes = self.decoder(f0, loudness)
        return self.harmonic(f0, amplitudes), self.noise(magnitudes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) -> (B, 1, T): the input's pitch and loudness played by the learned timbre."""
        return self.synth(self.features(x))

    @torch.jit.export
    def reset_state(self) -> None:
        self.analysis.reset_state()
        self.decoder.reset_state()
        self.harmonic.reset_state()
        self.noise.reset_state()


def build_ddsp(cfg: DDSPConfig, streaming: bool) -> DDSP:
    return DDSP(cfg, streaming)


def method_specs(model: DDSP) -> dict[str, tuple[int, int, int, int]]:
    """method -> (in_channels, in_ratio, out_channels, out_ratio)."""
    return {"forward": (1, 1, 1, 1), "features": (1, 1, 2, model.hop), "synth": (2, model.hop, 1, 1)}


def method_delays(model: DDSP) -> dict[str, int]:
    """Samples by which a streaming method's output lags the whole-signal pass: none."""
    return {"forward": model.delay, "features": model.delay, "synth": model.delay}


def analysis_latency(model: DDSP) -> dict[str, float]:
    """Where the features of a frame come from, in samples before the frame time (window centres).

    The streaming delay is 0 because every part is causal; a change in the input still reaches
    the output later: half an analysis window (the windows end at the frame time) plus up to one
    hop while the synth glides from one frame to the next.
    """
    features = model.analysis
    return {"pitch_window_centre": features.pitch_window / 2.0,
            "loudness_window_centre": features.loudness_window / 2.0,
            "glide": float(model.hop)}


# Cost per element of the elementwise operations counted below (FLOPs): a float remainder is a
# divide, floor and multiply-add.
REMAINDER_FLOPS = 3


def fft_flops(n: int) -> float:
    """A real FFT of size n: half of a complex radix-2 FFT's 5 n log2 n."""
    return 2.5 * n * math.log2(max(n, 2))


def flops_per_second(cfg: DDSPConfig) -> dict[str, float]:
    """FLOPs per second of audio of ``forward``, by part (analytic count, every op included)."""
    model = DDSP(cfg, streaming=False)
    rate, hop = cfg.sample_rate, cfg.hop
    frames = rate / hop
    yin = model.analysis.yin
    window = cfg.loudness_window
    loudness = fft_flops(window) + window + 6 * (window // 2 + 1) + 10
    decimated = rate / cfg.pitch_decimation
    lowpass = 2 * model.analysis.taps * decimated if cfg.pitch_decimation > 1 else 0.0
    pitch = (3 * fft_flops(yin.n_fft) + 3 * yin.n_fft + 3 * yin.span
             + 12 * (yin.tau_max + 1) + 40)  # FFT correlation, energies, d and d', search
    table = model.harmonic.table_size
    # per block: two tables (mask, gains, inverse FFT, wrap); per sample: the phase (lerp,
    # cumulative sum, remainder), table position and fraction, 4 reads, crossfade and lerp
    harmonic_per_frame = 2 * (fft_flops(table) + 8 * (cfg.n_harmonics + 1) + table)
    harmonic_per_sample = 3 + 1 + 2 + REMAINDER_FLOPS + 4 + 4 + 8 + 3
    taps = model.noise.taps
    n_fft = model.noise.n_fft
    bins = n_fft // 2 + 1
    noise = 2 * cfg.noise_bands * 2 * bins + 2 * fft_flops(n_fft) + 6 * bins + 2 * hop + taps
    return {
        "loudness": loudness * frames,
        "pitch": lowpass + pitch * frames,
        "decoder": decoder_flops_per_frame(cfg) * frames,
        "harmonic": harmonic_per_sample * rate + harmonic_per_frame * frames,
        "noise": noise * frames,
        "mix": 3.0 * rate,
    }


__all__ = ["ATTRIBUTES", "DDSP", "analysis_latency", "build_ddsp", "flops_per_second", "method_delays",
           "method_specs", "reset_state"]

"""The figure of docs/sample-rates.md: one model played by a host at 48 kHz and at 44.1 kHz.

    python benchmarks/sample_rate_figure.py                       # a random-weight 'causal' model
    python benchmarks/sample_rate_figure.py --model demo.ts       # any tildekit nn~ export
    python benchmarks/sample_rate_figure.py --out docs/sample-rates.png

The same continuous test signal (a rising sweep over a few held chords) is rendered at each
host rate and streamed through the nn~ export in buffers of 2048 host samples, exactly as nn~
calls it, after ``set host_sample_rate`` as the generated patches send it. A third panel plays
the 44.1 kHz input without telling the model the rate (what nn~ 1.6 does on its own) when the
model is not a 44.1 kHz model. The spectrograms share their axes in Hz and seconds; the printed
figure is the mean absolute difference of the first two log spectrograms (each output shifted
by its delay from the card).
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
import torch

RATES = (48000, 44100)  # the last one is also played without telling the model
SECONDS = 4.0
BUFFER = 2048


def test_signal(rate: int) -> np.ndarray:
    t = np.arange(int(SECONDS * rate)) / rate
    sweep = 0.25 * np.sin(2 * np.pi * (100 * t + 0.5 * (6000 - 100) / SECONDS * t ** 2))
    chords = sum(0.08 * np.sin(2 * np.pi * f * t) * (np.floor(t) % 2 == k % 2)
                 for k, f in enumerate((220.0, 277.2, 330.0, 440.0, 659.3)))
    return (sweep + chords).astype(np.float32)


def random_export(folder: Path, profile: str) -> Path:
    from tildekit.export.card_io import card_extra_files
    from tildekit.export.core import ExportCore
    from tildekit.export.model_card import card_from_core
    from tildekit.export.nn_tilde import script_nn_tilde
    from tildekit.models.autoencoder import build_model
    from tildekit.models.config import load_profile

    torch.manual_seed(0)
    core = ExportCore(build_model(load_profile(profile).model, True))
    card = card_from_core(core, profile, None, profile, 0)
    path = folder / f"{profile}.ts"
    torch.jit.save(script_nn_tilde(core, card), str(path), _extra_files=card_extra_files(card))
    return path


def play(path: Path, rate: int, told: bool = True) -> np.ndarray:
    model = torch.jit.load(str(path)).eval()
    if told:
        assert model.set_host_sample_rate(rate) == 0
    x = torch.from_numpy(test_signal(rate)).reshape(1, 1, -1)
    with torch.inference_mode():
        y = [model.forward(x[..., i:i + BUFFER]) for i in range(0, x.shape[-1] - BUFFER + 1, BUFFER)]
    return torch.cat(y, -1)[0, 0].numpy()


def log_spectrogram(y: np.ndarray, rate: int, seconds: np.ndarray, hz: np.ndarray) -> np.ndarray:
    """dB on a shared grid (frames at ``seconds``, bins at ``hz``), 46 ms Hann windows."""
    size = int(0.046 * rate)
    window = np.hanning(size)
    frames = []
    for t in seconds:
        start = int(t * rate) - size // 2
        chunk = y[max(0, start):start + size]
        chunk = np.pad(chunk, (0, size - chunk.size)) if chunk.size < size else chunk
        spectrum = np.abs(np.fft.rfft(chunk * window)) / window.sum()
        frames.append(np.interp(hz, np.fft.rfftfreq(size, 1 / rate), spectrum))
    return 20 * np.log10(np.maximum(np.array(frames).T, 1e-6))


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from tildekit.export.card_io import read_card

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an nn~ export (default: a random-weight model)")
    parser.add_argument("--profile", default="causal", help="profile of the random model (default causal)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "sample-rates.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        path = args.model or random_export(Path(folder), args.profile)
        card = read_card(path)
        panels = [(rate, True, play(path, rate)) for rate in RATES]
        if card.sample_rate != RATES[-1]:
            panels.append((RATES[-1], False, play(path, RATES[-1], told=False)))
    seconds = np.arange(0.25, SECONDS - 0.25, 0.01)
    hz = np.linspace(0, 20000, 400)
    grids = []
    for rate, told, y in panels:
        host = card.host_rate(rate)
        delay = host.delay("forward", BUFFER) if told and host else card.delay
        grids.append(log_spectrogram(y[int(delay):], rate, seconds, hz))
    difference = float(np.mean(np.abs(grids[0] - grids[1])[grids[0] > -80]))
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 1, 4), sharey=True,
                                constrained_layout=True)
    for axis, (rate, told, _), grid in zip(axes, panels, grids):
        if not told:
            label = "rate not told: the model's samples played as is"
        elif rate == card.sample_rate:
            label = "the model's own rate"
        else:
            label = f"resampled {rate} <-> {card.sample_rate} Hz"
        image = axis.pcolormesh(seconds, hz / 1000, grid, vmin=-90, vmax=-10, shading="auto", cmap="magma")
        axis.set_title(f"host at {rate / 1000:g} kHz\n({label})", fontsize=10)
        axis.set_xlabel("seconds (after the card's delay)")
    axes[0].set_ylabel("kHz")
    figure.colorbar(image, ax=axes, label="dB", shrink=0.9)
    figure.suptitle(f"'{card.name}' ({card.sample_rate / 1000:g} kHz model), the same input: 48 vs 44.1 kHz "
                    f"differ by {difference:.1f} dB on average", fontsize=11)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image_bytes = io.BytesIO()
    figure.savefig(image_bytes, dpi=72)
    Image.open(image_bytes).convert("RGB").quantize(64).save(args.out, optimize=True)  # a small file in git
    print(f"wrote {args.out}; mean absolute difference of the log spectrograms: {difference:.2f} dB")


if __name__ == "__main__":
    main()

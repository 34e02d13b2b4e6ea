"""Speed of the effect models' scripted streaming ``forward`` against the previous forms of the
cores and a baseline, in one run: 48 kHz, one thread, buffer 512 (the x-real-time column of
benchmarks/effects.py).

    python benchmarks/effects_speed.py [--buffer 512] [--rounds 7] [--seconds 1.0]

``before`` rows use the cores as they were written first (kept here as the baseline): the TCN
on ``(B, C, T)`` with ``models/streaming.py``'s cached convs (``F.conv1d`` or an im2col GEMM per
conv, 1x1 convs as convs), the GRU with transposes around ``nn.GRU``. ``after`` rows are the
shipped cores. Every model has random weights and the same knobs; rounds are interleaved and
the fastest round of each model is kept, so the ratios come from one run on one machine.
x real time = audio seconds / CPU seconds of the calling thread (less disturbed by other
processes on a shared machine than wall time). The ``raspberry`` autoencoder (exported core,
buffer 2048, as benchmarks/models.py times it) runs in the same rounds: the ``vs raspberry``
column is the load-independent figure to compare between runs and machines. The last rows
time a bare ``nn.GRU`` per sample: torch runs a GRU one step at a time, which bounds any GRU
core's speed at 48 kHz.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn as nn

from tildekit.models.config import EffectConfig, ModelConfig, load_profile
from tildekit.models.effects.conditioning import FilmGenerator, Smoother
from tildekit.models.effects.model import EffectModel, build_effect_model
from tildekit.models.effects.reference import OVERDRIVE
from tildekit.models.streaming import MAX_BATCH_SIZE, Layers, Stateful, reset_state

RATE = 48000
PROFILES = ("effect-tcn", "effect-raspberry", "effect-gru")
BASELINE, BASELINE_BUFFER = "raspberry", 2048
GRU_SIZES = (16, 32, 64)


def apply_film(h: torch.Tensor, film: torch.Tensor, offset: int) -> torch.Tensor:
    """The first form's FiLM, channels-first: h (B, C, T), film (B, D, T or 1)."""
    channels = h.shape[1]
    gamma = film[:, offset:offset + channels]
    beta = film[:, offset + channels:offset + 2 * channels]
    return h * torch.exp(gamma.clamp(max=8.0)) + beta


class BeforeTCNBlock(nn.Module):
    def __init__(self, layers: Layers, channels: int, kernel_size: int, dilation: int, film: bool) -> None:
        super().__init__()
        self.conv, _ = layers.conv(channels, channels, kernel_size, 0, dilation=dilation, causal=True)
        self.mix, _ = layers.conv(channels, channels, 1, 0)
        self.film = film

    def forward(self, h: torch.Tensor, cond: torch.Tensor, offset: int) -> torch.Tensor:
        y = self.conv(h)
        if self.film:
            y = apply_film(y, cond, offset)
        return h + self.mix(torch.tanh(y))


class BeforeTCNCore(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: list[int], knobs: int, film: bool) -> None:
        super().__init__()
        layers = Layers(True)
        self.film = film
        self.inp, _ = layers.conv(1 if film else 1 + knobs, channels, 1, 0)
        self.blocks = nn.ModuleList([BeforeTCNBlock(layers, channels, kernel_size, d, film) for d in dilations])
        self.out, _ = layers.conv(channels, 1, 1, 0)
        self.direct = nn.Parameter(torch.zeros(1))
        self.channels = channels

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.film:
            h = self.inp(x)
        else:
            h = self.inp(torch.cat([x, cond.expand(-1, -1, x.shape[-1])], 1))
        offset = 0
        for block in self.blocks:
            h = block(h, cond, offset)
            offset += 2 * self.channels
        return self.out(h) + self.direct * x

    def reset_state(self) -> None:
        pass


class BeforeGRUCore(Stateful):
    def __init__(self, hidden: int, knobs: int, film: bool) -> None:
        super().__init__()
        self.film = film
        self.hidden_size = hidden
        self.inp = nn.Linear(1, hidden) if film else None
        self.gru = nn.GRU(hidden if film else 1 + knobs, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 1)
        self.direct = nn.Parameter(torch.zeros(1))
        self.register_buffer("hidden", torch.zeros(1, MAX_BATCH_SIZE, hidden), persistent=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        batch, length = x.shape[0], x.shape[-1]
        inp = self.inp
        if inp is not None:
            h = apply_film(inp(x.transpose(1, 2)).transpose(1, 2), cond, 0)
        else:
            h = torch.cat([x, cond.expand(-1, -1, length)], 1)
        state = self.hidden[:, :batch]  # type: ignore[index]
        y, last = self.gru(h.transpose(1, 2), state)
        state.copy_(last.detach())
        y = y.transpose(1, 2)
        if self.film:
            y = apply_film(y, cond, 2 * self.hidden_size)
        return self.out(y.transpose(1, 2)).transpose(1, 2) + self.direct * x

    def reset_state(self) -> None:
        self.hidden.zero_()  # type: ignore[operator]


def effect_config(name: str, conditioning: str) -> EffectConfig:
    cfg = load_profile(name, [f"model.conditioning={conditioning}"]).model
    assert isinstance(cfg, EffectConfig)
    return cfg


def before_model(name: str, conditioning: str) -> EffectModel:
    """The shipped model with its core replaced by the first form (same FiLM sizes)."""
    cfg = effect_config(name, conditioning)
    model = build_effect_model(cfg, OVERDRIVE.knobs, streaming=True)
    film = conditioning == "film"
    core: nn.Module
    if cfg.core == "tcn":
        core = BeforeTCNCore(cfg.channels, cfg.kernel_size, list(cfg.dilations), len(OVERDRIVE.knobs), film)
    else:
        core = BeforeGRUCore(cfg.channels, len(OVERDRIVE.knobs), film)
        if film:  # the first form's FiLM had a gain and a shift at both sites: 4 H parameters
            setattr(model, "generator", FilmGenerator(len(OVERDRIVE.knobs), cfg.film_hidden, 4 * cfg.channels))  # noqa: B010
            setattr(model, "smoother", Smoother(4 * cfg.channels, cfg.smoothing_ms, cfg.sample_rate))  # noqa: B010
    setattr(model, "core", core)  # noqa: B010 (the shipped attribute is typed as the new cores)
    reset_state(model)
    return model.eval()


def after_model(name: str, conditioning: str) -> EffectModel:
    return build_effect_model(effect_config(name, conditioning), OVERDRIVE.knobs, streaming=True).eval()


class BareGRU(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(hidden, hidden)
        self.hidden_size = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.permute(2, 0, 1).expand(-1, -1, self.hidden_size).contiguous()
        return self.gru(h)[0][..., :1].permute(1, 2, 0)


def one_round(model: torch.jit.ScriptModule, x: torch.Tensor, buffer: int) -> float:
    """x real time of one pass over ``x`` in ``buffer``-sample calls, by the thread's CPU time."""
    began = time.thread_time()
    with torch.no_grad():
        for start in range(0, x.shape[-1], buffer):
            model(x[..., start:start + buffer])
    return x.shape[-1] / RATE / (time.thread_time() - began)


def baseline_model() -> torch.jit.ScriptModule:
    """The ``raspberry`` autoencoder's exported streaming core, scripted (random weights)."""
    from tildekit.export.core import ExportCore
    from tildekit.models.autoencoder import build_model

    cfg = load_profile(BASELINE).model
    assert isinstance(cfg, ModelConfig)
    return torch.jit.script(ExportCore(build_model(cfg, True)).eval())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--buffer", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.jit.script's notice
    models: dict[str, torch.jit.ScriptModule] = {}
    for name in PROFILES:
        for conditioning in ("film", "concat"):
            models[f"{name} {conditioning} before"] = torch.jit.script(before_model(name, conditioning))
            models[f"{name} {conditioning} after"] = torch.jit.script(after_model(name, conditioning))
    for hidden in GRU_SIZES:
        models[f"bare nn.GRU hidden {hidden}"] = torch.jit.script(BareGRU(hidden).eval())
    models[BASELINE] = baseline_model()
    x = 0.1 * torch.randn(1, 1, int(args.seconds * RATE) // BASELINE_BUFFER * BASELINE_BUFFER)
    best = dict.fromkeys(models, 0.0)
    for _ in range(args.rounds):
        for key, model in models.items():
            best[key] = max(best[key], one_round(model, x, BASELINE_BUFFER if key == BASELINE else args.buffer))
    base = best[BASELINE]
    print(f"x real time (thread CPU time), scripted streaming forward, {RATE} Hz, 1 thread, buffer "
          f"{args.buffer}, best of {args.rounds} interleaved rounds; baseline: {BASELINE} autoencoder "
          f"{base:.1f}x at buffer {BASELINE_BUFFER}\n")
    print(f"{'model':<30}{'before':>9}{'after':>9}{'ratio':>8}{'vs ' + BASELINE:>15}")
    for name in PROFILES:
        for conditioning in ("film", "concat"):
            before, after = best[f"{name} {conditioning} before"], best[f"{name} {conditioning} after"]
            print(f"{name + ' ' + conditioning:<30}{before:>9.1f}{after:>9.1f}{after / before:>8.2f}"
                  f"{after / base:>15.3f}")
    for hidden in GRU_SIZES:
        key = f"bare nn.GRU hidden {hidden}"
        print(f"{key:<30}{'':>9}{best[key]:>9.1f}{'':>8}{best[key] / base:>15.3f}   "
              f"({1e6 / (best[key] * RATE):.1f} us per sample)")


if __name__ == "__main__":
    main()

"""Cost and delay of playing an nn~ export at a host rate other than the model's.

    python benchmarks/resampler.py                    # profiles small, raspberry, causal
    python benchmarks/resampler.py --default          # ... and the (slow) default profile
    python benchmarks/resampler.py --ms 85 --seconds 2 --rounds 7
    python benchmarks/resampler.py --same-samples     # 2048 host samples at every rate
    python benchmarks/resampler.py --forms            # the file's block product vs the ONNX step

For each profile a random-weight model is exported as nn~ TorchScript; one loaded copy plays
at the model's own rate and one per host rate (``set_host_sample_rate``, as the generated
patches do). Every round streams the same duration of audio through each copy, in rotating
order, on one thread; the fastest round of each copy is kept, so the ratios come from one run
on one machine state. Buffers last the same time at every rate (``--ms``, rounded to whole
latent frames at the model's rate), so the model runs on the same amount of audio per call and
the difference is the resampler's; ``--same-samples`` keeps 2048 host samples instead (what a
patch with a fixed buffer does: at 96 kHz the model then gets half as much audio per call, and
small calls cost more per sample). Printed per host rate:

- x real time (seconds of audio per second of compute) of the whole export, and its cost
  relative to the native rate (1.10 = 10 % more CPU), the median of the per-round ratios;
- the resampling path alone (both resamplers and the FIFOs, with no model in between) as a
  share of the model's own cost at its rate: what the resampler adds, measured directly;
- the forward delay for this buffer size (the card's ``buffer_delays`` where it lists the size),
  and what resampling adds to it, split into the filters (both directions) and the frame FIFO
  (waiting for whole latent frames: none when a buffer is a whole number of frames at the
  model's rate, up to one frame otherwise), and the frame FIFO for calls of any size.

Why up to one frame: a model runs on whole latent frames. When a host buffer is not a whole
number of frames at the model's rate, the audio received and the audio processed drift apart
by a fraction of a frame per call, and every value of that fraction occurs, so some output
must wait up to a frame for its frame to complete. The prefill is the least that covers the
calls (tested), so no scheme that runs the model on whole frames waits less.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import torch

from tildekit.models.resample import (
    ResamplePath,
    StreamResampler,
    conv_weight,
    group_matrices,
    period_matrix,
    resample_step,
)
from tildekit.models.resample_plan import plan_method

PROFILES = ("small", "raspberry", "causal")
HOST_RATES = (44100, 88200, 96000)


def export(profile: str, folder: Path) -> Path:
    from tildekit.export.card_io import card_extra_files
    from tildekit.export.core import untrained_core
    from tildekit.export.model_card import card_from_core
    from tildekit.export.nn_tilde import script_nn_tilde

    core = untrained_core(profile)
    card = card_from_core(core, profile, None, profile, 0)
    path = folder / f"{profile}.ts"
    torch.jit.save(script_nn_tilde(core, card), str(path), _extra_files=card_extra_files(card))
    return path


def signal(rate: int, seconds: float, buffer: int) -> torch.Tensor:
    samples = int(seconds * rate) // buffer * buffer
    t = torch.arange(samples) / rate
    x = 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.05 * torch.randn(samples, generator=torch.Generator().manual_seed(0))
    return x.reshape(1, 1, -1).float()


def run(model, x: torch.Tensor, buffer: int) -> float:
    started = time.perf_counter()
    with torch.inference_mode():
        for begin in range(0, x.shape[-1], buffer):
            model.forward(x[..., begin:begin + buffer])
    return time.perf_counter() - started


class PathOnly(torch.nn.Module):
    """The forward resampling path with nothing in between (the model's place left empty)."""

    def __init__(self, plan, channels: int) -> None:
        super().__init__()
        self.path = ResamplePath(channels, channels)
        self.path.configure(torch.from_numpy(plan.pre.prototype.bank()),
                            torch.from_numpy(plan.post.prototype.bank()), plan.ints())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.path.leave(self.path.enter(x), x.size(-1))

    @torch.jit.export
    def set_reset(self, reset: bool) -> int:
        self.path.reset_state()
        return 0


def bench_profile(path: Path, ms: float, same_samples: bool, seconds: float, rounds: int) -> list[str]:
    from tildekit.export.card_io import read_card

    card = read_card(path)
    rates = [card.sample_rate] + [r for r in HOST_RATES if r != card.sample_rate]
    frames = max(1, round(ms / 1000 * card.sample_rate / card.compression))
    buffers = {rate: 2048 if same_samples else round(frames * card.compression * rate / card.sample_rate)
               for rate in rates}
    forward = card.methods["forward"]
    models, inputs = {}, {}
    for rate in rates:
        model = torch.jit.load(str(path)).eval()
        assert model.set_host_sample_rate(rate) == 0
        models[rate], inputs[rate] = model, signal(rate, seconds, buffers[rate])
        if rate != card.sample_rate:
            plan = plan_method("forward", card.sample_rate, rate, 1, 1, forward.delay, card.compression)
            models[("path", rate)] = torch.jit.script(PathOnly(plan, card.channels))
            inputs[("path", rate)] = inputs[rate]
            buffers[("path", rate)] = buffers[rate]
    keys = list(models)
    for key in keys:
        for _ in range(3):  # TorchScript optimises on its first calls
            run(models[key], inputs[key][..., : 2 * buffers[key]], buffers[key])
    best = {key: float("inf") for key in keys}
    per_round: dict = {key: [] for key in keys}
    for round_index in range(rounds):
        order = keys[round_index % len(keys):] + keys[: round_index % len(keys)]
        for key in order:
            models[key].set_reset(True)
            spent = run(models[key], inputs[key], buffers[key]) / (inputs[key].shape[-1] / (key[1] if isinstance(key, tuple) else key))
            per_round[key].append(spent)
            best[key] = min(best[key], spent)
    lines = []
    for rate in rates:
        ratios = sorted(a / b for a, b in zip(per_round[rate], per_round[card.sample_rate]))
        cost = ratios[len(ratios) // 2]
        share = ""
        if rate != card.sample_rate:
            shares = sorted(a / b for a, b in zip(per_round[("path", rate)], per_round[card.sample_rate]))
            share = f"{100 * shares[len(shares) // 2]:>7.1f} %"
        delay_ms = 1000 * forward.delay / card.sample_rate
        filters = fifo = any_size = 0.0
        if rate != card.sample_rate:
            plan = plan_method("forward", card.sample_rate, rate, 1, 1, forward.delay, card.compression)
            delay = plan.call_delay(buffers[rate])  # what this buffer size gets (the card's, when listed)
            assert card.host_rate(rate).delay("forward", buffers[rate]) in (float(delay), plan.delay)
            delay_ms = 1000 * float(delay) / rate
            filters = 1000 * float(plan.pre.delay + plan.post.delay)
            fifo = 1000 * float(Fraction(plan.call_prefill(buffers[rate]), rate))
            any_size = 1000 * float(Fraction(plan.prefill, rate))
        lines.append(f"{card.name:<10} {rate:>6}{'*' if rate == card.sample_rate else ' '} {buffers[rate]:>6} "
                     f"{1 / best[rate]:>8.1f}x {cost:>8.3f} {share:>9} "
                     f"{delay_ms:>9.2f} {delay_ms - 1000 * forward.delay / card.sample_rate:>9.2f} "
                     f"{filters:>8.2f} {fifo:>8.2f} {any_size:>8.2f}")
    return lines


class GatheredStep(torch.nn.Module):
    """The ONNX form of one resampler (gathered windows per group of outputs, or a convolution
    over interleaved phases), scripted, with its state held here: what the file's
    :class:`StreamResampler` is compared with by ``--forms``."""

    def __init__(self, bank: torch.Tensor, up: int, down: int) -> None:
        super().__init__()
        self.matrices, self.starts = group_matrices(bank, up, down, 0)
        self.weight = conv_weight(period_matrix(bank, up, down, 0), up, down)
        self.up, self.down = up, down
        self.history = torch.zeros(1, 1, down + bank.size(1) - 1)
        self.position = torch.zeros((), dtype=torch.long)
        self.phase = torch.zeros((), dtype=torch.long)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, self.history, self.position, self.phase = resample_step(
            x, self.history, self.position, self.phase, self.matrices, self.starts, self.weight, self.up, self.down)
        return y


def compare_forms(rounds: int) -> None:
    """Time per call of both directions (host -> model -> host), each form, interleaved."""
    from tildekit.models.resample_design import reduced_ratio, sinc_prototype

    print("host -> model -> host, one call each way, best of interleaved rounds, 1 thread")
    for host, model, buffer in ((96000, 48000, 4096), (88200, 48000, 3763), (44100, 48000, 1882),
                                (44100, 16000, 1764), (88200, 16000, 3528), (96000, 16000, 3840)):
        forms: dict[str, list[torch.nn.Module]] = {"block": [], "gathered": []}
        for a, b in ((host, model), (model, host)):
            up, down = reduced_ratio(a, b)
            bank = torch.from_numpy(sinc_prototype(up, down).bank())
            block = StreamResampler(1)
            block.configure(bank, up, down, 0)
            forms["block"].append(torch.jit.script(block))
            forms["gathered"].append(torch.jit.script(GatheredStep(bank, up, down)))
        x = torch.randn(1, 1, buffer)
        best = {name: float("inf") for name in forms}
        with torch.inference_mode():
            for index in range(rounds + 3):  # the first rounds let TorchScript optimise
                for name, (pre, post) in forms.items():
                    started = time.perf_counter()
                    for _ in range(30):
                        post(pre(x))
                    if index >= 3:
                        best[name] = min(best[name], (time.perf_counter() - started) / 30)
        print(f"{host:>6} <-> {model:<6} buffer {buffer:>5}: block {1e6 * best['block']:6.0f} us, gathered "
              f"{1e6 * best['gathered']:6.0f} us, ratio {best['block'] / best['gathered']:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default", action="store_true", help="also the (slow, large) default profile")
    parser.add_argument("--ms", type=float, default=42.7, help="buffer duration (default 42.7: 2048 at 48 kHz)")
    parser.add_argument("--same-samples", action="store_true", help="2048 host samples per call at every rate")
    parser.add_argument("--seconds", type=float, default=0.5, help="audio per round and rate (default 0.5)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--forms", action="store_true", help="compare the file's resampler with the ONNX step")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.forms:
        compare_forms(args.rounds)
        return
    profiles = PROFILES + (("default",) if args.default else ())
    size = "2048 host samples" if args.same_samples else f"{args.ms:g} ms (whole frames)"
    print(f"buffers of {size}, {args.rounds} rounds of {args.seconds:g} s per rate, 1 thread; "
          f"* = the model's own rate")
    print(f"{'profile':<10} {'host Hz':>7} {'buffer':>6} {'x r.t.':>9} {'cost':>8} {'resampler':>9} {'delay ms':>9} "
          f"{'added ms':>9} {'filters':>8} {'frames':>8} {'any size':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for profile in profiles:
            lines = bench_profile(export(profile, Path(folder)), args.ms, args.same_samples, args.seconds, args.rounds)
            for line in lines:
                print(line, flush=True)


if __name__ == "__main__":
    main()

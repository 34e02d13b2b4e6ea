"""How one model method runs at a host's sample rate: filters, offsets, FIFO and exact delay.

Pure arithmetic (numpy for the filters, integers and fractions for the rest): the nn~ export
bakes the plans into its file, the model card records their delays, the engine builds one at
run time. The path of one call (``B`` host units in, ``B`` host units out)::

    host units ─► pre resampler ─► FIFO ─► method on whole granules ─► post resampler ─► FIFO ─► host units
                  (host -> model)   (< g left over)                     (model -> host)  (starts with P zeros)

- A *unit* is an audio sample (ratio 1) or a latent frame (ratio = compression); latent frames
  are resampled too (sample and hold): frame rates differ by the same ratio as audio rates.
- ``g`` (granularity): the method only runs on whole latent frames, so the FIFO in front of it
  releases multiples of ``g`` model units and keeps the rest for the next call.
- ``P`` (prefill): the output FIFO starts with ``P`` zero units, the least that lets every call
  return exactly its ``B`` units whatever the sizes of the calls (:func:`least_prefill`). So the
  output is one fixed delay of the whole-signal output, and N calls equal one whole-signal call.
- Delay, in seconds: pre filter + the method's own delay + post filter + ``P`` units. The post
  resampler's output offset is chosen so that the total is a whole number of host samples
  whenever the phases allow it (always for audio outputs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from tildekit.models.contract.card import HostRate, MethodSpec
from tildekit.models.resample_design import Prototype, hold_prototype, produced, reduced_ratio, sinc_prototype

# The host rates every export is planned, checked and documented for.
HOST_RATES = (44100, 48000, 88200, 96000)
# Host buffer sizes (samples) whose own delays the card records at each host rate.
CARD_BUFFERS = (128, 256, 512, 1024, 2048, 4096, 8192)
# Ratios whose reduced terms exceed this need filter banks too large to be worth it (44100 / 48000
# is 147 / 160, 16000 / 88200 is 80 / 441).
MAX_PHASES = 2048


@dataclass(frozen=True)
class Stage:
    """One resampler of a path: its filter, its output offset, and its input rate (units/s)."""

    prototype: Prototype
    offset: int
    in_rate: Fraction

    @property
    def up(self) -> int:
        return self.prototype.up

    @property
    def down(self) -> int:
        return self.prototype.down

    @property
    def delay(self) -> Fraction:
        """Seconds between an input feature and the same feature at the output."""
        return Fraction(self.prototype.delay - self.offset) / (self.up * self.in_rate)

    def produced(self, count: int) -> int:
        return produced(count, self.up, self.down, self.offset)


@dataclass(frozen=True)
class MethodPlan:
    """One method at one host rate. Units: ``in_ratio`` / ``out_ratio`` audio samples each."""

    method: str
    model_rate: int
    host_rate: int
    in_ratio: int
    out_ratio: int
    method_delay: int  # the method's own delay, model-rate audio samples
    pre: Stage
    post: Stage
    granularity: int  # model-side input units per granule
    step: int  # host-side input units come in multiples of this (whole output units)
    prefill: int  # output units the output FIFO starts with

    @property
    def resampling(self) -> bool:
        return self.model_rate != self.host_rate

    @property
    def delay_seconds(self) -> Fraction:
        if not self.resampling:
            return Fraction(self.method_delay, self.model_rate)
        return (self.pre.delay + Fraction(self.method_delay, self.model_rate) + self.post.delay
                + Fraction(self.prefill * self.out_ratio, self.host_rate))

    @property
    def delay(self) -> Fraction:
        """Host samples between the input and the output (the method's own delay included)."""
        return self.delay_seconds * self.host_rate

    @property
    def added_delay_seconds(self) -> Fraction:
        """What resampling adds to the method's own delay."""
        return self.delay_seconds - Fraction(self.method_delay, self.model_rate)

    def output_units(self, input_units: int) -> int:
        return input_units * self.in_ratio // self.out_ratio

    def ints(self) -> list[int]:
        """The integers a streaming implementation needs, in :data:`PLAN_INTS` order."""
        return [self.pre.up, self.pre.down, self.pre.offset, self.post.up, self.post.down,
                self.post.offset, self.granularity, self.step, self.prefill, self.in_ratio, self.out_ratio]

    def call_prefill(self, call: int) -> int:
        """The prefill when every call brings ``call`` host units (see :func:`call_prefill`)."""
        return call_prefill(self.ints(), call)

    def call_delay(self, call: int) -> Fraction:
        """Host samples from input to output when every call brings ``call`` host units."""
        if not self.resampling:
            return self.delay
        return self.delay - (self.prefill - self.call_prefill(call)) * self.out_ratio


PLAN_INTS = ("pre_up", "pre_down", "pre_offset", "post_up", "post_down", "post_offset",
             "granularity", "step", "prefill", "in_ratio", "out_ratio")

# Calls of one size: the counts repeat after a cycle of calls (call_cycle). A longer cycle than
# this is not simulated; such calls get the prefill that serves calls of any size.
MAX_CYCLE_CALLS = 1 << 16


def call_cycle(ints: list[int], call: int) -> int:
    """Calls of ``call`` host units after which every count of the path has advanced by whole
    granules and whole outputs, so the shortfall pattern repeats (0 if longer than
    :data:`MAX_CYCLE_CALLS`). ``ints`` in :data:`PLAN_INTS` order. Twin of the file's
    :func:`tildekit.models.resample.call_cycle`."""
    pre_up, pre_down, post_up, post_down, g = ints[0], ints[1], ints[3], ints[4], ints[6]
    in_ratio, out_ratio = ints[9], ints[10]
    calls = pre_down // math.gcd(call * pre_up, pre_down)  # whole pre outputs
    made = calls * call * pre_up // pre_down
    calls *= g // math.gcd(made, g)  # whole granules
    levels = calls * call * pre_up // pre_down // g
    per_level = g * in_ratio // out_ratio
    calls *= post_down // math.gcd(levels * per_level * post_up, post_down)  # whole post outputs
    return calls if calls <= MAX_CYCLE_CALLS else 0


def call_prefill(ints: list[int], call: int) -> int:
    """The fewest zero output units that keep the output FIFO from running dry when every call
    brings exactly ``call`` host units (hosts call with one buffer size).

    :func:`least_prefill` serves calls of any size: its worst total ``X`` is reached by some
    sequence of calls. Calls of one size ``B`` only reach the totals ``k B``; when ``B`` at
    the model's rate is a whole number of latent frames (a 96 kHz host with 4096-sample
    buffers around a 48 kHz model with 2048-sample frames) no call ever waits for a frame.
    Two cycles of calls are simulated (the first may hold the start-up clamps).
    """
    if call <= 0 or call % ints[7]:
        return ints[8]
    cycle = call_cycle(ints, call)
    if cycle == 0:
        return ints[8]
    pre_up, pre_down, pre_offset, post_up, post_down, post_offset, g = ints[:7]
    in_ratio, out_ratio = ints[9], ints[10]
    x = np.arange(1, 2 * cycle + 1, dtype=np.int64) * call
    y = np.maximum(0, (x * pre_up + pre_down - 1 - pre_offset) // pre_down)
    out = (y // g) * (g * in_ratio // out_ratio)
    w = np.maximum(0, (out * post_up + post_down - 1 - post_offset) // post_down)
    return int(min(ints[8], max(0, int((x * in_ratio // out_ratio - w).max()))))


def plan_method(method: str, model_rate: int, host_rate: int, in_ratio: int, out_ratio: int,
                method_delay: int, compression: int, granularity: int | None = None) -> MethodPlan:
    """The plan of one method (``granularity`` defaults to one latent frame of input units)."""
    if granularity is None:
        granularity = max(1, compression // in_ratio)
    step = out_ratio // math.gcd(in_ratio, out_ratio)
    up, down = reduced_ratio(host_rate, model_rate)
    if max(up, down) > MAX_PHASES:
        raise ValueError(f"{host_rate} Hz to {model_rate} Hz is a ratio of {up}/{down}: use a standard "
                         f"sample rate (e.g. 44100, 48000, 88200 or 96000 Hz)")
    pre_proto = sinc_prototype(up, down) if in_ratio == 1 else hold_prototype(up, down)
    post_proto = sinc_prototype(down, up) if out_ratio == 1 else hold_prototype(down, up)
    pre_rate = Fraction(host_rate, in_ratio)
    post_rate = Fraction(model_rate, out_ratio)
    pre_offset, post_offset = _whole_sample_offsets(pre_proto, post_proto, pre_rate, post_rate,
                                                    Fraction(method_delay, model_rate), host_rate)
    pre = Stage(pre_proto, pre_offset, pre_rate)
    post = Stage(post_proto, post_offset, post_rate)
    plan = MethodPlan(method, model_rate, host_rate, in_ratio, out_ratio, method_delay, pre, post,
                      granularity, step, 0)
    if not plan.resampling:
        return plan
    return MethodPlan(**{**plan.__dict__, "prefill": least_prefill(plan)})


def least_prefill(plan: MethodPlan) -> int:
    """The fewest zero output units that keep the output FIFO from running dry on any call.

    After ``X`` host units in total (a multiple of ``step``), the pre resampler has made
    ``Y(X)`` model units, the method has consumed ``Z = g * floor(Y / g)``, and the post
    resampler has made ``W(Z)`` output units, while the host has asked for ``need(X)``. The
    worst shortfall ``need(X) - W`` over all ``X`` is the prefill. For a level ``Z = g q`` it is
    largest at the last ``X`` before the next granule completes, and the pattern repeats after
    ``Q`` levels (all counts advance by whole numbers): one vectorised pass over ``q < Q``.
    """
    pre, post, g, s = plan.pre, plan.post, plan.granularity, plan.step
    per_level = g * plan.in_ratio // plan.out_ratio  # method output units per granule
    q_pre = pre.up * s // math.gcd(pre.up * s, g * pre.down)
    q_post = post.down // math.gcd(post.down, per_level)
    levels = math.lcm(q_pre, q_post)
    q = np.arange(levels + 1, dtype=np.int64)
    # last X with Y(X) < g (q + 1):  X * up <= g (q + 1) * down - down + offset
    last = (g * (q + 1) * pre.down - pre.down + pre.offset) // pre.up
    last = (last // s) * s
    need = last * plan.in_ratio // plan.out_ratio
    made = np.maximum(0, (q * per_level * post.up + post.down - 1 - post.offset) // post.down)
    return int(max(0, (need - made).max()))


def _whole_sample_offsets(pre: Prototype, post: Prototype, pre_rate: Fraction, post_rate: Fraction,
                          method_delay: Fraction, host_rate: int) -> tuple[int, int]:
    """Output offsets (pre, post) making the delay a whole number of host samples if possible.

    An offset of ``o`` moves a stage's output grid ``o`` common-rate samples later, so the delay
    shrinks by ``o / (up * in_rate)`` seconds. The prefill adds whole output units, which are
    whole host samples. Solve ``base - a * u_pre - b * u_post = integer`` for the smallest
    ``a < pre.down`` then some ``b < post.down`` (a linear congruence); (0, 0) if impossible.
    """
    if pre.up == pre.down == 1:
        return 0, 0
    base = (pre.delay / (pre.up * pre_rate) + method_delay + post.delay / (post.up * post_rate)) * host_rate
    u_pre = Fraction(host_rate) / (pre.up * pre_rate)
    u_post = Fraction(host_rate) / (post.up * post_rate)
    scale = math.lcm(base.denominator, u_pre.denominator, u_post.denominator)
    b0, a1, c1 = int(base * scale), int(u_pre * scale), int(u_post * scale)
    g = math.gcd(c1, scale)
    inverse = pow(c1 // g, -1, scale // g) if scale // g > 1 else 0
    for a in range(pre.down):
        rest = (b0 - a * a1) % scale
        if rest % g:
            continue
        b = (rest // g * inverse) % (scale // g)
        if b < post.down:
            return a, b
    return 0, 0


def method_plans(model_rate: int, host_rate: int, methods: dict[str, MethodSpec],
                 compression: int) -> dict[str, MethodPlan]:
    """Plans for every method of a card's methods table at one host rate."""
    return {name: plan_method(name, model_rate, host_rate, spec.in_ratio, spec.out_ratio, spec.delay,
                              compression)
            for name, spec in methods.items()}


def host_rate_table(model_rate: int, methods: dict[str, MethodSpec], compression: int,
                    rates: tuple[int, ...] = HOST_RATES,
                    buffers: tuple[int, ...] = CARD_BUFFERS) -> list[HostRate]:
    """What the model card records: per host rate, each method's delay and what resampling adds
    (per buffer size of ``buffers`` too)."""
    table = []
    for rate in rates:
        plans = method_plans(model_rate, rate, methods, compression)
        by_buffer = {str(size): buffer_delays(plans, size) for size in buffers} if rate != model_rate else {}
        table.append(HostRate(
            rate=rate,
            delays={name: _exact_float(plan.delay) for name, plan in plans.items()},
            added_ms={name: round(1000 * float(plan.added_delay_seconds), 3) for name, plan in plans.items()},
            buffer_delays={size: delays for size, delays in by_buffer.items() if delays}))
    return table


def card_buffers(highest_ratio: int) -> tuple[int, ...]:
    """:data:`CARD_BUFFERS`, and the smallest buffer nn~ takes (the power of two from the highest
    ratio) when it is below them: a family with short frames plays, and is checked, there too."""
    smallest = 1 << max(0, highest_ratio - 1).bit_length()
    return tuple(sorted({smallest, *CARD_BUFFERS})) if smallest < CARD_BUFFERS[0] else CARD_BUFFERS


def buffer_delays(plans: dict[str, MethodPlan], buffer: int) -> dict[str, float]:
    """Per method, the delay when the host calls with ``buffer`` audio samples (a method whose
    input is latent frames gets ``buffer / in_ratio`` of them; left out if that is not whole)."""
    delays = {}
    for name, plan in plans.items():
        units, rest = divmod(buffer, plan.in_ratio)
        if units and not rest and units % plan.step == 0:
            delays[name] = _exact_float(plan.call_delay(units))
    return delays


def _exact_float(value: Fraction) -> float:
    """Whole numbers stay whole; fractions of a sample keep 6 decimals."""
    return float(value) if value.denominator == 1 else round(float(value), 6)

"""Contract checks on an exported file, loaded exactly the way its host loads it.

``.ts`` (nn~): ``torch.jit.load`` + ``eval()``, nothing from tildekit on the model's path; every
method is called the way nn~ calls it (under inference mode, consecutive buffers, every power
of two buffer from the highest ratio to 16384, batch 1 and 2), attributes are set with values
parsed as nn~ parses Pd messages, and operators are checked against the hosts' libtorch.
``.nm`` runs the Neutone exporter's own host sequence; ``.onnx`` the ONNX exporter's check.

Each item gives a :class:`CheckResult`; the runner never stops at the first failure, so one
run lists everything that is wrong. A file that cannot be loaded at all raises TildekitError.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tildekit.errors import TildekitError
from tildekit.export.card_io import read_card
from tildekit.export.check_result import CheckResult
from tildekit.export.nn_load import load_like_nn
from tildekit.models.contract.attributes import LATENT_BIAS, RESET, TEMPERATURE
from tildekit.models.contract.card import NN_TYPE_CODES, HostRate, ModelCard
from tildekit.models.contract.nn_host import HOST_RATE_ATTRIBUTE

if TYPE_CHECKING:  # torch is imported by the .ts/.nm checks only: .onnx files are checked without it
    import torch

MAX_HOST_BUFFER = 16384
BATCHES = (1, 2)
# Streaming equality, as a fraction of full scale or of the output's peak if larger (-80 dB):
# float32 sums taken in another order differ by up to 3e-5 between buffer sizes in the deep
# profiles, while a state that does not carry over errs by the size of the signal itself.
STREAM_TOLERANCE = 1e-4
STREAM_SECONDS_MIN = 16384  # samples streamed by the buffer-size equality check


def _stream_limit(reference: torch.Tensor) -> float:
    return STREAM_TOLERANCE * max(1.0, float(reference.abs().max()))


def host_buffers(highest_ratio: int, largest: int = MAX_HOST_BUFFER) -> list[int]:
    """Every buffer nn~ may pick: powers of two from the highest ratio up to ``largest``."""
    buffer = 1
    while buffer < highest_ratio:
        buffer *= 2
    sizes = []
    while buffer <= max(largest, highest_ratio):
        sizes.append(buffer)
        buffer *= 2
    return sizes


def check_file(path: str | Path, quick: bool = False) -> list[CheckResult]:
    """Run every contract item for the file's host (by suffix).

    ``quick``: the structural items only (load as the host does, methods / attributes / card
    agree, a short stream); the full run (the default, ``tildekit check``) adds every host
    buffer size and rate, the delay bounds and the hosts' operator tables.
    """
    path = Path(path)
    checks = {".ts": check_torchscript, ".nm": check_neutone, ".onnx": check_onnx_file}
    check = checks.get(path.suffix.lower())
    if check is check_onnx_file:
        return check(path, quick)  # ONNX Runtime alone: the runtime install checks .onnx without torch
    if check is not None:
        import torch

        # One thread, as a host's audio thread runs it; several threads on a busy machine
        # spend most of their time waiting for each other.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return check(path, quick)
        finally:
            torch.set_num_threads(threads)
    raise TildekitError(f"{path}: cannot check a {path.suffix or 'suffix-less'} file: pass a .ts "
                        f"(nn~), .nm (Neutone) or .onnx file written by `tildekit export`")


# ------------------------------------------------------------------------------- nn~ host


def nn_parse(text: str, code: int) -> Any:
    """A value as nn~ hands it to a setter: ``to_bool`` / ``stoi`` / ``stof`` of the message word."""
    import torch

    if code == NN_TYPE_CODES["bool"]:
        return text.strip().lower() != "false"  # only the word false is false (docs/contracts.md §1)
    if code == NN_TYPE_CODES["int"]:
        return int(float(text))
    if code == NN_TYPE_CODES["float"]:
        return float(torch.tensor(float(text), dtype=torch.float32))
    return text


def pd_word(value: Any) -> str:
    """How a Pd message atom reaches nn~: bools as words, numbers as 6-decimal strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{float(value):.6f}"
    return str(value)


def nn_set(model: Any, name: str, values: list[Any]) -> Any:
    """``[set NAME v1 v2 ...(`` as nn~ does it: parse with ``NAME_params``, call ``set_NAME``."""
    codes = [int(c) for c in getattr(model, f"{name}_params").tolist()]
    if len(codes) != len(values):
        raise ValueError(f"{name} takes {len(codes)} values, got {len(values)}")
    args = [nn_parse(pd_word(v), c) for v, c in zip(values, codes)]
    return getattr(model, f"set_{name}")(*args)


def _has_method(model: Any, name: str) -> bool:
    return bool(model._c._has_method(name))


class Note(str):
    """A PASS worth a word (e.g. an optional nn~ feature a foreign file does without)."""


def _run(items: list[CheckResult], item: str, test: Callable[[], str | None]) -> None:
    """Run one item: None or "" = PASS, a Note = PASS with it, a string = FAIL reason, an exception = FAIL."""
    try:
        reason = test()
    except Exception as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        # TorchScript errors carry the script traceback: keep the message, not the frames
        marker = text.find("builtins.")
        items.append(CheckResult(item, False, (text[marker:] if marker >= 0 else text)[:300]))
        return
    items.append(CheckResult(item, not reason or isinstance(reason, Note), reason or ""))


def _stream(method: Any, signal: torch.Tensor, buffer: int, ratio: int) -> torch.Tensor:
    """Call ``method`` on consecutive buffers of ``buffer`` host samples (signal at rate 1/ratio)."""
    import torch

    step = buffer // ratio
    # The plain interpreter: same operators and arithmetic, without re-profiling per shape.
    with torch.inference_mode(), torch.jit.optimized_execution(False):
        return torch.cat([method(signal[..., i:i + step]) for i in range(0, signal.shape[-1], step)], -1)


def _method_input(card: ModelCard, method: str, batch: int, samples: int, seed: int) -> torch.Tensor:
    """Generated input: a chirp plus noise for audio, smooth in-range wander for latents."""
    import torch

    spec = card.methods[method]
    generator = torch.Generator().manual_seed(seed)
    length = samples // spec.in_ratio
    if spec.in_ratio == 1:
        t = torch.arange(length) / card.sample_rate
        chirp = torch.sin(2 * torch.pi * (110 + 400 * t) * t)
        noise = 0.05 * torch.randn(batch, spec.in_channels, length, generator=generator)
        return (0.3 * chirp + noise).float()
    walk = torch.randn(batch, spec.in_channels, length, generator=generator).cumsum(-1)
    walk = walk / (walk.abs().amax(-1, keepdim=True) + 1e-6)
    if len(card.latents) == spec.in_channels:
        std = torch.tensor([max(d.std, 1e-3) for d in card.latents]).view(1, -1, 1)
        walk = walk * 2 * std
    return walk.float()


def check_torchscript(path: Path, quick: bool = False) -> list[CheckResult]:
    import torch

    from tildekit.export.card_io import model_card
    from tildekit.models.contract.card import FOREIGN_NOTE, is_derived

    # Truncated / newer card: TildekitError before loading. No card: derived from the file.
    card = model_card(path)
    derived = is_derived(card)
    model = load_like_nn(path)
    items: list[CheckResult] = [CheckResult("load (torch.jit.load + eval)", True)]
    if derived:
        items.insert(0, CheckResult("model card", True, f"{FOREIGN_NOTE} (delays: "
                                    f"{card.extra.get('delay_source', 'not measured')})"))
    ratio = card.highest_ratio
    buffers = host_buffers(ratio)
    if quick:  # the smallest buffer and the streaming check's large one
        buffers = sorted({buffers[0], min(buffers[-1], max(4096, buffers[0]))})

    def fresh() -> Any:
        """The model in its initial streaming state: set_reset, or (a foreign file) a new load."""
        if _has_method(model, "set_reset") and not derived:
            model.set_reset(True)
            return model
        return load_like_nn(path)

    def methods() -> str | None:
        if not _has_method(model, "get_methods"):
            if derived:
                return Note(f"no get_methods(): nn~ lists the methods with *_params buffers "
                            f"({', '.join(card.methods)})")
            return "no get_methods(): nn~ would guess methods from *_params attributes"
        names = list(model.get_methods())
        if "forward" not in names:
            if derived:
                return Note(f"no forward ({names}): a typo in the method argument falls back to "
                            f"forward and fails")
            return f"get_methods() lacks forward ({names}): nn~ falls back to forward on a typo"
        missing = [n for n in names if not _has_method(model, n)]
        if missing:
            return f"get_methods() lists {missing} but the file has no such method"
        if set(names) != set(card.methods):
            return f"get_methods() gives {sorted(names)} but the card says {sorted(card.methods)}"
        return None

    _run(items, "get_methods", methods)
    names = [n for n in card.methods if _has_method(model, n)]
    for name in names:
        spec = card.methods[name]

        def params(name: str = name, spec: Any = spec) -> str | None:
            value = getattr(model, f"{name}_params")
            if not isinstance(value, torch.Tensor) or value.dtype.is_floating_point:
                return f"{name}_params is not an integer tensor"
            if value.numel() != 4:
                return f"{name}_params holds {value.numel()} values, nn~ reads exactly 4"
            if value.tolist() != spec.params:
                return f"{name}_params is {value.tolist()} but the card says {spec.params}"
            return None

        def labels(name: str = name, spec: Any = spec) -> str | None:
            if derived and not hasattr(model, f"{name}_input_labels"):
                return Note("none in the file (optional: Max shows generic hints)")
            inputs = list(getattr(model, f"{name}_input_labels"))
            outputs = list(getattr(model, f"{name}_output_labels"))
            if len(inputs) != spec.in_channels or len(outputs) != spec.out_channels:
                return (f"{len(inputs)} input / {len(outputs)} output labels for "
                        f"{spec.in_channels} / {spec.out_channels} channels")
            return None

        def shapes(name: str = name, spec: Any = spec) -> str | None:
            method = getattr(fresh(), name)
            for batch in BATCHES:
                for buffer in buffers:
                    x = _method_input(card, name, batch, buffer, seed=buffer)
                    with torch.inference_mode():
                        y = method(x)
                    want = (batch, spec.out_channels, buffer // spec.out_ratio)
                    if tuple(y.shape) != want or y.dtype != torch.float32:
                        return (f"buffer {buffer}, batch {batch}: returned {tuple(y.shape)} "
                                f"{y.dtype}, nn~ needs {want} float32")
                    if not torch.isfinite(y).all():
                        return f"buffer {buffer}, batch {batch}: NaN or infinite output"
            return None

        def streaming(name: str = name, spec: Any = spec) -> str | None:
            # Host-observable streaming: the same signal in small and large buffers, each run
            # after a reset, must give the same samples.
            small, large = buffers[0], min(buffers[-1], max(4096, buffers[0]))
            length = 2 * large if quick else max(STREAM_SECONDS_MIN, 2 * large)
            x = _method_input(card, name, 2, length, seed=7)
            torch.manual_seed(0)
            a = _stream(getattr(fresh(), name), x, small, spec.in_ratio)
            torch.manual_seed(0)
            b = _stream(getattr(fresh(), name), x, large, spec.in_ratio)
            error, limit = float((a - b).abs().max()), _stream_limit(b)
            if error > limit and card.extra.get("stochastic"):
                # Random draws (sampling, noise) differ with the buffer size, so equality cannot
                # hold sample for sample: the difference must stay within what the seed alone moves.
                torch.manual_seed(1)
                c = _stream(getattr(fresh(), name), x, large, spec.in_ratio)
                spread = float((b - c).abs().max())
                if error <= 2 * spread:
                    return Note(f"stochastic model: buffers of {small} and {large} differ by {error:.3g}, "
                                f"within what its random draws alone move ({spread:.3g})")
                return (f"buffers of {small} and {large} samples differ by {error:.3g}, more than its "
                        f"random draws explain ({spread:.3g}): state does not carry over between calls")
            if error > limit:
                return (f"buffers of {small} and {large} samples differ by {error:.3g} "
                        f"(> {limit:.3g}): state does not carry over between calls")
            return None

        _run(items, f"{name}_params", params)
        _run(items, f"{name} labels", labels)
        _run(items, f"{name} output shape (buffers {buffers[0]}..{buffers[-1]}, batch 1 and 2)", shapes)
        _run(items, f"{name} streaming (buffer {buffers[0]} vs {min(buffers[-1], max(4096, buffers[0]))})",
             streaming)
    if derived:
        items.extend(_foreign_attribute_checks(model, card, path))
    else:
        for name in names if _has_method(model, "set_reset") and not quick else []:
            _run(items, f"{name} delay (responds to an input burst within the card's "
                        f"{card.methods[name].delay} samples)",
                 functools.partial(_delay_bound, model, card, name, buffers[0]))
        items.extend(_attribute_checks(model, card, path))
        items.extend(_host_rate_checks(model, card, path, buffers, quick))
    if not quick:
        items.extend(_operator_checks(model))
    if _has_method(model, "set_reset") and not derived:
        model.set_reset(True)  # leave the module as loaded
    return items


def _foreign_attribute_checks(model: Any, card: ModelCard, path: Path) -> list[CheckResult]:
    """A file tildekit did not write: nn~'s own rules only (no tildekit attribute semantics)."""
    from tildekit.export.foreign_nn import attribute_values

    items: list[CheckResult] = []
    skipped = list(card.extra.get("skipped_attributes", []))

    def listing() -> str | None:
        if not _has_method(model, "get_attributes"):
            return Note("no get_attributes(): nn~ finds the attributes with *_params buffers")
        return Note(f"not settable from messages: {skipped}") if skipped else None

    _run(items, "get_attributes", listing)
    for spec in card.attributes:
        def setter(spec: Any = spec) -> str | None:
            # As nn~ does it: parse the current value as Pd sends it, then call set_NAME.
            result = nn_set(model, spec.name, list(spec.default))
            if result is not None and (not isinstance(result, int) or isinstance(result, bool) or result != 0):
                return f"set_{spec.name} returned {result!r}; nn~ expects the int 0"
            if not _has_method(model, f"get_{spec.name}"):
                return Note(f"no get_{spec.name}(): Max cannot show the value (Pd never asks)")
            got = attribute_values(getattr(model, f"get_{spec.name}")())
            if len(got) != len(spec.types):
                return f"get_{spec.name}() returned {len(got)} values for {len(spec.types)} types"
            return None

        _run(items, f"set_{spec.name} (values as Pd sends them)", setter)

    def sample_rate() -> str | None:
        if not _has_method(model, "set_sample_rate"):
            return Note("no set_sample_rate: nothing for nn~ to call on load or reload")
        fresh = load_like_nn(path)
        # nn~ 1.6: the rate on load, then the uninitialised value on [reload( (docs/contracts.md §1)
        for rate in (card.sample_rate, 48000, -2147483648):
            fresh.set_sample_rate(rate)
        return None

    _run(items, "set_sample_rate never raises (the values nn~ passes on load and on [reload()",
         sample_rate)
    return items


def first_response(method: Any, reset: Callable[[], None], channels: int, in_ratio: int, out_ratio: int,
                   start: int, width: int, length: int, buffer: int) -> int | None:
    """Sample (host rate) of ``method``'s first output that differs between silence and silence
    with a random burst over input samples ``[start, start + width)``; None when none does.

    Streaming is causal: an output sample depends only on the input received so far. A burst
    ``width = compression`` long holds every phase of the latent frame grid, so the first
    response comes as early as the method can respond to anything.
    """
    import torch

    generator = torch.Generator().manual_seed(17)
    frames = length // in_ratio
    silence = torch.zeros(1, channels, frames)
    burst = silence.clone()
    first, span = start // in_ratio, max(1, width // in_ratio)
    burst[..., first:first + span] = torch.rand(1, channels, span, generator=generator) - 0.5
    outputs = []
    for signal in (silence, burst):
        reset()
        outputs.append(_stream(method, signal, buffer, in_ratio))
    differs = torch.nonzero((outputs[0] != outputs[1]).flatten(0, 1).any(0)).flatten()
    return int(differs[0]) * out_ratio if differs.numel() else None


DELAY_WINDOW_SECONDS = 4.0  # a card claiming more is only checked this far


def _delay_bound(model: Any, card: ModelCard, name: str, buffer: int) -> str | None:
    """The card's delay of ``name`` is at least the delay the file shows (a lower bound).

    A streaming method whose card delay is D answers an input no later than D samples after
    it (its whole-signal counterpart looks at most D samples ahead); a first response later
    than D means the card understates the delay, and hosts would misalign the output.
    """
    spec = card.methods[name]
    if TEMPERATURE in {a.name for a in card.attributes}:
        nn_set(model, TEMPERATURE, [0.0])  # deterministic: the two runs differ only by the burst
    start = 4 * buffer
    window = min(spec.delay, int(DELAY_WINDOW_SECONDS * card.sample_rate)) + 16 * card.compression
    length = -(-(start + window) // buffer) * buffer
    onset = first_response(getattr(model, name), lambda: model.set_reset(True), spec.in_channels,
                           spec.in_ratio, spec.out_ratio, start, card.compression, length, buffer)
    if onset is None:
        return (f"the output does not respond to an input burst within {length - start} samples: "
                f"the model ignores its input, or its delay is far beyond the card's {spec.delay}")
    lag = onset - start
    allowed = spec.delay + frame_lag(card)
    if lag > allowed:
        lagging = f" (+ a frame lag of {allowed - spec.delay})" if allowed > spec.delay else ""
        return (f"the output first responds {lag} samples after the input, but the card says the "
                f"delay is {spec.delay}{lagging}: the card understates the delay; re-export the model")
    return None


def frame_lag(card: ModelCard) -> int:
    """Samples a causal frame-wise model hears its input late in every build, whole signal
    included (``extra["frame_lag"]``, at most one frame of the highest ratio: DDSP analyses
    frame k from samples before k * hop). Not a streaming delay: buffers still match one pass."""
    lag = card.extra.get("frame_lag", 0)
    if isinstance(lag, bool) or not isinstance(lag, int):
        return 0
    return max(0, min(lag, card.compression))


def _attribute_checks(model: Any, card: ModelCard, path: Path) -> list[CheckResult]:
    import torch

    items: list[CheckResult] = []

    def listing() -> str | None:
        names = [n for n in model.get_attributes() if n != "none"]
        expected = [a.name for a in card.attributes] + ([HOST_RATE_ATTRIBUTE] if card.host_rates else [])
        if names != expected:
            return f"get_attributes() gives {names} but the card says {expected}"
        return None

    _run(items, "get_attributes", listing)
    for spec in card.attributes:
        def setter(spec: Any = spec) -> str | None:
            codes = getattr(model, f"{spec.name}_params").tolist()
            if codes != spec.type_codes:
                return f"{spec.name}_params is {codes} but the card says {spec.type_codes}"
            result = nn_set(model, spec.name, list(spec.default))
            if not isinstance(result, int) or isinstance(result, bool) or result != 0:
                return f"set_{spec.name} returned {result!r}; nn~ needs the int 0"
            got = list(getattr(model, f"get_{spec.name}")())
            if len(got) != len(spec.types):
                return f"get_{spec.name}() returned {len(got)} values for {len(spec.types)} types"
            return None

        _run(items, f"set_{spec.name} (values as Pd sends them)", setter)

    names = {a.name for a in card.attributes}
    forward = card.methods.get("forward")
    if {TEMPERATURE, RESET} <= names and "encode" in card.methods:
        def temperature() -> str | None:
            x = _method_input(card, "encode", 1, 4 * card.compression * 4, seed=3)
            runs = []
            for value in (0.0, 0.0, 1.0):
                nn_set(model, TEMPERATURE, [value])
                nn_set(model, RESET, [True])
                with torch.inference_mode():
                    runs.append(model.encode(x))
            nn_set(model, TEMPERATURE, [0.0])
            if not torch.equal(runs[0], runs[1]):
                return "temperature 0 is not deterministic: two encodes of one signal differ"
            if torch.equal(runs[0], runs[2]):
                return "temperature 1 gives the same latents as 0: the setter has no effect"
            return None

        _run(items, "temperature (0 deterministic, 1 adds noise)", temperature)
    if {LATENT_BIAS, RESET} <= names and forward is not None:
        def bias() -> str | None:
            spec = card.attribute(LATENT_BIAS)
            x = _method_input(card, "forward", 1, 8 * card.compression, seed=4)
            outs = []
            for first in (0.0, 1.0):
                nn_set(model, LATENT_BIAS, [first] + list(spec.default[1:]))
                nn_set(model, RESET, [True])
                with torch.inference_mode():
                    outs.append(model.forward(x))
            nn_set(model, LATENT_BIAS, list(spec.default))
            if torch.equal(outs[0], outs[1]):
                return "latent_bias on dimension 0 does not change forward's output"
            return None

        _run(items, "latent_bias changes forward", bias)
    if RESET in names and forward is not None:
        def reset() -> str | None:
            x = _method_input(card, "forward", 1, 4 * card.compression, seed=5)
            fresh = load_like_nn(path)
            with torch.inference_mode():
                expected = fresh.forward(x)
                model.forward(x)  # leave state behind
            nn_set(model, RESET, [True])
            with torch.inference_mode():
                got = model.forward(x)
            if not torch.equal(expected, got):
                return "after set_reset true the output differs from a freshly loaded file"
            return None

        _run(items, "reset true restores the initial state", reset)

    def sample_rate() -> str | None:
        # set_sample_rate accepts any value (nn~ passes garbage on reload), so the rate the file
        # itself was built for is what can contradict the card
        own = getattr(model, "sample_rate", None)
        if isinstance(own, int) and own != card.sample_rate:
            return f"the file runs at {own} Hz but its card says {card.sample_rate} Hz: re-export the model"
        if not _has_method(model, "set_sample_rate"):
            return None
        result = model.set_sample_rate(card.sample_rate)
        return None if result == 0 else f"set_sample_rate({card.sample_rate}) returned {result!r}"

    _run(items, "set_sample_rate (model rate)", sample_rate)
    return items


# What nn~ 1.6 passes to set_sample_rate on [reload( (uninitialised), and other non-rates.
NOT_RATES = (-2147483648, -1, 0, 2147483647)


def _host_rate_checks(model: Any, card: ModelCard, path: Path, buffers: list[int],
                      quick: bool = False) -> list[CheckResult]:
    """set_sample_rate as nn~ 1.6 calls it, and (unless ``quick``) every method at every host rate."""
    import torch

    items: list[CheckResult] = []
    if not card.host_rates:
        return items

    def reload_sequence() -> str | None:
        # [reload(: a fresh load, then set_sample_rate(<uninitialised>); an exception aborts Pd
        fresh = load_like_nn(path)
        x = _method_input(card, "forward", 1, buffers[0], seed=6)
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            expected = fresh.forward(x)
            for value in NOT_RATES:
                result = fresh.set_sample_rate(value)
                if result != 0:
                    return f"set_sample_rate({value}) returned {result!r}; nn~ needs 0"
                fresh.set_reset(True)
                if not torch.equal(fresh.forward(x), expected):
                    return f"after set_sample_rate({value}) the model no longer plays at {card.sample_rate} Hz"
        return None

    _run(items, "set_sample_rate never raises (nn~ [reload( passes -2147483648)", reload_sequence)
    if quick:
        return items
    small, large = buffers[0], min(buffers[-1], max(4096, buffers[0]))
    for host in card.host_rates:
        def at_rate(host: HostRate = host) -> str | None:
            rate = host.rate
            result = nn_set(model, HOST_RATE_ATTRIBUTE, [rate])
            if result != 0:
                return f"set_{HOST_RATE_ATTRIBUTE} {rate} returned {result!r}; nn~ needs 0"
            for name, spec in card.methods.items():
                method = getattr(model, name)
                x = _method_input(card, name, 2, 2 * large, seed=8)
                model.set_reset(True)
                a = _stream(method, x, small, spec.in_ratio)
                model.set_reset(True)
                b = _stream(method, x, large, spec.in_ratio)
                want = (2, spec.out_channels, 2 * large // spec.out_ratio)
                if tuple(a.shape) != want or tuple(b.shape) != want:
                    return f"{name}: returned {tuple(a.shape)} / {tuple(b.shape)}, nn~ needs {want}"
                # each buffer size has its own delay (the card's buffer_delays): align by them
                lead = round((host.delay(name, small) - host.delay(name, large)) / spec.out_ratio)
                if not abs(lead) < a.shape[-1] // 2:
                    return (f"{name}: the card's delays for buffers of {small} and {large} at {rate} Hz "
                            f"({host.delay(name, small)}, {host.delay(name, large)}) are not plausible")
                if lead < 0:
                    a, b = b, a
                a, b = a[..., abs(lead):], b[..., : b.shape[-1] - abs(lead)]
                error = float((a - b).abs().max())
                if not error <= _stream_limit(b):
                    return f"{name}: buffers of {small} and {large} differ by {error:.3g} at {rate} Hz"
            return None

        _run(items, f"{HOST_RATE_ATTRIBUTE} {host.rate}: every method, buffers {small} and {large}", at_rate)
    nn_set(model, HOST_RATE_ATTRIBUTE, [card.sample_rate])  # leave the module at the model's rate
    return items


def _operator_checks(model: Any, hosts: list[str] | None = None) -> list[CheckResult]:
    from tildekit.export.ops import HOSTS, check_operators

    hosts = hosts or list(HOSTS)
    try:
        offenders = check_operators(model, hosts)  # one graph walk for every host
    except Exception as exc:
        return [CheckResult("operators exist in host libtorch", False, " ".join(str(exc).split())[:300])]
    return [CheckResult(f"operators exist in {host}",
                        not any(o.host == host for o in offenders),
                        "; ".join(o.message() for o in offenders if o.host == host))
            for host in hosts]


# ------------------------------------------------------------------------------- Neutone, ONNX


def check_neutone(path: Path, quick: bool = False) -> list[CheckResult]:
    from tildekit.export.neutone_check import check_neutone_file
    from tildekit.export.neutone_contract import neutone_structure_checks
    from tildekit.export.ops import HOSTS

    card = read_card(path)
    source = (f", converted from {card.extra['converted_from']}" if "converted_from" in card.extra else "")
    items: list[CheckResult] = [CheckResult("model card", True,
                                            f"{card.name}, tildekit {card.tildekit_version}{source}")]
    model = load_like_nn(path)

    def host_sequence() -> str | None:
        check_neutone_file(path, quick)
        return None

    _run(items, "Neutone host call sequence (load, metadata, set rate/buffer, forward, offline)",
         host_sequence)
    items.extend(neutone_structure_checks(model))
    if not quick:
        neutone_hosts = [h for h in HOSTS if h.lower().startswith("neutone")]
        items.extend(_operator_checks(model, neutone_hosts))
    return items


def check_onnx_file(path: Path, quick: bool = False) -> list[CheckResult]:
    from tildekit.export.onnx_check import check_onnx

    read_card(path)
    try:
        return check_onnx(path, quick=quick)
    except TildekitError as exc:
        return [CheckResult("ONNX Runtime streaming contract", False, str(exc))]

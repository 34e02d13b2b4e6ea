"""Commands of tildekit.export (registered by tildekit.cli): export, check, bench, eval.

Heavy imports (torch, onnx) happen inside the commands, so ``tildekit --help`` stays fast.
``describe_file`` is the file half of ``tildekit info``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from tildekit.models.contract.card import DEFAULT_FAMILY
from tildekit.models.contract.hosts import DEFAULT_BUFFER

COMMANDS: list[click.Command] = []

TARGETS = ("nn", "neutone", "onnx", "all")


def describe_file(path: str | Path) -> str:
    """A readable summary of an exported file's model card (no torch, no run dir needed).

    An nn~ ``.ts`` without a tildekit card (RAVE's exports and others) is described from its
    own methods, buffers and attributes, its delays measured with an impulse (loads torch).
    """
    from tildekit.export.card_io import model_card
    from tildekit.models.contract.card import FOREIGN_NOTE, is_derived

    path = Path(path)
    card = model_card(path)
    if is_derived(card):
        return _describe_derived(path, card, FOREIGN_NOTE)
    lines = [
        f"{path.name}: model {card.name!r}",
        (f"  sample rate {card.sample_rate} Hz, {card.channels} channel(s), compression {card.compression} "
         f"samples per latent frame, {card.latent_size} latent dims"
         + (f" (of {card.extra['full_latent_size']})" if "full_latent_size" in card.extra else "")
         if card.family == DEFAULT_FAMILY else
         f"  {card.family} model: sample rate {card.sample_rate} Hz, {card.channels} channel(s), "
         f"frames of {card.compression} samples"),
        f"  delay {card.delay} samples ({card.delay_ms:.1f} ms) for forward, model only (host buffering extra)",
        f"  profile {card.profile or '?'}, step {card.step}, torch {card.torch_version or '?'}, "
        f"tildekit {card.tildekit_version or '?'}",
        "  methods  [in_channels, in_ratio, out_channels, out_ratio]  delay",
    ]
    for name, spec in card.methods.items():
        lines.append(f"    {name:<8} {str(spec.params):<24} {spec.delay} samples")
    if card.attributes:
        lines.append("  attributes  (nn~: [set NAME values...( )")
        for attr in card.attributes:
            default = attr.default if len(attr.default) <= 4 else f"{attr.default[:3]}... ({len(attr.default)} values)"
            types = attr.types[0] if len(set(attr.types)) == 1 else ",".join(attr.types)
            count = f" x{len(attr.types)}" if len(attr.types) > 1 else ""
            lines.append(f"    {attr.name:<13} {types}{count}, default {default}"
                         + (f" - {attr.description}" if attr.description else ""))
    if card.latents:
        lines.append("  latents  (mean, std, range, share of variance)")
        for i, dim in enumerate(card.latents):
            lines.append(f"    {i:>3}  {dim.mean:+.3f}  {dim.std:.3f}  [{dim.minimum:+.3f}, {dim.maximum:+.3f}]  "
                         f"{100 * dim.variance_ratio:.1f} %")
    return "\n".join(lines)


def _describe_derived(path: Path, card, note: str) -> str:
    extra = card.extra
    lines = [
        f"{path.name}: {note}",
        f"  sample rate {card.sample_rate} Hz ({extra.get('sample_rate_source', '?')}), "
        f"{card.channels} audio channel(s)"
        + (f", {card.latent_size} latent dims, compression {card.compression}" if card.latent_size else ""),
        f"  delay {card.delay} samples ({card.delay_ms:.1f} ms) for "
        f"{'forward' if 'forward' in card.methods else 'encode -> decode'}, model only "
        f"(host buffering extra); measured: {extra.get('delay_source', 'not measured')}"
        + ("; stochastic (random draws)" if extra.get("stochastic") else ""),
        "  methods  [in_channels, in_ratio, out_channels, out_ratio]  delay (impulse peak)",
    ]
    for name, spec in card.methods.items():
        lines.append(f"    {name:<8} {str(spec.params):<24} {spec.delay} samples")
        lines.append(f"             in: {_short_labels(spec.input_labels)}  out: {_short_labels(spec.output_labels)}")
    if card.attributes:
        lines.append("  attributes  (nn~: [set NAME values...( )")
        for attr in card.attributes:
            lines.append(f"    {attr.name:<13} {', '.join(attr.types)}, now {attr.default}"
                         + (" (no getter: value unknown)" if "value unknown" in attr.description else ""))
    if extra.get("skipped_attributes"):
        lines.append(f"  not settable from messages: {', '.join(extra['skipped_attributes'])}")
    return "\n".join(lines)


def _short_labels(labels: list[str], keep: int = 3) -> str:
    shown = ", ".join(labels[:keep])
    return shown + (f", ... ({len(labels)})" if len(labels) > keep else "")


@click.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--target", type=click.Choice(TARGETS), default="nn", show_default=True,
              help="nn: nn~ TorchScript (.ts); neutone: Neutone FX (.nm); onnx: ONNX graphs with "
                   "explicit state; all: every target that takes the run's model family.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="Folder to write the files into (created if missing).")
@click.option("--name", default=None, help="File name stem and model name. [default: the run dir's name]")
@click.option("--latent-dims", type=int, default=None, metavar="K",
              help="Keep only the K most important latent dimensions (by the run's latent statistics).")
@click.option("--fidelity", type=float, default=None, metavar="F",
              help="Keep the fewest latent dimensions explaining at least this share of the variance (0..1].")
@click.option("--buffer", type=int, default=DEFAULT_BUFFER, show_default=True, metavar="B",
              help="ONNX only: the graphs' fixed buffer size in samples (a multiple of the "
                   "compression); the headless engine runs the model at this buffer.")
@click.option("--quick", is_flag=True,
              help="Structural checks only (load, methods, attributes, card, a short stream): "
                   "no sweep of buffer sizes and host rates, no operator tables.")
def export_command(run_dir: Path, target: str, out_dir: Path, name: str | None,
                   latent_dims: int | None, fidelity: float | None, buffer: int, quick: bool) -> None:
    """Export the newest checkpoint of RUN_DIR for nn~, Neutone FX and/or ONNX.

    Autoencoder, DDSP and effect runs export to every target.

    Every file is loaded back the way its host loads it and checked (`tildekit check`)
    before it is moved into place; a failing export writes nothing.
    """
    from tildekit.export.targets import export_run

    def announce(path: Path) -> None:
        click.echo(f"wrote {path} (checked)")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        card, _ = export_run(run_dir, (target,), out_dir, name=name, latent_dims=latent_dims,
                             fidelity=fidelity, on_written=announce, buffer=buffer, quick=quick)
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            click.echo(f"Warning: {warning.message}", err=True)
    if card.family == "autoencoder":
        click.echo(f"{card.name}: {card.latent_size} latent dims"
                   f" ({100 * card.extra.get('kept_variance', 1.0):.1f} % of the latent variance), "
                   f"delay {card.delay} samples ({card.delay_ms:.1f} ms)")
    else:
        click.echo(f"{card.name}: {card.family} model, methods {', '.join(card.methods)}, "
                   f"delay {card.delay} samples ({card.delay_ms:.1f} ms)")


@click.command("check")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--quick", is_flag=True,
              help="Structural checks only (load, methods, attributes, card, a short stream): "
                   "no sweep of buffer sizes and host rates, no operator tables.")
def check_command(file: Path, quick: bool) -> None:
    """Load FILE (.ts, .nm or .onnx) the way its host does and check every contract item.

    Prints PASS/FAIL per item; exits 1 when any item fails, 2 when FILE is not a usable export.
    """
    from tildekit.export.check import check_file
    from tildekit.export.check_result import format_results

    results = check_file(file, quick=quick)
    click.echo(format_results(results))
    failed = sum(not r.passed for r in results)
    click.echo(f"{len(results) - failed}/{len(results)} passed" + (f", {failed} FAILED" if failed else ""))
    if failed:
        sys.exit(1)


def _parse_buffers(text: str | None) -> list[int] | None:
    from tildekit.errors import TildekitError

    if not text:
        return None
    try:
        return [int(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise TildekitError(f"--buffers {text!r} must be buffer sizes like 512,2048") from None


@click.command("bench")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--buffers", default=None, metavar="B1,B2,...",
              help="Buffer sizes to time. [default: every nn~ buffer for .ts/.onnx, "
                   "Neutone DAW buffers 128..2048 for .nm]")
@click.option("--seconds", type=click.FloatRange(min=0.01), default=0.3, show_default=True,
              help="Minimum timing per buffer size and target.")
def bench_command(file: Path, buffers: str | None, seconds: float) -> None:
    """Time FILE per buffer size on one thread (x-real-time) and report the delay a listener hears."""
    from tildekit.export.bench import bench_file

    click.echo(bench_file(file, _parse_buffers(buffers), min_seconds=seconds).table())


@click.command("convert")
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--target", type=click.Choice(["neutone"]), default="neutone", show_default=True,
              help="neutone: a Neutone FX .nm around the model's forward.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Folder to write MODEL.nm into (created if missing).")
@click.option("--sample-rate", type=int, default=None, metavar="HZ",
              help="The rate the model was trained at, when the file does not say it.")
@click.option("--name", default=None, help="File name stem and Neutone model name. [default: MODEL's stem]")
def convert_command(model: Path, target: str, out_dir: Path, sample_rate: int | None, name: str | None) -> None:
    """Wrap an nn~ TorchScript MODEL that tildekit did not write (e.g. a RAVE export) for Neutone FX.

    The audio goes through the model's forward. Knobs: its first 4 latent dimensions as offsets
    when it has encode/decode (and decode(encode(x)) is its forward), else its float attributes.
    The delay is measured with an impulse and written in the metadata; the file is checked the
    way the plugin loads it (`tildekit check`) before it is moved into place.
    """
    from tildekit.export.neutone_foreign import convert_to_neutone
    from tildekit.models.contract.card import FOREIGN_NOTE

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script's notice
        done = convert_to_neutone(model, out_dir, sample_rate=sample_rate, name=name)
    click.echo(f"{model.name}: {FOREIGN_NOTE}", err=True)
    knobs = ", ".join(k.name for k in done.knobs) or "none"
    click.echo(f"wrote {done.path} (checked): {done.card.sample_rate} Hz, knobs ({done.knob_mode}): {knobs}; "
               f"delay {done.delay} samples ({1000 * done.delay / done.card.sample_rate:.1f} ms, impulse)")
    if done.note:
        click.echo(f"Note: {done.note}", err=True)




@click.command("eval")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("audio", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Report folder (replaced only when it holds an earlier eval report). [default: "
                   "RUN-eval beside a run dir, NAME-ts-eval / NAME-onnx-eval beside an export]")
@click.option("--transfer", is_flag=True,
              help="The input is out of domain (a model trained on one kind of sound played with "
                   "another): report loudness and pitch following only, no reconstruction distances.")
@click.option("--buffer", type=int, default=DEFAULT_BUFFER, show_default=True, metavar="B",
              help="Host buffer size in samples (a multiple of the model's compression).")
def eval_command(model: Path, audio: tuple[Path, ...], out_dir: Path | None, transfer: bool, buffer: int) -> None:
    """Play AUDIO (files or folders) through MODEL and measure how well the output follows the input.

    MODEL is a run dir (its newest checkpoint, built for streaming as `export` builds it) or an
    exported .ts (TorchScript, as nn~ runs it) or .onnx (ONNX Runtime). Each file is read as
    `preprocess` reads it (mixed or duplicated to the model's channels, resampled to its rate),
    played in buffers of B samples from a reset state, and the output is aligned by the model's
    delay. Reported per file and as the mean over files, for the model and for two references
    that give the numbers a scale (the input low-passed at 4 kHz; silence):

    \b
    multi-scale log-STFT L1  mean |ln|Y| - ln|X|| over FFT sizes 2048..128 (hop n/4,
                             magnitudes floored at -100 dB); 0 = identical spectra
    log-mel dB               mean |difference| of 80-band log-mel power spectrograms
    loudness corr            Pearson correlation of 20 ms frame RMS in dB (floor -80 dB)
                             over frames where either signal is above the floor
    loudness err dB          mean |difference| of those dB envelopes
    f0 cents                 pitched input only (pyin): mean |pitch difference| in cents over
                             frames voiced in both; 1200 = an octave off
    voicing                  pitched input only: share of active frames where pyin's voiced
                             decision on the output matches the input's

    Writes report.md, report.json, a spectrogram PNG (input vs output) and 4 s wav excerpts of
    input and output per file into the report folder.
    """
    from tildekit.export.evaluate import default_out_dir, evaluate

    out = out_dir if out_dir is not None else default_out_dir(model)
    report = evaluate(model, list(audio), out, transfer=transfer, buffer=buffer, progress=True)
    click.echo(report.text())
    click.echo(f"report: {out / 'report.md'} (spectrograms, excerpts and report.json beside it)")


@click.command("info")
@click.argument("path", type=click.Path(path_type=Path))
def info_command(path: Path) -> None:
    """Describe a training run dir, or an exported model file (.ts, .nm, .onnx).

    For a run: profile, step, losses, sample rate, latent size, compression, receptive field,
    streaming delay and parameter count. For a file: its embedded model card (no training code
    or checkpoint needed).
    """
    if path.is_file():
        click.echo(describe_file(path))
        return
    from tildekit.models.cli import describe_run
    from tildekit.models.run import RunDir

    click.echo(describe_run(RunDir(path)))


COMMANDS.extend([export_command, check_command, bench_command, convert_command, eval_command, info_command])

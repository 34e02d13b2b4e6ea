"""Commands of tildekit.scripting (registered by tildekit.cli).

Modules that pull in numpy, torch or python-osc are imported inside the commands, so
`tildekit --help` stays fast.
"""

from __future__ import annotations

import sys

import click

from tildekit.errors import TildekitError
from tildekit.models.contract.hosts import DEFAULT_BUFFER, DEFAULT_OSC_HOST, DEFAULT_OSC_PORT

COMMANDS: list[click.Command] = []

_host = click.option("--host", default=DEFAULT_OSC_HOST, show_default=True, help="Where to send OSC messages.")
_port = click.option("--port", "-p", type=click.IntRange(1, 65535), default=DEFAULT_OSC_PORT, show_default=True,
                     help="UDP port of the receiver (patch or engine).")


@click.group("osc")
def osc() -> None:
    """Drive a model live over OSC: play scores, send one message, watch what arrives.

    \b
    tildekit osc play score.yaml --port 9000
    tildekit osc send /tildekit/NAME/latent/0 0.5
    tildekit osc monitor --port 9000
    """


@osc.command("play")
@click.argument("score", type=click.Path(dir_okay=False))
@_host
@_port
@click.option("--model", "-m", type=click.Path(dir_okay=False),
              help="Exported model to check the score against (overrides the score's 'model:').")
@click.option("--dry-run", is_flag=True, help="Check the score and print its messages; send nothing.")
def play(score: str, host: str, port: int, model: str | None, dry_run: bool) -> None:
    """Perform a YAML SCORE: timed sets, ramps, LFOs, attribute changes and interpolations."""
    from tildekit.scripting.controller import Controller
    from tildekit.scripting.score import compile_score, format_message, load_score

    parsed = load_score(score, model=model)
    messages = compile_score(parsed)
    if dry_run:
        for message in messages:
            click.echo(format_message(message))
        click.echo(f"{len(messages)} messages over {parsed.duration:.3f} s to {parsed.osc_map.prefix}",
                   err=True)
        return
    from tildekit.scripting.schedule import Scheduler

    scheduler = Scheduler()
    with Controller(host, port, card=parsed.card, name=parsed.name) as controller:
        click.echo(f"playing {score}: {len(messages)} messages over {parsed.duration:.3f} s "
                   f"to {host}:{port}{parsed.osc_map.prefix} (Ctrl-C stops)", err=True)
        try:
            report = controller.play(messages, scheduler)
        except KeyboardInterrupt:
            click.echo("stopped", err=True)
            sys.exit(130)
    click.echo(report.summary(), err=True)


def _guess_arg(text: str) -> object:
    """Command-line word -> OSC argument: true/false, numbers as floats, anything else a string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return float(text)
    except ValueError:
        return text


@osc.command("send", context_settings={"ignore_unknown_options": True})  # lets "-0.5" be a value
@click.argument("address")
@click.argument("args", nargs=-1)
@_host
@_port
@click.option("--model", "-m", type=click.Path(dir_okay=False),
              help="Check the message against this exported model (ADDRESS may then be relative: latent/0).")
def send(address: str, args: tuple[str, ...], host: str, port: int, model: str | None) -> None:
    """Send one OSC message: ADDRESS followed by its arguments.

    Numbers are sent as floats, true/false as OSC booleans, other words as strings.
    With --model the message is checked (and typed) by the model's address space first.
    """
    values = [_guess_arg(a) for a in args]
    if model is not None:
        from tildekit.scripting.controller import Controller

        with Controller.for_model(model, host, port) as controller:
            checked_address, checked_args = controller.validate(address, values)
            controller.send_checked(checked_address, checked_args)
        address, values = checked_address, list(checked_args)
    else:
        if not address.startswith("/"):
            raise TildekitError(f"OSC address {address!r} must start with '/' "
                                f"(or pass --model to use model-relative addresses like latent/0)")
        from tildekit.scripting.controller import udp_client

        client = udp_client(host, port)
        try:
            client.send_message(address, values)
        except OSError as exc:
            raise TildekitError(f"cannot send OSC to {host}:{port}: {exc.strerror or exc}") from None
        finally:
            client.close()
    click.echo(f"sent {address} {' '.join(str(v) for v in values)}".rstrip() + f" to {host}:{port}")


_osc_host = click.option(
    "--osc-host", "--host", "osc_host", default=DEFAULT_OSC_HOST, show_default=True, metavar="ADDRESS",
    help="Interface to listen on: 127.0.0.1 is this machine only; 0.0.0.0 (IPv4) or :: (IPv6 and "
         "IPv4) every interface, or one interface's address. Pair it with --osc-allow.")
_osc_allow = click.option(
    "--osc-allow", "--allow", "osc_allow", multiple=True, metavar="ADDRESS_OR_NETWORK",
    help="Accept OSC only from these senders: addresses, networks (192.168.1.0/24, fd00::/8) or "
         "host names; repeatable or comma-separated. Others are dropped and counted.")


def _allow_list(entries: tuple[str, ...]):  # -> AllowList | None
    from tildekit.scripting.netaccess import AllowList

    return AllowList.parse(entries)


def _warn_if_exposed(host: str, allow) -> None:
    from tildekit.scripting.netaccess import exposure_warning

    warning = exposure_warning(host, allow)
    if warning:
        click.echo(f"Warning: {warning}", err=True)


@osc.command("monitor")
@_osc_host
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=DEFAULT_OSC_PORT, show_default=True,
              help="UDP port to listen on (0 picks a free one and prints it).")
@_osc_allow
@click.option("--count", "-n", type=click.IntRange(min=1), help="Stop after this many messages.")
@click.option("--seconds", "-s", type=click.FloatRange(min=0, min_open=True, max=1e7),
              help="Stop after this long.")
@click.option("--model", "-m", type=click.Path(dir_okay=False),
              help="Flag messages this exported model would reject.")
def monitor(osc_host: str, port: int, osc_allow: tuple[str, ...], count: int | None, seconds: float | None,
            model: str | None) -> None:
    """Print every OSC message that arrives, with its arrival time."""
    from tildekit.scripting.monitor import Monitor

    osc_map = None
    if model is not None:
        from tildekit.models.contract.oscmap import OscMap
        from tildekit.scripting.controller import read_model_card

        osc_map = OscMap(read_model_card(model))
    allow = _allow_list(osc_allow)

    def show(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()  # a pipe reader (another program, a test) sees each line at once

    with Monitor(osc_host, port, on_message=show, osc_map=osc_map, allow=allow) as server:
        _warn_if_exposed(osc_host, allow)
        bound_host, bound_port = server.address
        click.echo(f"listening on {_host_port(bound_host, bound_port)}"
                   + (f" (accepting {allow})" if allow is not None else ""), err=True)
        sys.stderr.flush()
        try:
            received = server.run(count=count, seconds=seconds)
        except KeyboardInterrupt:
            return
        dropped = "".join([f", {server.rejected} packet(s) from senders not allowed" if server.rejected else "",
                           f", {server.malformed} malformed packet(s)" if server.malformed else ""])
    click.echo(f"{len(received)} message(s){dropped}", err=True)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


COMMANDS.append(osc)


# -- headless engine and Raspberry Pi bundle (tildekit serve / tildekit bundle) --------------

@click.command("serve")
@click.argument("model", type=click.Path())
@click.option("--input", "-i", "input_path", type=click.Path(), help="Sound file to process (file mode).")
@click.option("--device", "use_device", is_flag=True, help="Process the sound card input live.")
@click.option("--silence", type=click.FloatRange(min=0, min_open=True, max=86400), metavar="SECONDS",
              help="No input: generate from the latents set over OSC, or play the notes sent to "
                   "/note for a DDSP model (with --output: this long; without: live on the sound card).")
@click.option("--output", "-o", "output_path", type=click.Path(),
              help="Sound file to write: .wav, .flac, .ogg, .aiff, .caf or .w64 (default: the sound card).")
@click.option("--osc-port", type=click.IntRange(0, 65535), default=DEFAULT_OSC_PORT, show_default=True,
              help="UDP port for OSC control (0 picks a free one and prints it).")
@_osc_host
@_osc_allow
@click.option("--ceiling-db", type=float, default=-1.0, show_default=True, metavar="DBFS",
              help="Peak ceiling of the output, -40..0 dBFS: the limiter never lets a sample above it.")
@click.option("--buffer", type=click.IntRange(min=1, max=1 << 20), default=DEFAULT_BUFFER, show_default=True,
              help="Samples per buffer (a multiple of the model's compression).")
@click.option("--threads", type=click.IntRange(min=1, max=256), default=1, show_default=True,
              help="Compute threads for the model.")
@click.option("--rate", type=click.IntRange(min=1), default=None, metavar="HZ",
              help="Sound card rate (default: the model's); the model is resampled to and from it. "
                   "Input files always play at their own rate.")
@click.option("--realtime", is_flag=True, help="In file mode, pace buffers at real time (for live OSC tests).")
@click.option("--verbose", "-v", is_flag=True, help="Print statistics every few seconds.")
def serve(model: str, input_path: str | None, use_device: bool, silence: float | None, output_path: str | None,
          osc_port: int, osc_host: str, osc_allow: tuple[str, ...], ceiling_db: float, buffer: int, threads: int,
          rate: int | None,
          realtime: bool, verbose: bool) -> None:
    """Run an exported MODEL (.ts or .onnx) headless, controlled live over OSC.

    \b
    tildekit serve model.ts --input in.wav --output out.wav     # file to file
    tildekit serve model.ts --device                            # sound card in and out
    tildekit serve model.onnx --silence 30 --output gen.wav     # latent-only generation
    tildekit serve model.ts --device --osc-host 0.0.0.0 --osc-allow 192.168.1.20

    OSC listens on 127.0.0.1 (this machine) unless --osc-host names another address. The output
    goes through a safety stage: non-finite audio becomes silence (and the model is reset), and
    peaks are held under --ceiling-db.
    """
    import contextlib
    import logging

    from tildekit.scripting.audio_files import AtomicOutput, read_audio
    from tildekit.scripting.engine import Engine
    from tildekit.scripting.runner import open_runner
    from tildekit.scripting.safety import check_ceiling

    sources = [input_path is not None, use_device, silence is not None]
    if sum(sources) != 1:
        raise TildekitError("pick one input: --input FILE, --device or --silence SECONDS")
    if use_device and output_path is not None:
        raise TildekitError("--device plays to the sound card: drop --output, or use --input FILE --output FILE")
    if input_path is not None and output_path is None:
        raise TildekitError("--input needs --output FILE (file mode); for live sound use --device")
    from pathlib import Path

    if input_path is not None and not Path(input_path).is_file():
        what = "is a folder, not a sound file" if Path(input_path).is_dir() else "no such file"
        raise TildekitError(f"--input {input_path}: {what}")
    if not Path(model).is_file():
        what = "is a folder" if Path(model).is_dir() else "no such file"
        raise TildekitError(f"model {model}: {what}: pass an exported .ts or .onnx file")
    check_ceiling(ceiling_db)
    allow = _allow_list(osc_allow)
    if output_path is None:
        from tildekit.scripting.engine import import_sounddevice

        import_sounddevice()  # fail before loading the model when the audio extra is missing
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)
    from tildekit.models.contract.card import FOREIGN_NOTE, is_derived

    # Everything that can be checked is checked before the model computes a single buffer: the
    # output is reserved (a temporary file in its folder), the model loaded, the input read.
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(AtomicOutput(output_path)) if output_path is not None else None
        runner = open_runner(model, threads=threads)
        stack.callback(runner.close)
        if is_derived(runner.card):
            click.echo(f"{Path(model).name}: {FOREIGN_NOTE}", err=True)
        # an input file is the host: it plays at its own rate, resampled to the model's if needed
        audio, file_rate = read_audio(input_path, runner.card.channels) \
            if input_path is not None else (None, None)
        engine = stack.enter_context(Engine(runner, osc_host, osc_port, allow=allow, buffer=buffer,
                                            realtime=realtime, verbose=verbose, ceiling_db=ceiling_db,
                                            host_rate=file_rate or rate))
        _warn_if_exposed(osc_host, allow)
        bound_host, bound_port = engine.osc_address
        click.echo(f"{runner.card.name} ({runner.runtime}, buffer {buffer}, {runner.card.sample_rate} Hz): "
                   f"OSC on {_host_port(bound_host, bound_port)}{engine.map.prefix}/..."
                   + (f" from {allow} only" if allow is not None else ""), err=True)
        sys.stderr.flush()
        try:
            if output is not None:
                if audio is not None:
                    result = engine.run_array(audio)
                else:
                    result = engine.run_array(None, int(round(float(silence or 0.0) * engine.host_rate)))
                written = output.commit(result, engine.host_rate)
                resampled = (f", resampled from {engine.host_rate} Hz, delay {engine.delay:.0f} samples"
                             if engine.stage is not None else "")
                click.echo(f"wrote {written}{resampled}", err=True)
            else:
                engine.run_device(input_device=use_device)
        except KeyboardInterrupt:
            click.echo("stopped", err=True)
        click.echo(engine.summary(), err=True)


COMMANDS.append(serve)

"""Commands of tildekit.scripting (registered by tildekit.cli).

Modules that pull in numpy, torch or python-osc are imported inside the commands, so
`tildekit --help` stays fast.
"""

from __future__ import annotations

import sys

import click

from tildekit.errors import TildekitError

COMMANDS: list[click.Command] = []

_host = click.option("--host", default="127.0.0.1", show_default=True, help="Where to send OSC messages.")
_port = click.option("--port", "-p", type=click.IntRange(1, 65535), default=9000, show_default=True,
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


@osc.command("monitor")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (0.0.0.0 for the whole network).")
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=9000, show_default=True,
              help="UDP port to listen on (0 picks a free one and prints it).")
@click.option("--count", "-n", type=click.IntRange(min=1), help="Stop after this many messages.")
@click.option("--seconds", "-s", type=click.FloatRange(min=0, min_open=True), help="Stop after this long.")
@click.option("--model", "-m", type=click.Path(dir_okay=False),
              help="Flag messages this exported model would reject.")
def monitor(host: str, port: int, count: int | None, seconds: float | None, model: str | None) -> None:
    """Print every OSC message that arrives, with its arrival time."""
    from tildekit.scripting.monitor import Monitor

    osc_map = None
    if model is not None:
        from tildekit.scripting.controller import read_model_card
        from tildekit.scripting.oscmap import OscMap

        osc_map = OscMap(read_model_card(model))

    def show(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()  # a pipe reader (another program, a test) sees each line at once

    with Monitor(host, port, on_message=show, osc_map=osc_map) as server:
        bound_host, bound_port = server.address
        click.echo(f"listening on {bound_host}:{bound_port}", err=True)
        sys.stderr.flush()
        try:
            received = server.run(count=count, seconds=seconds)
        except KeyboardInterrupt:
            return
    click.echo(f"{len(received)} message(s)", err=True)


COMMANDS.append(osc)


# -- headless engine and Raspberry Pi bundle (tildekit serve / tildekit bundle) --------------

@click.command("serve")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "-i", "input_path", type=click.Path(dir_okay=False),
              help="Sound file to process (file mode).")
@click.option("--device", "use_device", is_flag=True, help="Process the sound card input live.")
@click.option("--silence", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="No input: generate from the latents set over OSC (with --output: this long; "
                   "without: live on the sound card).")
@click.option("--output", "-o", "output_path", type=click.Path(dir_okay=False),
              help="Sound file to write (default: the sound card).")
@click.option("--osc-port", type=click.IntRange(0, 65535), default=9000, show_default=True,
              help="UDP port for OSC control (0 picks a free one and prints it).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface for OSC (0.0.0.0 accepts the network).")
@click.option("--allow", multiple=True, metavar="IP", help="Accept OSC only from this sender (repeatable).")
@click.option("--buffer", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Samples per buffer (a multiple of the model's compression).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Compute threads for the model.")
@click.option("--rate", type=click.IntRange(min=1), default=None, metavar="HZ",
              help="Sound card rate (default: the model's); the model is resampled to and from it. "
                   "Input files always play at their own rate.")
@click.option("--realtime", is_flag=True, help="In file mode, pace buffers at real time (for live OSC tests).")
@click.option("--verbose", "-v", is_flag=True, help="Print statistics every few seconds.")
def serve(model: str, input_path: str | None, use_device: bool, silence: float | None, output_path: str | None,
          osc_port: int, host: str, allow: tuple[str, ...], buffer: int, threads: int, rate: int | None,
          realtime: bool, verbose: bool) -> None:
    """Run an exported MODEL (.ts or .onnx) headless, controlled live over OSC.

    \b
    tildekit serve model.ts --input in.wav --output out.wav     # file to file
    tildekit serve model.ts --device                            # sound card in and out
    tildekit serve model.onnx --silence 30 --output gen.wav     # latent-only generation
    tildekit serve model.ts --device --host 0.0.0.0 --allow 192.168.1.20
    """
    import logging

    from tildekit.scripting.engine import Engine
    from tildekit.scripting.runner import open_runner

    sources = [input_path is not None, use_device, silence is not None]
    if sum(sources) != 1:
        raise TildekitError("pick one input: --input FILE, --device or --silence SECONDS")
    if use_device and output_path is not None:
        raise TildekitError("--device plays to the sound card: drop --output, or use --input FILE --output FILE")
    if input_path is not None and output_path is None:
        raise TildekitError("--input needs --output FILE (file mode); for live sound use --device")
    from pathlib import Path

    if input_path is not None and not Path(input_path).is_file():
        raise TildekitError(f"--input {input_path}: no such file")
    if output_path is None:
        from tildekit.scripting.engine import import_sounddevice

        import_sounddevice()  # fail before loading the model when the audio extra is missing
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)
    runner = open_runner(model, threads=threads)
    with Engine(runner, host, osc_port, allow=list(allow) or None, buffer=buffer, realtime=realtime,
                verbose=verbose, host_rate=rate) as engine:
        bound_host, bound_port = engine.osc_address
        click.echo(f"{runner.card.name} ({runner.runtime}, buffer {buffer}, {runner.card.sample_rate} Hz): "
                   f"OSC on {bound_host}:{bound_port}{engine.map.prefix}/...", err=True)
        sys.stderr.flush()
        try:
            if output_path is not None:
                written = engine.run_file(input_path, output_path, seconds=silence)
                resampled = (f", resampled from {engine.host_rate} Hz, delay {engine.delay:.0f} samples"
                             if engine.stage is not None else "")
                click.echo(f"wrote {written}{resampled}", err=True)
            else:
                engine.run_device(input_device=use_device)
        except KeyboardInterrupt:
            click.echo("stopped", err=True)
        click.echo(engine.summary(), err=True)


@click.command("bundle")
@click.argument("run_or_model", type=click.Path(exists=True))
@click.option("--target", type=click.Choice(["raspberry"]), default="raspberry", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder to create (must not exist yet, or be empty).")
@click.option("--user", default="pi", show_default=True, help="Account that runs the service on the Pi.")
@click.option("--install-dir", default=None,
              help="Where the folder will live on the Pi (default /home/USER/<folder name>).")
def bundle(run_or_model: str, target: str, out_dir: str, user: str, install_dir: str | None) -> None:
    """A folder to copy to a Raspberry Pi: model, Pd patch, start script, systemd unit, README."""
    from tildekit.scripting.bundle import make_bundle

    report = make_bundle(run_or_model, out_dir, target=target, user=user, install_dir=install_dir,
                         progress=lambda line: click.echo(line, err=True))
    click.echo(f"wrote {report.out_dir} ({report.runtime}, {report.realtime_factor:.1f}x real time here "
               f"at 1 thread; Pi 4 buffer {report.pi_buffer})")


COMMANDS.append(serve)
COMMANDS.append(bundle)

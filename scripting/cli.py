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
    click.echo(f"playing {score}: {len(messages)} messages over {parsed.duration:.3f} s "
               f"to {host}:{port}{parsed.osc_map.prefix} (Ctrl-C stops)", err=True)
    with Controller(host, port, card=parsed.card, name=parsed.name) as controller:
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
        from pythonosc.udp_client import SimpleUDPClient

        client = SimpleUDPClient(host, port)
        client.send_message(address, values)
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

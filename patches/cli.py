"""Commands of tildekit.patches (registered by tildekit.cli)."""

from __future__ import annotations

from pathlib import Path

import click

from tildekit.models.contract.hosts import DEFAULT_BUFFER, DEFAULT_OSC_HOST, DEFAULT_OSC_PORT

COMMANDS: list[click.Command] = []


@click.command("patch")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--host", type=click.Choice(["pd", "max", "both"]), default="both", show_default=True,
              help="Which host's patches to write.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for the patches (default: next to the model; the model is named relative to it).")
@click.option("--buffer", type=int, default=DEFAULT_BUFFER, show_default=True,
              help="nn~ buffer size: a power of two >= the model's highest ratio; smaller = less latency, more CPU.")
@click.option("--osc-port", type=int, default=DEFAULT_OSC_PORT, show_default=True, help="UDP port of the OSC receiver.")
@click.option("--osc-host", default=DEFAULT_OSC_HOST, show_default=True, metavar="ADDRESS",
              help="Address the Pd OSC receiver listens on: 127.0.0.1 is this machine only; this "
                   "machine's LAN address or 0.0.0.0 / :: open it to the network (docs/patches.md).")
def patch_command(model: Path, host: str, out_dir: Path | None, buffer: int, osc_port: int,
                  osc_host: str) -> None:
    """Write Pure Data / Max patches for MODEL.ts: timbre transfer, forward, OSC receiver."""
    from tildekit.patches.write import write_patches  # lazy: keeps `tildekit --help` fast

    for path in write_patches(model, out_dir, host=host, buffer=buffer, osc_port=osc_port,
                              osc_host=osc_host):
        click.echo(str(path))


COMMANDS.append(patch_command)

"""Commands of tildekit.scripting (registered by tildekit.cli)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []

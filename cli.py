"""The `tildekit` command. Each sub-package contributes its commands through ``COMMANDS``."""

from __future__ import annotations

import sys

import click

from tildekit import __version__
from tildekit.errors import TildekitError
from tildekit.models.card import CardError
from tildekit.models.config import ProfileError

USER_ERRORS = (TildekitError, ProfileError, CardError)


class _Group(click.Group):
    """Turns user errors into one clear line on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tildekit")
def main() -> None:
    """tildekit: train streaming-safe neural audio models and take them to the stage.

    \b
    audio folder --preprocess--> dataset --train--> run dir
    run dir      --export------> model.ts (nn~), model.nm (Neutone), model.onnx
    model file   --patch-------> model.pd, model.maxpat
    model file   --serve / osc-> live control over OSC, headless engine
    """


def _register() -> None:
    from tildekit.export import cli as export_cli
    from tildekit.models import cli as models_cli
    from tildekit.patches import cli as patches_cli
    from tildekit.scripting import cli as scripting_cli

    for module in (models_cli, export_cli, patches_cli, scripting_cli):
        for command in module.COMMANDS:
            main.add_command(command)


_register()

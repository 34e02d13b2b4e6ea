"""The `tildekit` command. Each sub-package contributes its commands through ``COMMANDS``."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import click

from tildekit import __version__, runtime
from tildekit.errors import TildekitError
from tildekit.models.config import ProfileError
from tildekit.models.contract.card import CardError
from tildekit.models.contract.hosts import DEFAULT_OSC_HOST, DEFAULT_OSC_PORT

USER_ERRORS = (TildekitError, ProfileError, CardError)
ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR,
                      errno.EISDIR, errno.ENAMETOOLONG, errno.ENOENT, errno.EEXIST}


class _Group(click.Group):
    """Turns user errors into one clear line on stderr and an exit code, never a traceback: 2, or
    the error's own ``exit_code`` (a sound card that cannot open: 69, see errors.py)."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(getattr(exc, "exit_code", 2))
        except ModuleNotFoundError as exc:  # the runtime install reaching the full install's part
            message = runtime.missing_module(exc)
            if message is None:
                raise
            click.echo(f"Error: {message}", err=True)
            sys.exit(2)
        except OSError as exc:
            # The last line of defence for the environment's refusals (read-only folder, disk
            # full, a file where a folder should be): one line naming the path, never a traceback.
            if exc.errno not in ENVIRONMENT_ERRNOS:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"Error: {where}{exc.strerror or exc}: check the path, its permissions and the "
                       f"free space", err=True)
            sys.exit(2)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and (message := runtime.left_out_command(cmd_name)) is not None:
            raise TildekitError(message)  # raised inside invoke: one line, exit 2
        return command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tildekit")
def main() -> None:
    """tildekit: train streaming-safe neural audio models and take them to the stage.

    \b
    audio folder --preprocess--> dataset --train--> run dir
    run dir      --export------> model.ts (nn~), model.nm (Neutone), model.onnx
    run dir      --eval--------> report.md, spectrograms: does the output follow its input?
    model file   --patch-------> model.pd, model.maxpat
    model file   --serve / osc-> live control over OSC, headless engine
    """


@main.command("demo")
@click.argument("out_dir", type=click.Path(path_type=Path), default=Path("demo-out"))
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Training steps of the `small` profile [default: enough for the model to follow "
                   "its input, a few minutes on 2 cores].")
@click.option("--seconds", "seconds_of_audio", type=click.FloatRange(min=30), default=None,
              help="Seconds of generated training audio [default: 180, ddsp 120; not for effect].")
@click.option("--family", type=click.Choice(["autoencoder", "ddsp", "effect"]), default="autoencoder",
              show_default=True,
              help="autoencoder: RAVE-style timbre transfer (`small`); ddsp: pitch and loudness played by "
                   "a learned synth (`ddsp-raspberry`, with a MIDI synth patch); effect: dry/wet pairs "
                   "through the reference overdrive, a tiny knob-conditioned model (nn~ and Neutone files, "
                   "a slider per knob).")
def demo(out_dir: Path, steps: int | None, seconds_of_audio: float | None, family: str) -> None:
    """Run the whole pipeline on generated audio into OUT_DIR (default: demo-out).

    Generates tones, chirps and noise bursts, preprocesses them, trains the `small` profile,
    exports the model for nn~, Neutone FX and ONNX Runtime (each file checked the way its host
    loads it), writes Pure Data and Max patches and an OSC score, then prints how to play them.
    With --family ddsp: one-voice melodies, a DDSP model, its exports, its forward and MIDI synth
    patches and a score of notes. Re-running continues the training run in OUT_DIR.
    """
    from tildekit.demo import DDSP_DEMO_STEPS, DEMO_STEPS, EFFECT_DEMO_STEPS, run_ddsp_demo, run_demo, run_effect_demo

    if family == "effect":
        run_effect_demo(out_dir, steps=steps or EFFECT_DEMO_STEPS, echo=click.echo)
        return

    if family == "ddsp":
        run_ddsp_demo(out_dir, steps=steps or DDSP_DEMO_STEPS, seconds_of_audio=seconds_of_audio or 120.0,
                      echo=click.echo)
    else:
        run_demo(out_dir, steps=steps or DEMO_STEPS, seconds_of_audio=seconds_of_audio or 180.0, echo=click.echo)


# `bundle` joins the engine (scripting) and the Pd patches (patches), two sibling layers: it lives here.
@main.command("bundle")
@click.argument("run_or_model", type=click.Path(exists=True))
@click.option("--target", type=click.Choice(["raspberry"]), default="raspberry", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder to create (must not exist yet, or be empty).")
@click.option("--user", default="pi", show_default=True, help="Account that runs the service on the Pi.")
@click.option("--install-dir", default=None,
              help="Where the folder will live on the Pi (default /home/USER/<folder name>).")
@click.option("--osc-port", type=click.IntRange(1, 65535), default=DEFAULT_OSC_PORT, show_default=True,
              help="UDP port for OSC control on the Pi.")
@click.option("--osc-host", default=DEFAULT_OSC_HOST, show_default=True,
              help="Address the Pi's engine listens on: 127.0.0.1 the Pi only, 0.0.0.0 (IPv4) or :: (IPv6) "
                   "the network.")
@click.option("--osc-allow", multiple=True, metavar="IP",
              help="Accept OSC only from this sender, IPv4 or IPv6 (repeatable).")
def bundle_command(run_or_model: str, target: str, out_dir: str, user: str, install_dir: str | None,
                   osc_port: int, osc_host: str, osc_allow: tuple[str, ...]) -> None:
    """A self-contained folder for a Raspberry Pi: the tildekit runtime as a wheel (no torch), the
    ONNX model, Pd patches, start script, systemd unit, README."""
    from tildekit.patches.write import write_patches
    from tildekit.scripting.bundle import make_bundle

    report = make_bundle(run_or_model, out_dir, target=target, user=user, install_dir=install_dir,
                         osc_port=osc_port, osc_host=osc_host, osc_allow=osc_allow,
                         progress=lambda line: click.echo(line, err=True), write_patches=write_patches)
    click.echo(f"wrote {report.out_dir} ({report.model_file}, {report.realtime_factor:.1f}x real time here "
               f"at 1 thread; Pi 4 buffer {report.pi_buffer})")


def _register() -> None:
    from tildekit.export import cli as export_cli
    from tildekit.models import cli as models_cli
    from tildekit.patches import cli as patches_cli
    from tildekit.scripting import cli as scripting_cli

    for module in (models_cli, export_cli, patches_cli, scripting_cli):
        for command in module.COMMANDS:
            main.add_command(command)
    if runtime.is_runtime_install():  # the modules behind the other commands are not installed
        for name in [n for n in main.commands if n not in runtime.COMMANDS]:
            del main.commands[name]


_register()

"""The runtime install: what a stage machine (a Raspberry Pi) needs to play an exported model.

tildekit installs in two parts:

- the **runtime** (this list): the headless engine (`serve`), OSC control (`osc`), Pd/Max patches
  (`patch`), reading model cards (`info`) and checking/timing ONNX files (`check`, `bench`),
  on ONNX Runtime and numpy. No torch.
- the **full install** (`pip install tildekit`): the runtime plus training, preprocessing, the
  exports (TorchScript for nn~, Neutone, ONNX), the checks of `.ts`/`.nm` files and `bundle`.

`tildekit bundle` writes the runtime as a wheel of its own distribution (see
:mod:`tildekit.scripting.runtime_wheel`) from the modules listed here, with a marker file that
tells the CLI it is the runtime install. Pure data and the standard library only: the CLI reads
it on every start.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

DISTRIBUTION = "tildekit-runtime"
REQUIRES_PYTHON = ">=3.11"

# The package's files, relative to its root, that the runtime needs (their module-level imports
# stay inside this list: tests/test_bundle.py checks it).
MODULES = (
    "__init__.py", "__main__.py", "cli.py", "errors.py", "runtime.py",
    "models/contract/__init__.py", "models/contract/atomic.py", "models/contract/attributes.py",
    "models/contract/audio.py", "models/contract/card.py", "models/contract/card_check.py",
    "models/contract/card_format.py", "models/contract/hosts.py", "models/contract/names.py",
    "models/contract/neutone_host.py", "models/contract/nn_host.py", "models/contract/oscmap.py",
    "models/contract/synth_controls.py",
    "models/__init__.py", "models/cli.py", "models/config.py", "models/outputs.py",
    "models/resample_design.py", "models/resample_plan.py", "models/resample_stream.py",
    "export/__init__.py", "export/bench.py", "export/card_io.py", "export/check.py", "export/check_result.py",
    "export/nn_load.py",
    "export/cli.py", "export/onnx_check.py", "export/onnx_runtime.py",
    "patches/__init__.py", "patches/build.py", "patches/cli.py", "patches/graph.py", "patches/maxpat.py",
    "patches/pd.py", "patches/sections.py", "patches/spec.py", "patches/synth.py", "patches/write.py",
    "scripting/__init__.py", "scripting/audio_files.py", "scripting/cli.py", "scripting/controller.py",
    "scripting/engine.py", "scripting/interpolate.py", "scripting/monitor.py", "scripting/netaccess.py",
    "scripting/notes.py",
    "scripting/oscwire.py", "scripting/resample_stage.py", "scripting/runner.py", "scripting/safety.py",
    "scripting/schedule.py", "scripting/score.py",
)

# The `tildekit` commands of the runtime install, and those only the full install has (named in
# the runtime's error messages; tests/test_bundle.py compares both with the CLI's commands).
COMMANDS = ("bench", "check", "info", "osc", "patch", "serve")
FULL_INSTALL_COMMANDS = ("bundle", "convert", "demo", "eval", "export", "preprocess", "preprocess-pairs", "train")

# Same specifiers as pyproject.toml's dependencies (a test compares them).
REQUIREMENTS = (
    "click>=8.1", "numpy>=1.24", "onnx>=1.16", "onnxruntime>=1.18", "py2max>=0.6", "python-osc>=1.8",
    "pyyaml>=6", "soundfile>=0.12",
)
EXTRAS = {"audio": ("sounddevice>=0.4",)}

# Imports that only the full install provides: a runtime command that reaches one of them (a
# .ts model, interpolation between sound files at another rate...) says so in one line.
FULL_INSTALL_IMPORTS = ("torch", "cached_conv", "librosa", "scipy", "matplotlib", "tqdm")

MARKER = "runtime.json"  # in the package folder of the runtime wheel only


@lru_cache(maxsize=1)
def marker() -> dict | None:
    """The runtime wheel's marker (its commands, what it leaves out), or None in the full install."""
    path = Path(__file__).with_name(MARKER)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def is_runtime_install() -> bool:
    return marker() is not None


def left_out_command(name: str) -> str | None:
    """One line for a command of the full install called in the runtime install, else None."""
    info = marker()
    if info is None or name not in info.get("left_out_commands", ()):
        return None
    return (f"`tildekit {name}` is not part of the tildekit runtime (engine, OSC, patches, ONNX checks): "
            f"run it on a computer with the full tildekit (pip install tildekit)")


def missing_module(exc: ModuleNotFoundError) -> str | None:
    """One line when the runtime install lacks a module the full install has, else None."""
    info = marker()
    name = exc.name or ""
    if info is None or not name:
        return None
    top = name.split(".")[0]
    shipped = {"tildekit." + m[: -len(".py")].replace("/", ".").removesuffix(".__init__") for m in info["modules"]}
    if top in FULL_INSTALL_IMPORTS or (top == "tildekit" and name not in shipped | {"tildekit"}):
        return (f"this needs {name}, which the tildekit runtime leaves out: it runs .onnx exports "
                f"(training, TorchScript .ts/.nm models and export need the full tildekit: pip install tildekit)")
    return None

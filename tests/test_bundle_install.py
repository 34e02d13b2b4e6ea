"""The Raspberry Pi bundle installed the way its README says, into a fresh venv, from its own files:
tildekit from the bundle's wheel with the index off, the dependencies from this environment (a
.pth line to its site-packages, standing in for PyPI) with torch and the rest of the full install
made unimportable. Then its start script runs on a sound file, and live without a sound card.

The model's files carry a hostile name and the bundle lives in a folder with spaces, ';', '%' and
non-ASCII letters: nothing may run that the name spells."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.conftest import export_tiny_model
from tildekit import runtime
from tildekit.scripting.bundle import make_bundle
from tildekit.scripting.runtime_wheel import wheel_name
from tildekit.scripting.shell_quote import shell_word

pytestmark = pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning")

RATE = 16000
STEM = "tiny $(touch pwned) `touch pwned2`; touch pwned3 '\" %n ü"
FOLDER = "tiny pi; ü %h"
BLOCKER = f'''"""Makes the full install's packages unimportable in this venv (test of the runtime wheel)."""
import sys

BLOCKED = {runtime.FULL_INSTALL_IMPORTS!r}


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked for this test)", name=name)
        return None


sys.meta_path.insert(0, Blocker())
'''


def run(command: str | list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """One command through bash (as a user types it) or argv; subprocess.run reaps it, also on timeout."""
    argv = ["bash", "-c", command] if isinstance(command, str) else command
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def install_block(readme: str) -> list[str]:
    """The commands of the README's Install section, as written."""
    section = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("    "))
    block = []
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        block.append(line[4:])
    return block


def link_dependencies(venv: Path) -> Path:
    """The venv sees this environment's packages after its own, and cannot import the full install's."""
    site = Path(run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                    venv, {"PATH": os.environ["PATH"]}).stdout.strip())
    here = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_test_dependencies.pth").write_text("".join(f"{p}\n" for p in here))
    (site / "_test_block_full_install.py").write_text(BLOCKER)
    (site / "aa_test_block_full_install.pth").write_text("import _test_block_full_install\n")
    return site


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(bundle folder, environment, the README's commands after the install, the exports) once the
    README's install commands ran."""
    models = export_tiny_model(tmp_path_factory.mktemp("models"), stem=STEM)
    bundle = tmp_path_factory.mktemp("pi") / FOLDER
    make_bundle(models / f"{STEM}.onnx", bundle, install_dir=str(bundle))
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HOME": str(tmp_path_factory.mktemp("home")), "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
           "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    readme = (bundle / "README.md").read_text()
    commands = install_block(readme)
    assert commands[:3] == ["sudo apt update", "sudo apt install -y python3-venv libportaudio2 libsndfile1",
                            f"cd {shell_word(str(bundle), 'folder')}"]
    assert run(commands[2] + " && pwd", bundle.parent, env).stdout.strip() == str(bundle)
    assert commands[3] == "python3 -m venv venv"
    done = run(commands[3], bundle, env)
    assert done.returncode == 0, done.stderr
    link_dependencies(bundle / "venv")
    assert commands[4] == f"venv/bin/pip install 'wheels/{wheel_name()}[audio]'"
    done = run(commands[4].replace("pip install ", "pip install --no-index "), bundle, env)
    assert done.returncode == 0, done.stdout + done.stderr
    return bundle, env, commands[5:], models


def test_the_venv_has_the_runtime_and_no_torch(installed):
    bundle, env, _, _ = installed
    python = str(bundle / "venv" / "bin" / "python")
    done = run([python, "-c", "import tildekit, numpy, onnxruntime; print(tildekit.__file__)"], bundle, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(bundle / "venv"))  # the wheel's copy, not this checkout
    done = run([python, "-c", "import torch"], bundle, env)
    assert done.returncode != 0 and "blocked for this test" in done.stderr
    listed = run([str(bundle / "venv" / "bin" / "pip"), "list", "--path", run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], bundle, env).stdout.strip()],
        bundle, env).stdout
    assert "tildekit-runtime" in listed and "torch" not in listed


def test_the_readme_commands_run_as_written(installed):
    bundle, env, commands, _ = installed
    check, generate, live = commands
    assert check == f"venv/bin/tildekit check {shell_word('./' + STEM + '.onnx', 'file')}"
    done = run(check, bundle, env)
    assert done.returncode == 0 and "6/6 passed" in done.stdout, done.stdout + done.stderr
    assert generate == "./start.sh --silence 5 --output test.wav"
    done = run(generate, bundle, env)
    assert done.returncode == 0, done.stderr
    audio, rate = soundfile.read(bundle / "test.wav", dtype="float32")
    assert rate == RATE and audio.shape == (5 * RATE,) and np.isfinite(audio).all()
    assert live == "./start.sh"
    sounddevice = pytest.importorskip("sounddevice")
    if sounddevice.query_devices():
        pytest.skip("this machine has a sound card: the live start would open it")
    done = run(live, bundle, env, timeout=300)
    assert done.returncode == 69, done.stderr  # the unit retries this status a bounded number of times
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "cannot open the sound device" in errors[0] and "Traceback" not in done.stderr


def test_start_script_on_a_sound_file(installed, tmp_path):
    bundle, env, _, _ = installed
    t = np.arange(int(1.5 * RATE)) / RATE
    noise = np.random.default_rng(0).standard_normal(t.size)
    signal = 0.4 * np.sin(2 * np.pi * (100 * t + 500 * t ** 2)) + 0.05 * noise
    soundfile.write(tmp_path / "in put.wav", signal.astype(np.float32), RATE, subtype="FLOAT")
    done = run(["./start.sh", "--input", str(tmp_path / "in put.wav"), "--output", str(tmp_path / "out.wav")],
               bundle, {**env, "OSC_PORT": "0", "OSC_ALLOW": "127.0.0.1 ::1"})
    assert done.returncode == 0, done.stderr
    assert "OSC on 127.0.0.1:" in done.stderr
    audio, rate = soundfile.read(tmp_path / "out.wav", dtype="float32")
    assert rate == RATE and audio.shape == signal.shape
    assert np.isfinite(audio).all() and float(np.sqrt(np.mean(audio ** 2))) > 1e-3


def test_full_install_commands_say_so_in_one_line(installed):
    bundle, env, _, models = installed
    tildekit = str(bundle / "venv" / "bin" / "tildekit")
    done = run([tildekit, "train", "data"], bundle, env)
    assert done.returncode == 2
    assert done.stderr.startswith("Error: `tildekit train` is not part of the tildekit runtime")
    assert done.stderr.count("\n") == 1
    done = run([tildekit, "serve", str(models / f"{STEM}.ts"), "--silence", "1", "--output", "x.wav",
                "--osc-port", "0"], bundle, env)
    assert done.returncode == 2 and "needs torch" in done.stderr and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("Error: ")] == [done.stderr.strip()]
    done = run([tildekit, "--help"], bundle, env)
    listed = [line.split()[0] for line in done.stdout.split("Commands:", 1)[1].splitlines() if line.strip()]
    assert done.returncode == 0 and listed == sorted(runtime.COMMANDS)


def test_nothing_ran_from_the_hostile_names(installed):
    bundle, _, _, _ = installed
    assert not [p for p in bundle.parent.parent.rglob("pwned*")]
    assert not [p for p in bundle.rglob("*") if p.name.startswith("pwned")]

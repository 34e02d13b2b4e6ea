"""`tildekit bundle`: the Raspberry Pi folder, its runtime wheel and its systemd unit (real
exports, real `systemd-analyze verify`). Installing and running the bundle: test_bundle_install.py."""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from tests.conftest import export_tiny_model
from tildekit import runtime
from tildekit.cli import main
from tildekit.errors import TildekitError
from tildekit.models.contract.card import CARD_ONNX_KEY
from tildekit.patches.write import write_patches
from tildekit.scripting.bundle import make_bundle
from tildekit.scripting.runtime_wheel import runtime_files, wheel_name, write_runtime_wheel

pytestmark = pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
PACKAGE = Path(runtime.__file__).parent


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def bundled(models, tmp_path_factory) -> Path:
    """The CLI's bundle of tiny.onnx (+ tiny.ts for Pd), opened to a LAN with an allow-list,
    installed where it was written (so the unit's ExecStart= exists for systemd-analyze)."""
    out = tmp_path_factory.mktemp("bundles") / "tiny-pi"
    result = CliRunner().invoke(main, ["bundle", str(models / "tiny.onnx"), "--out", str(out),
                                       "--install-dir", str(out), "--user", "alice", "--osc-port", "9100",
                                       "--osc-host", "0.0.0.0", "--osc-allow", "192.168.1.20",
                                       "--osc-allow", "FD00::20"])
    assert result.exit_code == 0, result.output
    return out


def test_bundle_folder(bundled, models, tmp_path):
    files = {str(p.relative_to(bundled)) for p in bundled.rglob("*") if p.is_file()}
    assert files == {"tiny.onnx", "tiny.decode.onnx", "tiny.ts", "tiny-transfer.pd", "tiny-forward.pd",
                     "tiny-osc.pd", "start.sh", "tildekit.service", "README.md", "budget.json",
                     f"wheels/{wheel_name()}"}
    budget = json.loads((bundled / "budget.json").read_text())
    assert budget["runtime"] == "onnx" and budget["model_file"] == "tiny.onnx" and budget["realtime_factor"] > 0
    assert {t["runtime"] for t in budget["timings"]} == {"onnx", "torchscript"}
    start = bundled / "start.sh"
    assert os.access(start, os.X_OK)
    assert subprocess.run(["bash", "-n", str(start)], capture_output=True, timeout=30).returncode == 0
    script = start.read_text()
    assert "MODEL=tiny.onnx" in script and 'serve "$HERE/$MODEL"' in script
    assert f"DEFAULT_BUFFER={budget['pi_buffer']}" in script and "DEFAULT_OSC_ALLOW='192.168.1.20 fd00::20'" in script
    unit = (bundled / "tildekit.service").read_text()
    assert f'ExecStart="{bundled}/start.sh"' in unit and "User=alice" in unit
    assert 'Environment="OSC_HOST=0.0.0.0" "OSC_PORT=9100" "OSC_ALLOW=192.168.1.20 fd00::20"' in unit
    for line in ("Restart=on-failure", "StartLimitBurst=5", "StartLimitIntervalSec=120", "RestartPreventExitStatus=2"):
        assert line in unit.splitlines()
    readme = (bundled / "README.md").read_text()
    for command in ("sudo apt install -y python3-venv libportaudio2 libsndfile1", "python3 -m venv venv",
                    f"venv/bin/pip install 'wheels/{wheel_name()}[audio]'", "venv/bin/tildekit check ./tiny.onnx",
                    "sudo cp tildekit.service /etc/systemd/system/tildekit-tiny.service",
                    "sudo systemctl enable --now tildekit-tiny",
                    'Environment="OSC_HOST=0.0.0.0" "OSC_ALLOW=192.168.1.20"'):
        assert command in readme
    assert "0.0.0.0: OSC from 192.168.1.20, fd00::20 only" in readme
    assert f"**{budget['pi_buffer']} samples**" in readme and "GFLOP per second of audio" in readme
    assert "tiny.ts" in (bundled / "tiny-transfer.pd").read_text()
    assert all(p.stat().st_mode & 0o777 == (0o755 if p == start else 0o644) for p in bundled.rglob("*") if p.is_file())
    assert not [p for p in bundled.parent.iterdir() if p.name.startswith(".")]  # temp folder gone


def test_bundle_refusals_are_one_line_and_write_nothing(bundled, models, tmp_path):
    with pytest.raises(TildekitError, match="not an empty folder"):
        make_bundle(models / "tiny.onnx", bundled)
    with pytest.raises(TildekitError, match="run dir or an exported"):
        make_bundle(models / "tiny.decode.onnx", tmp_path / "x")
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(models / "tiny.ts", alone / "tiny.ts")
    with pytest.raises(TildekitError, match="the Pi runs ONNX exports"):
        make_bundle(alone / "tiny.ts", tmp_path / "y")
    for args, message in ((["--install-dir", "/home/pi/a$b"], "contains '$'"),
                          (["--install-dir", "pi"], "not an absolute path"),
                          (["--user", "pi\nExecStartPre=/bin/sh"], "not a user name"),
                          (["--osc-host", "0.0.0.0 ; touch x"], "not an IPv4 or IPv6 address"),
                          (["--osc-allow", "everyone"], "not an IPv4 or IPv6 address")):
        result = CliRunner().invoke(main, ["bundle", str(models / "tiny.onnx"), "--out", str(tmp_path / "z"), *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert result.output.strip().count("\n") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone"]


def _with_card_name(models: Path, folder: Path, name: str) -> Path:
    """tiny.onnx + tiny.decode.onnx with ``name`` written into their cards' JSON as is."""
    folder.mkdir()
    for file in ("tiny.onnx", "tiny.decode.onnx"):
        proto = onnx.load(str(models / file))
        prop = next(p for p in proto.metadata_props if p.key == CARD_ONNX_KEY)
        card = json.loads(prop.value)
        card["name"] = name
        prop.value = json.dumps(card)
        onnx.save(proto, str(folder / file))
    return folder / "tiny.onnx"


@pytest.mark.parametrize("name", ["tiny\nExecStartPre=/bin/sh -c 'touch /tmp/pwned'", "tiny\\", "\u202etiny"])
def test_a_hostile_card_name_is_refused_before_anything_is_written(models, tmp_path, name):
    model = _with_card_name(models, tmp_path / "models", name)
    result = CliRunner().invoke(main, ["bundle", str(model), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_a_card_name_with_specifiers_and_quotes_is_written_escaped(models, tmp_path):
    from tildekit.export.card_io import read_card
    from tildekit.scripting.pi_service import service_settings, service_unit

    model = _with_card_name(models, tmp_path / "models", "Bob's \"voice\" 100% %n")
    try:
        card = read_card(model)
    except Exception:  # a stricter card validator refuses the name: also safe
        pytest.skip("the card validator refuses this name")
    unit = service_unit(card.name, service_settings("pi", "/home/pi/voice", 2048))
    assert "Description=tildekit engine: Bob's \"voice\" 100%% %%n (OSC on UDP port 9000)" in unit.splitlines()


# -- systemd ------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="apt install systemd (.ci/run does)")
def test_the_unit_passes_systemd_analyze_verify(bundled, tmp_path):
    unit = tmp_path / "tildekit-tiny.service"
    shutil.copy(bundled / "tildekit.service", unit)
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr


# -- the runtime wheel --------------------------------------------------------------------------

def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_the_runtime_wheel_is_a_valid_reproducible_wheel(bundled, tmp_path):
    path = bundled / "wheels" / wheel_name()
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        content = {name: wheel.read(name) for name in names}
    dist_info = wheel_name().rsplit("-", 3)[0] + ".dist-info"
    assert names[-1] == f"{dist_info}/RECORD" and len(names) == len(set(names))
    package = sorted(n for n in names if n.startswith("tildekit/"))
    assert package == sorted([f"tildekit/{m}" for m in runtime.MODULES] + [f"tildekit/{runtime.MARKER}"])
    assert all(content[f"tildekit/{m}"] == (PACKAGE / m).read_bytes() for m in runtime.MODULES)
    record = [line.split(",") for line in content[f"{dist_info}/RECORD"].decode().splitlines()]
    assert {row[0] for row in record} == set(names)
    for name, digest, size in record:
        if name != f"{dist_info}/RECORD":
            assert digest == _record_hash(content[name]) and int(size) == len(content[name]), name
    metadata = content[f"{dist_info}/METADATA"].decode()
    requires = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist: ")]
    assert requires == [*runtime.REQUIREMENTS, 'sounddevice>=0.4; extra == "audio"']
    assert not [r for r in requires if re.match(r"torch|librosa|scipy|cached|matplotlib", r, re.I)]
    assert "Name: tildekit-runtime" in metadata and "Provides-Extra: audio" in metadata
    assert b"tildekit = tildekit.cli:main" in content[f"{dist_info}/entry_points.txt"]
    assert b"Root-Is-Purelib: true" in content[f"{dist_info}/WHEEL"]
    marker = json.loads(content[f"tildekit/{runtime.MARKER}"])
    assert {"train", "export", "bundle", "preprocess", "demo"} <= set(marker["left_out_commands"])
    assert not set(marker["left_out_commands"]) & set(runtime.COMMANDS)
    (tmp_path / "again").mkdir()
    assert write_runtime_wheel(tmp_path / "again").read_bytes() == path.read_bytes()  # same sources, same bytes
    assert path.stat().st_size < 500_000


def test_runtime_requirements_are_the_projects():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert set(runtime.REQUIREMENTS) <= set(project["dependencies"])
    assert tuple(project["optional-dependencies"]["audio"]) == runtime.EXTRAS["audio"]
    assert project["requires-python"] == runtime.REQUIRES_PYTHON


def _module_level_imports(path: Path) -> list[tuple[str, int]]:
    """Modules imported when ``path`` is imported: its top-level statements, outside functions
    and ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int]] = []

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.extend((alias.name, node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((node.module, node.lineno))
                found.extend((f"{node.module}.{alias.name}", node.lineno) for alias in node.names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(tree.body)
    return found


def test_runtime_modules_import_only_the_runtime():
    """Every module the runtime wheel carries imports (when imported) only runtime modules and
    no torch: the wheel's `tildekit` starts without the full install."""
    shipped = {"tildekit." + m[:-3].replace("/", ".").removesuffix(".__init__") for m in runtime.MODULES}
    shipped.add("tildekit")
    problems = []
    for module in runtime.MODULES:
        for name, line in _module_level_imports(PACKAGE / module):
            top = name.split(".")[0]
            if top in runtime.FULL_INSTALL_IMPORTS:
                problems.append(f"{module}:{line} imports {name}")
            elif top == "tildekit" and name not in shipped and name.rsplit(".", 1)[0] not in shipped:
                problems.append(f"{module}:{line} imports {name}, not in tildekit.runtime.MODULES")
    assert not problems, "\n".join(problems)
    assert runtime_files().keys() == {f"tildekit/{m}" for m in runtime.MODULES} | {f"tildekit/{runtime.MARKER}"}
    assert not runtime.is_runtime_install()  # this is the full install: every command is there
    assert {"train", "export", "bundle"} <= set(main.commands)
    # runtime.py declares which install has which command: every command is in exactly one list.
    assert sorted(main.commands) == sorted(runtime.COMMANDS + runtime.FULL_INSTALL_COMMANDS)


# -- the sound card ------------------------------------------------------------------------------

def test_serve_without_a_sound_card_exits_69(models):
    """A sound card that cannot open is not a configuration error: exit 69 (EX_UNAVAILABLE), so
    the unit retries it a bounded number of times, with one line naming the cause."""
    sounddevice = pytest.importorskip("sounddevice")
    if sounddevice.query_devices():
        pytest.skip("this machine has a sound card: the engine would open it")
    done = subprocess.run([sys.executable, "-m", "tildekit", "serve", str(models / "tiny.onnx"), "--device",
                           "--osc-port", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 69, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "cannot open the sound device" in errors[0] and "Traceback" not in done.stderr


@pytest.mark.slow
def test_bundle_from_a_run_dir_exports_onnx_for_the_pi_buffer(tmp_path):
    """A run dir (random weights, written as the trainer writes it) -> export, measure, bundle."""
    import torch

    from tildekit.models.autoencoder import build_model
    from tildekit.models.config import load_profile
    from tildekit.models.run import CHECKPOINT_FORMAT, PROFILE_FILE, write_checkpoint

    profile = load_profile("small", ["model.capacity=8", "model.latent_size=4"])
    run = tmp_path / "voice"
    run.mkdir()
    (run / PROFILE_FILE).write_text(profile.to_yaml())
    torch.manual_seed(1)
    write_checkpoint(run, {"format": CHECKPOINT_FORMAT, "step": 10, "profile": profile.to_yaml(),
                           "model": build_model(profile.model, False).state_dict()})
    lines: list[str] = []
    with pytest.warns(UserWarning, match="no latent statistics"):
        report = make_bundle(run, tmp_path / "voice-pi", user="alice", install_dir="/opt/voice",
                             progress=lines.append, write_patches=write_patches)
    assert {"voice.ts", "voice.onnx", "voice.decode.onnx", "voice-transfer.pd", "start.sh", "tildekit.service",
            "README.md", "budget.json", f"wheels/{wheel_name()}"} <= set(report.files)
    assert report.runtime == "onnx" and report.model_file == "voice.onnx"
    assert any("'small' profile" in line for line in lines)  # the Pi profile is suggested
    assert {t.runtime for t in report.timings} == {"torchscript", "onnx"}
    unit = (tmp_path / "voice-pi" / "tildekit.service").read_text()
    assert "User=alice" in unit and 'ExecStart="/opt/voice/start.sh"' in unit
    # the bundled model runs at the recommended buffer (file mode: no sound card here)
    result = CliRunner().invoke(main, ["serve", str(tmp_path / "voice-pi" / report.model_file), "--silence", "0.5",
                                       "--output", str(tmp_path / "gen.wav"), "--osc-port", "0",
                                       "--buffer", str(report.pi_buffer)])
    assert result.exit_code == 0, result.output

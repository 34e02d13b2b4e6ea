"""The two writers behind the Raspberry Pi bundle's start.sh and systemd unit, with hostile strings:
real bash reads every shell word back, real `systemd-analyze verify` parses every unit."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tildekit.errors import TildekitError
from tildekit.scripting.pi_service import service_settings, service_unit, start_script
from tildekit.scripting.shell_quote import MAX_WORD_BYTES, shell_word
from tildekit.scripting.systemd_quote import environment, exec_path, unit_text, user_name

HOSTILE = [
    "tiny", "", " ", "a b", "x\nExecStartPre=/bin/sh -c 'touch /tmp/pwned'", "a;b", "$(touch pwned)", "`touch pwned`",
    "${HOME}", "$HOME", "a\\", "\\", "back\\slash", "'", "\"", "it's \"quoted\"", "..", "../../etc", "/abs/path",
    "100%", "%n%i%%", "tab\there", "cr\rhere", "nul\0byte", "unicode é ü 漢字 🎵", "\u202eevil", "line\u2028sep",
    "-rf", "--help", "=cmd", "~root", "*", "?", "[a]", "!x", "a&b|c<d>e", "#comment", "x" * 300,
    "y" * (MAX_WORD_BYTES + 1), "surrogate\udcff",
]
UNIT_KEYS = ["Description", "After", "Wants", "StartLimitIntervalSec", "StartLimitBurst", "Type", "User",
             "SupplementaryGroups", "Environment", "ExecStart", "Restart", "RestartSec", "RestartPreventExitStatus",
             "Nice", "NoNewPrivileges", "PrivateTmp", "ProtectSystem", "WantedBy"]


def bash_reads(word: str) -> bytes:
    """What bash makes of ``word`` as the argument of printf."""
    done = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, timeout=30,
                          env={"PATH": os.environ["PATH"], "HOME": "/nonexistent"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def systemd_verify(unit: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=60)


needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze missing (apt install systemd; .ci/run does)")


def unit_keys(unit: str) -> list[str]:
    """The setting names of a unit, in order (comments, sections and blank lines skipped)."""
    keys = []
    for line in unit.splitlines():
        if line and not line.startswith(("#", "[")):
            keys.append(line.split("=", 1)[0])
    return keys


def decode_exec_word(word: str) -> str:
    """systemd's reading of a double-quoted word without backslashes (systemd.syntax(7))."""
    assert word.startswith('"') and word.endswith('"') and "\\" not in word
    return word[1:-1].replace("%%", "%")


# -- shell ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", HOSTILE)
def test_shell_word_is_read_back_by_bash_or_rejected(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        word = shell_word(value, "model file")
    except TildekitError as exc:
        assert "\0" in value or len(value.encode("utf-8", "surrogatepass")) > MAX_WORD_BYTES or "\udcff" in value
        assert "\n" not in str(exc) and "model file" in str(exc)
        return
    assert bash_reads(word) == value.encode("utf-8")
    assert not list(tmp_path.iterdir())  # nothing ran: no `pwned` file


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_shell_word_property_posix_split(value):
    try:
        word = shell_word(value, "file")
    except TildekitError:
        assert "\0" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value)
        return
    assert shlex.split(word, posix=True) == [value] or (value == "" and word == "''")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40))
def test_shell_word_property_real_bash(value):
    assert bash_reads(shell_word(value, "file")) == value.encode("utf-8")


@pytest.mark.parametrize("name", HOSTILE)
def test_start_script_model_name_never_runs(name, tmp_path):
    """The bundle's real start.sh with a hostile model file name runs a stand-in for tildekit
    (a script that prints its arguments): the name arrives as one argument, nothing else runs."""
    settings_ = service_settings("pi", str(tmp_path / "bundle"), 1024)
    try:
        text = start_script(name, settings_)
    except TildekitError as exc:
        assert "\n" not in str(exc)
        assert name in ("", "..") or "/" in name or "\0" in name or "\udcff" in name \
            or len(name.encode("utf-8", "surrogatepass")) > MAX_WORD_BYTES
        return
    bundle = tmp_path / "bundle"
    (bundle / "venv" / "bin").mkdir(parents=True)
    fake = bundle / "venv" / "bin" / "tildekit"
    fake.write_text('#!/usr/bin/env bash\nfor a in "$@"; do printf "%s\\0" "$a"; done\n')
    fake.chmod(0o755)
    script = bundle / "start.sh"
    script.write_text(text, encoding="utf-8")
    script.chmod(0o755)
    done = subprocess.run([str(script), "--input", "x.wav"], cwd=tmp_path, capture_output=True, timeout=30,
                          env={"PATH": os.environ["PATH"], "OSC_ALLOW": "127.0.0.1 ::1 *"})
    assert done.returncode == 0, done.stderr
    argv = done.stdout.split(b"\0")[:-1]
    assert argv[:2] == [b"serve", f"{bundle}/{name}".encode()]
    assert argv[argv.index(b"--osc-host") + 1] == b"127.0.0.1"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == b"--osc-allow"] == [b"127.0.0.1", b"::1", b"*"]
    assert argv[-2:] == [b"--input", b"x.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert sorted(p.name for p in bundle.iterdir()) == ["start.sh", "venv"]


# -- systemd -------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", HOSTILE)
def test_unit_text_escapes_or_rejects(value):
    try:
        text = unit_text(value, "the model card's name")
    except TildekitError as exc:
        assert "\n" not in str(exc) and "model card's name" in str(exc)
        return
    assert not re.search(r"[\x00-\x1f\x7f\\\u2028\u2029\u202e]", text)
    assert text.replace("%%", "%") == value and text == text.strip()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_unit_text_property(value):
    try:
        text = unit_text(value, "name")
    except TildekitError:
        return
    assert "\n" not in text and "\r" not in text and not text.endswith("\\")
    assert re.sub("%%", "%", text) == value and "%" not in text.replace("%%", "")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_exec_path_property(value):
    path = "/home/pi/" + value + "/start.sh"
    try:
        word = exec_path(path, "--install-dir")
    except TildekitError:
        return
    assert decode_exec_word(word) == path and "\n" not in word


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40))
def test_environment_property(name, value):
    try:
        assignment = environment(name, value, "setting")
    except TildekitError:
        return
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)
    assert decode_exec_word(assignment) == f"{name}={value}"


@pytest.mark.parametrize("name", HOSTILE)
def test_service_unit_with_a_hostile_card_name_keeps_its_settings(name):
    settings_ = service_settings("pi", "/home/pi/voice-pi", 2048)
    try:
        unit = service_unit(name, settings_)
    except TildekitError as exc:
        assert "\n" not in str(exc)
        return
    assert unit_keys(unit) == UNIT_KEYS  # nothing added: no ExecStartPre=, no second ExecStart=
    description = next(line for line in unit.splitlines() if line.startswith("Description="))
    assert description.replace("%%", "%") == f"Description=tildekit engine: {name} (OSC on UDP port 9000)"


@pytest.mark.parametrize("user", ["pi; rm -rf /", "root\nExecStartPre=/bin/true", "", "0day", "-x", "a" * 33, "%u"])
def test_user_names_are_checked(user):
    with pytest.raises(TildekitError, match="not a user name"):
        user_name(user)
    assert user_name("alice_2") == "alice_2"


@pytest.mark.parametrize("bad, message", [
    ({"install_dir": "relative/dir"}, "not an absolute path"),
    ({"install_dir": "/home/pi/../etc"}, "not a normalised path"),
    ({"install_dir": "/home/pi/a$b"}, "contains '\\$'"),
    ({"install_dir": "/home/pi/x\nExecStartPre=/bin/sh"}, "control or format character"),
    ({"install_dir": '/home/pi/"q"'}, "contains"),
    ({"osc_host": "0.0.0.0; touch x"}, "not an IPv4 or IPv6 address"),
    ({"osc_allow": ["192.168.1.20", "evil.example\n"]}, "not an IPv4 or IPv6 address"),
    ({"osc_port": 70000}, "UDP port"),
])
def test_service_settings_reject_what_cannot_be_written(bad, message):
    kwargs = {"user": "pi", "install_dir": "/home/pi/voice-pi", "buffer": 2048, **bad}
    with pytest.raises(TildekitError, match=message) as info:
        service_settings(**kwargs)
    assert "\n" not in str(info.value)


def test_service_settings_take_ipv4_and_ipv6():
    settings_ = service_settings("pi", "/opt/voice", 2048, osc_host="::", osc_allow=["192.168.1.20", "FD00::0020"])
    assert settings_.osc_host == "::" and settings_.osc_allow == ("192.168.1.20", "fd00::20")
    unit = service_unit("voice", settings_)
    assert 'Environment="OSC_HOST=::" "OSC_PORT=9000" "OSC_ALLOW=192.168.1.20 fd00::20"' in unit


# -- real systemd parsing --------------------------------------------------------------------

DIRECTORY_NAMES = ["pi dir", "a;b", "100% %n", "ü é 漢字", "`x` (y)", "a&b|c<d>", "-rf", "..x",
                   "#x", "x" * 200]


@needs_systemd
@pytest.mark.parametrize("directory", DIRECTORY_NAMES)
def test_systemd_reads_the_exec_path_back(directory, tmp_path):
    """systemd-analyze verify fails when ExecStart= names a file that does not exist: it passes only
    when systemd read the quoted path back exactly."""
    install = tmp_path / directory
    install.mkdir()
    (install / "start.sh").write_text("#!/bin/sh\nexit 0\n")
    (install / "start.sh").chmod(0o755)
    unit = tmp_path / "tildekit-x.service"
    unit.write_text(service_unit("voice 100%", service_settings("pi", str(install), 2048)), encoding="utf-8")
    done = systemd_verify(unit)
    assert done.returncode == 0, done.stdout + done.stderr
    (install / "start.sh").unlink()  # and the check is real: without the file it fails
    done = systemd_verify(unit)
    assert done.returncode != 0 and "start.sh" in done.stdout + done.stderr


@needs_systemd
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1, max_size=30))
def test_systemd_property_exec_path_and_name(tmp_path, directory):
    try:
        install = tmp_path / directory
        settings_ = service_settings("pi", str(install), 2048)
        text = service_unit(directory, settings_)
    except TildekitError:
        return
    if directory in (".", ".."):
        return
    case = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
    install = case / directory
    install.mkdir(parents=True)
    (install / "start.sh").write_text("#!/bin/sh\nexit 0\n")
    (install / "start.sh").chmod(0o755)
    unit = case / "t.service"
    unit.write_text(service_unit(directory, service_settings("pi", str(install), 2048)), encoding="utf-8")
    done = systemd_verify(unit)
    assert done.returncode == 0, repr(directory) + done.stdout + done.stderr
    assert unit_keys(text) == UNIT_KEYS

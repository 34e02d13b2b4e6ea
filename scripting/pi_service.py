"""The bundle's ``start.sh`` and systemd unit: `tildekit serve` headless on the Pi, started at boot.

Every value from outside (the model card's name, file names, folders, addresses) reaches these
files only through the writers of :mod:`tildekit.scripting.shell_quote` and
:mod:`tildekit.scripting.systemd_quote`, which quote it or reject it.

Exit statuses and what the unit does with them:

- 2 (a setup or input error: no venv, a bad setting, a bad model file): not restarted, the
  journal holds the one-line reason;
- 69 (:class:`tildekit.errors.DeviceUnavailable`: the sound card cannot be opened) and any other
  failure: restarted every ``RESTART_SEC`` seconds, at most ``START_LIMIT_BURST`` starts in
  ``START_LIMIT_INTERVAL_SEC`` seconds; then systemd stops trying and the unit stays failed.

OSC listens on 127.0.0.1 unless the bundle or the unit's environment names another address;
``OSC_ALLOW`` lists the senders (IPv4 and IPv6) that may control the engine.
"""

from __future__ import annotations

import ipaddress
import posixpath
from dataclasses import dataclass, field

from tildekit.errors import DeviceUnavailable, TildekitError
from tildekit.models.contract.hosts import DEFAULT_OSC_HOST, DEFAULT_OSC_PORT
from tildekit.scripting.shell_quote import shell_word, shown
from tildekit.scripting.systemd_quote import environment, exec_path, unit_text, user_name

START_SCRIPT = "start.sh"
UNIT_FILE = "tildekit.service"
CONFIG_ERROR_STATUS = TildekitError.exit_code  # 2: restarting cannot help
DEVICE_STATUS = DeviceUnavailable.exit_code  # 69
RESTART_SEC = 5
START_LIMIT_BURST = 5  # starts ...
START_LIMIT_INTERVAL_SEC = 120  # ... within this many seconds, then the unit stays failed


@dataclass(frozen=True)
class ServiceSettings:
    """Where and how the engine runs on the Pi (validated by :func:`service_settings`)."""

    user: str
    install_dir: str  # absolute, normalised
    buffer: int
    osc_port: int = DEFAULT_OSC_PORT
    osc_host: str = DEFAULT_OSC_HOST
    osc_allow: tuple[str, ...] = field(default_factory=tuple)  # sender addresses; empty: anyone
    threads: int = 1

    @property
    def start_path(self) -> str:
        return posixpath.join(self.install_dir, START_SCRIPT)


def ip_address(value: str, what: str) -> str:
    """An IPv4 or IPv6 address in its canonical spelling, or a one-line error."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise TildekitError(f"{what} {shown(value)}: not an IPv4 or IPv6 address "
                            f"(e.g. 127.0.0.1, 0.0.0.0, ::1, 192.168.1.20)") from None


def service_settings(user: str, install_dir: str, buffer: int, osc_port: int = DEFAULT_OSC_PORT,
                     osc_host: str = DEFAULT_OSC_HOST, osc_allow: tuple[str, ...] | list[str] = (),
                     threads: int = 1) -> ServiceSettings:
    """Check the settings once; the writers below quote them again when they write them."""
    if not 1 <= osc_port <= 65535:
        raise TildekitError(f"--osc-port {osc_port}: choose a UDP port from 1 to 65535")
    if buffer < 1 or threads < 1:
        raise TildekitError(f"buffer {buffer} and threads {threads} must be at least 1")
    settings = ServiceSettings(
        user=user_name(user), install_dir=install_dir, buffer=buffer, osc_port=osc_port,
        osc_host=ip_address(osc_host, "--osc-host"),
        osc_allow=tuple(dict.fromkeys(ip_address(a, "--osc-allow") for a in osc_allow)), threads=threads)
    exec_path(settings.start_path, "--install-dir")  # absolute, normalised, representable
    shell_word(settings.install_dir, "--install-dir")
    return settings


def start_script(model_file: str, settings: ServiceSettings, host_option: str = "--osc-host",
                 allow_option: str = "--osc-allow") -> str:
    """``start.sh``: runs the bundle's venv's `tildekit serve` on ``model_file`` (a name in the
    bundle folder) with the settings as defaults that the environment overrides."""
    if model_file in ("", ".", "..") or "/" in model_file:
        raise TildekitError(f"model file {shown(model_file)}: not a file name inside the bundle")
    model = shell_word(model_file, "model file")
    host = shell_word(settings.osc_host, "--osc-host")
    allow = shell_word(" ".join(settings.osc_allow), "--osc-allow")
    return f"""#!/usr/bin/env bash
# Start the tildekit engine headless: sound card in -> model -> sound card out, OSC control.
# Written by `tildekit bundle`. Settings come from the environment (the systemd unit sets them),
# else the defaults below. Extra arguments go to `tildekit serve`, e.g. without a sound card:
#   ./start.sh --input in.wav --output out.wav
# Exit status: 0 stopped; {CONFIG_ERROR_STATUS} a setup or input error (the unit does not retry it);
# {DEVICE_STATUS} the sound card cannot be opened (the unit retries a few times, then gives up).
set -euo pipefail
HERE="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
MODEL={model}
DEFAULT_OSC_HOST={host}
DEFAULT_OSC_PORT={shell_word(str(settings.osc_port), "--osc-port")}
DEFAULT_OSC_ALLOW={allow}
DEFAULT_BUFFER={shell_word(str(settings.buffer), "buffer")}
DEFAULT_THREADS={shell_word(str(settings.threads), "threads")}

TILDEKIT="${{TILDEKIT:-$HERE/venv/bin/tildekit}}"
if [ ! -x "$TILDEKIT" ]; then
    echo "start.sh: $TILDEKIT not found: install the tildekit runtime into $HERE/venv (README.md)" >&2
    exit {CONFIG_ERROR_STATUS}
fi
OSC_HOST="${{OSC_HOST:-$DEFAULT_OSC_HOST}}"     # 127.0.0.1: this machine only; 0.0.0.0 / :: the network
OSC_PORT="${{OSC_PORT:-$DEFAULT_OSC_PORT}}"
OSC_ALLOW="${{OSC_ALLOW-$DEFAULT_OSC_ALLOW}}"   # senders allowed (IPv4/IPv6, space-separated); empty: any
BUFFER="${{BUFFER:-$DEFAULT_BUFFER}}"
THREADS="${{THREADS:-$DEFAULT_THREADS}}"

ALLOWED=()
read -r -a ALLOWED <<< "$OSC_ALLOW" || true    # split on spaces, no glob expansion
ALLOW_ARGS=()
for address in ${{ALLOWED[@]+"${{ALLOWED[@]}}"}}; do
    ALLOW_ARGS+=({allow_option} "$address")
done
if [ "$#" -eq 0 ]; then
    set -- --device
fi
exec "$TILDEKIT" serve "$HERE/$MODEL" {host_option} "$OSC_HOST" --osc-port "$OSC_PORT" \\
    --buffer "$BUFFER" --threads "$THREADS" ${{ALLOW_ARGS[@]+"${{ALLOW_ARGS[@]}}"}} --verbose "$@"
"""


def service_unit(model_name: str, settings: ServiceSettings) -> str:
    """The systemd unit that runs ``start.sh`` at boot with bounded restarts."""
    name = unit_text(model_name, "the model card's name")
    env = [
        environment("OSC_HOST", settings.osc_host, "--osc-host"),
        environment("OSC_PORT", str(settings.osc_port), "--osc-port"),
        environment("OSC_ALLOW", " ".join(settings.osc_allow), "--osc-allow"),
        environment("BUFFER", str(settings.buffer), "buffer"),
        environment("THREADS", str(settings.threads), "threads"),
    ]
    return f"""# tildekit engine, written by `tildekit bundle` (install: README.md beside this file).
# Restarts on failure at most {START_LIMIT_BURST} times in {START_LIMIT_INTERVAL_SEC} s, then stays failed: `systemctl status` and
# `journalctl -u` show why. Exit {DEVICE_STATUS}: the sound card could not be opened (retried);
# exit {CONFIG_ERROR_STATUS}: a setup error such as a missing venv or a bad setting (not retried).
[Unit]
Description=tildekit engine: {name} (OSC on UDP port {settings.osc_port})
After=sound.target network-online.target
Wants=network-online.target
StartLimitIntervalSec={START_LIMIT_INTERVAL_SEC}
StartLimitBurst={START_LIMIT_BURST}

[Service]
Type=exec
User={user_name(settings.user)}
SupplementaryGroups=audio
# OSC_HOST=0.0.0.0 (IPv4) or :: (IPv6) opens it to the network; OSC_ALLOW lists the senders allowed.
Environment={" ".join(env)}
ExecStart={exec_path(settings.start_path, "--install-dir")}
Restart=on-failure
RestartSec={RESTART_SEC}
RestartPreventExitStatus={CONFIG_ERROR_STATUS}
Nice=-10
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=full

[Install]
WantedBy=multi-user.target
"""  # noqa: E501 (the unit file's comment lines are its documentation)

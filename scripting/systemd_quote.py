"""Values for the systemd unit tildekit writes (systemd.syntax(7), systemd.service(5)).

A unit file is line based: a newline (or a backslash ending a line) in a value would start a new
setting such as ``ExecStartPre=``, so every value from outside goes through one of these writers,
which quote what systemd reads back unchanged and reject the rest:

- :func:`unit_text` (``Description=``): printed as is, ``%`` doubled (specifiers);
- :func:`exec_path` (the executable of ``ExecStart=``): one double-quoted word, ``%`` doubled;
  systemd refuses ``"``, ``\\`` and ``'`` in an executable name, and ``$`` is kept out too;
- :func:`environment` (``Environment=``): one double-quoted ``NAME=value``, ``%`` doubled;
- :func:`user_name` (``User=``): a user name as ``useradd`` accepts it.

Control characters (newlines, tabs, ...), Unicode line/paragraph separators and format
characters (bidirectional overrides that make ``systemctl status`` show something else) are
rejected everywhere, and so is text that is not valid Unicode.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata

from tildekit.errors import TildekitError
from tildekit.scripting.shell_quote import shown

MAX_TEXT = 256  # a Description= is one line of `systemctl status`
MAX_PATH_BYTES = 4095  # PATH_MAX less the terminating NUL
_REJECTED_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}")
_NOT_IN_EXEC = "\"\\'$"
_NOT_IN_ENV = "\"\\'"


def _fail(what: str, value: str, problem: str) -> TildekitError:
    return TildekitError(f"{what} {shown(value)} {problem}: it cannot go into a systemd unit")


def _check_characters(value: str, what: str, forbidden: str = "") -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(what, value, "is not valid Unicode text") from None
    for char in value:
        if unicodedata.category(char) in _REJECTED_CATEGORIES:
            raise _fail(what, value, f"contains the control or format character U+{ord(char):04X}")
        if char in forbidden:
            raise _fail(what, value, f"contains {char!r}")


def _escape_specifiers(value: str) -> str:
    return value.replace("%", "%%")


def unit_text(value: str, what: str) -> str:
    """Free text for a setting read verbatim (``Description=``)."""
    _check_characters(value, what, forbidden="\\")
    if not value.strip():
        raise _fail(what, value, "is empty")
    if value != value.strip():
        raise _fail(what, value, "starts or ends with white space (systemd would drop it)")
    if len(value) > MAX_TEXT:
        raise _fail(what, value, f"is {len(value)} characters long (at most {MAX_TEXT})")
    return _escape_specifiers(value)


def exec_path(value: str, what: str) -> str:
    """An absolute, normalised executable path as the first word of ``ExecStart=``."""
    _check_characters(value, what, forbidden=_NOT_IN_EXEC)
    if not value.startswith("/"):
        raise _fail(what, value, "is not an absolute path")
    if posixpath.normpath(value) != value or value.startswith("//"):
        raise _fail(what, value, f"is not a normalised path (write {posixpath.normpath(value)!r})")
    if len(value.encode("utf-8")) > MAX_PATH_BYTES:
        raise _fail(what, value, f"is longer than {MAX_PATH_BYTES} bytes")
    return f'"{_escape_specifiers(value)}"'


def environment(name: str, value: str, what: str) -> str:
    """One ``Environment=`` assignment, ``"NAME=value"``."""
    if not _ENV_NAME.fullmatch(name):
        raise _fail("environment variable name", name, "is not a shell variable name")
    _check_characters(value, what, forbidden=_NOT_IN_ENV)
    if len(value) > MAX_PATH_BYTES:
        raise _fail(what, value, f"is longer than {MAX_PATH_BYTES} characters")
    return f'"{name}={_escape_specifiers(value)}"'


def user_name(value: str, what: str = "--user") -> str:
    """A system user name (letters, digits, '_' and '-', at most 32, not starting with a digit or '-')."""
    if not _USER.fullmatch(value):
        raise TildekitError(f"{what} {shown(value)}: not a user name (letters, digits, '_' and '-', "
                            f"at most 32, starting with a letter or '_')")
    return value

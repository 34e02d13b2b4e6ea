"""POSIX shell words for the scripts and copy-paste commands tildekit writes (the bundle's
``start.sh`` and README).

Every value from outside (a model file name, a folder, an address) becomes exactly one shell word:
bare when it is made of characters no shell treats specially, otherwise single-quoted, where
nothing is special but the quote itself (written ``'\\''``). What no shell word can carry is
rejected: NUL, text that is not valid Unicode (undecodable file names), over-long values.
"""

from __future__ import annotations

import re

from tildekit.errors import TildekitError

MAX_WORD_BYTES = 4096  # PATH_MAX: no path or address is longer
# No expansion, globbing or word splitting in bash, dash or zsh for these (zsh expands a leading
# "=" and "~", so both stay quoted).
_PLAIN = re.compile(r"[A-Za-z0-9_@+,./:-]+")


def shell_word_problem(value: str) -> str | None:
    """Why ``value`` cannot be one shell word, or None."""
    if "\0" in value:
        return "contains a NUL character"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode text (an undecodable file name?)"
    if size > MAX_WORD_BYTES:
        return f"is {size} bytes long (at most {MAX_WORD_BYTES})"
    return None


def shell_word(value: str, what: str) -> str:
    """``value`` as exactly one POSIX shell word; ``what`` names it in the error (e.g. "model file")."""
    problem = shell_word_problem(value)
    if problem is not None:
        raise TildekitError(f"{what} {shown(value)} {problem}: it cannot go into a shell script; rename it")
    if _PLAIN.fullmatch(value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


def shown(value: str) -> str:
    """A short one-line form of a rejected value for an error message (newlines and other
    unprintable characters escaped by repr)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

"""One rule for names that become file names, Pd/Max words and OSC address parts.

A model's name (``tildekit export --name``, the card's ``name``) ends up as a file stem
(``NAME.ts``, ``NAME-osc.pd``), as a word inside Pd and Max boxes and in OSC addresses. Rather
than escape it differently for each, it is restricted to an alphabet that means the same thing
everywhere: ASCII letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit, no
``..``, at most :data:`MAX_NAME_LENGTH` characters. Free text (descriptions, labels) is checked
by :func:`text_problem` and escaped by each writer instead.

No torch import: card readers and the CLI use this.
"""

from __future__ import annotations

import re
import unicodedata

from tildekit.errors import TildekitError

MAX_NAME_LENGTH = 64
NAME_ALPHABET = "letters, digits, '.', '_' and '-'"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Identifiers: attribute and method names, which TorchScript and nn~ use as method names too.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Unicode categories never allowed in free text: controls, format characters (bidi overrides,
# zero-width joiners), line/paragraph separators, surrogates, private use, unassigned.
_BAD_TEXT_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"}
SHOWN_LENGTH = 60  # characters of a hostile value quoted in an error message


def shown(value: object) -> str:
    """A hostile value, quoted for a one-line message: escaped (no newline) and shortened."""
    text = ascii(value)
    if len(text) <= SHOWN_LENGTH:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, (str, list, dict)) else ""
    return f"{text[:SHOWN_LENGTH - 4]}...{text[-1]}{size}"


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a safe name, or None when it is."""
    if not isinstance(name, str):
        return f"must be a text, got {type(name).__name__}"
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long (at most {MAX_NAME_LENGTH})"
    if "\0" in name:
        return "contains a NUL character"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if ".." in name:
        return "contains '..'"
    if not _SAFE_NAME.fullmatch(name):
        if not name[0].isascii() or not name[0].isalnum():
            return f"must start with an ASCII letter or digit and use only {NAME_ALPHABET}"
        return f"may only use {NAME_ALPHABET}"
    return None


def identifier_problem(name: object) -> str | None:
    """Why ``name`` is not an attribute/method identifier (``[A-Za-z_][A-Za-z0-9_]*``)."""
    if not isinstance(name, str):
        return f"must be a text, got {type(name).__name__}"
    if not name or len(name) > MAX_NAME_LENGTH:
        return f"must be 1..{MAX_NAME_LENGTH} characters long"
    if not _IDENTIFIER.fullmatch(name):
        return "may only use ASCII letters, digits and '_' and must not start with a digit"
    return None


def text_problem(text: object, max_length: int) -> str | None:
    """Why ``text`` is not acceptable free text (description, label), or None."""
    if not isinstance(text, str):
        return f"must be a text, got {type(text).__name__}"
    if len(text) > max_length:
        return f"is {len(text)} characters long (at most {max_length})"
    for ch in text:
        if unicodedata.category(ch) in _BAD_TEXT_CATEGORIES:
            return f"contains the control or invisible character U+{ord(ch):04X}"
    return None


def check_name(name: object, what: str) -> str:
    """``name`` if it is safe; otherwise TildekitError naming ``what`` and a safe suggestion."""
    problem = name_problem(name)
    if problem is None:
        return name  # type: ignore[return-value]
    suggestion = slug_name(name) if isinstance(name, str) else "my-model"
    raise TildekitError(f"{what} {shown(name)} {problem}: use only {NAME_ALPHABET} "
                        f"(at most {MAX_NAME_LENGTH}), e.g. {suggestion!r}")


def slug_name(text: str, fallback: str = "model") -> str:
    """A safe name made from ``text`` (a folder name, say): unsafe runs become '_'."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
    slug = re.sub(r"\.{2,}", ".", slug).lstrip("._-")[:MAX_NAME_LENGTH].rstrip("._-")
    return slug if slug and name_problem(slug) is None else fallback

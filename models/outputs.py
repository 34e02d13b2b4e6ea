"""Output folders: create them, recognise the ones tildekit made, replace only those.

A folder tildekit builds as a whole (a dataset) carries a marker file, :data:`MARKER_FILE`,
naming its kind. Such a folder is built under a hidden temporary sibling name and swapped in
when complete; the folder it replaces must carry the marker of the same kind and hold nothing
but what tildekit writes there. A folder without the marker is never emptied, replaced or
deleted: the user gets one line saying so.

Folders the user names for loose files (``export --out``, ``patch --out``) are only created
when missing; the files written there replace only files of the same name that tildekit
wrote (the caller says how to recognise them).

No torch import.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from tildekit.errors import TildekitError

MARKER_FILE = ".tildekit"
MARKER_TOOL = "tildekit"


def os_problem(exc: OSError) -> str:
    """``Permission denied``, ``Read-only file system``...: the reason, on one line."""
    reason = exc.strerror or (errno.errorcode.get(exc.errno or 0) if exc.errno else None) or str(exc)
    return " ".join(str(reason).split())


def output_dir(path: str | Path, what: str = "--out") -> Path:
    """``path`` as an existing, writable folder (created with its parents when missing)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TildekitError(f"{what} {path}: is a file, not a folder: name a folder (it is created "
                            f"when missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TildekitError(f"{what} {path}: cannot create this folder ({os_problem(exc)}): choose a "
                            f"folder you can write to") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise TildekitError(f"{what} {path}: this folder is not writable: choose a folder you can "
                            f"write to, or change its permissions")
    return path


def write_error(path: Path, exc: OSError, what: str = "--out") -> TildekitError:
    """The one-line error for a write that failed in a folder the user named."""
    return TildekitError(f"{what} {path}: cannot write there ({os_problem(exc)}): choose a folder "
                         f"you can write to; nothing was written")


# ------------------------------------------------------------------------------- markers


def write_marker(folder: Path, kind: str, **fields: object) -> None:
    (folder / MARKER_FILE).write_text(json.dumps({"tool": MARKER_TOOL, "kind": kind, **fields}) + "\n",
                                      encoding="utf-8")


def read_marker(folder: Path) -> dict | None:
    """The marker of ``folder``, or None when it has none (or not a tildekit one)."""
    try:
        data = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("tool") != MARKER_TOOL or not isinstance(data.get("kind"), str):
        return None
    return data


def is_owned(folder: Path, kind: str) -> bool:
    marker = read_marker(folder)
    return marker is not None and marker["kind"] == kind


def foreign_entries(folder: Path, allowed: Iterable[str]) -> list[str]:
    """Entries of ``folder`` that tildekit does not write there (besides its marker)."""
    keep = set(allowed) | {MARKER_FILE}
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def check_replaceable(folder: Path, kind: str, allowed: Iterable[str], what: str) -> None:
    """Refuse (one line) to replace ``folder`` unless it is missing, empty, or ours and clean."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise TildekitError(f"{what} {folder}: exists and is not a folder: choose a new folder name")
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise TildekitError(f"{what} {folder}: cannot read this folder ({os_problem(exc)})") from None
    if not entries:
        return
    if not is_owned(folder, kind):
        raise TildekitError(f"{what} {folder}: exists and is not a tildekit {kind} (no {MARKER_FILE} "
                            f"marker): tildekit never replaces such a folder; choose a new or empty folder")
    foreign = foreign_entries(folder, allowed)
    if foreign:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise TildekitError(f"{what} {folder}: holds files tildekit did not write ({listed}): move them "
                            f"out of the folder or choose another folder")


# ------------------------------------------------------------------------------- building


def build_dir(target: Path, kind: str, tag: str) -> Path:
    """A hidden, marked temporary sibling ``.<target>.<tag>XXXX`` to build ``target`` in."""
    parent = output_dir(target.parent, "output folder")
    try:
        path = Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}", dir=parent))
    except OSError as exc:
        raise write_error(parent, exc, "output folder") from None
    # mkdtemp makes it private (0700); the finished folder gets ordinary permissions.
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    write_marker(path, kind, building=os.getpid())
    return path


def finish_build(build: Path, kind: str) -> None:
    """The build is complete: its marker no longer names a builder."""
    write_marker(build, kind)


def remove_owned(folder: Path, kind: str) -> bool:
    """Delete ``folder`` only if it carries tildekit's marker of ``kind``; True when deleted."""
    if folder.is_symlink() or not is_owned(folder, kind):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def stale_builds(target: Path, kind: str, tag: str, alive: Callable[[int], bool]) -> list[Path]:
    """Marked temporary siblings of ``target`` whose builder process is gone."""
    return stale_folders(target.parent, f".{target.name}.{tag}*", kind, alive)


def stale_folders(parent: Path, pattern: str, kind: str, alive: Callable[[int], bool]) -> list[Path]:
    """Folders in ``parent`` matching ``pattern``, marked ``kind``, whose builder process is gone."""
    if not parent.is_dir():
        return []
    stale = []
    for candidate in parent.glob(pattern):
        marker = read_marker(candidate) if candidate.is_dir() and not candidate.is_symlink() else None
        if marker is None or marker["kind"] != kind:
            continue  # not ours: never touched
        pid = marker.get("building")
        if not isinstance(pid, int) or pid <= 0 or not alive(pid):
            stale.append(candidate)
    return stale


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def swap_in(build: Path, target: Path, kind: str, retired_tag: str) -> None:
    """Rename the finished ``build`` to ``target``; a previous ``target`` (ours) goes after that."""
    if not target.exists():
        build.rename(target)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.{retired_tag}", dir=target.parent))
    retired.rmdir()  # reserve a unique name, then move the old folder onto it
    target.rename(retired)
    try:
        build.rename(target)
    except BaseException:
        retired.rename(target)  # put the old folder back
        raise
    remove_owned(retired, kind)


def refuse_foreign_file(path: Path, is_ours: Callable[[Path], bool], what: str) -> None:
    """Refuse (one line) to overwrite ``path`` unless it is missing or tildekit wrote it."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_file() or not is_ours(path):
        raise TildekitError(f"{what} {path.parent}: {path.name} exists and was not written by tildekit: "
                            f"it is never overwritten; move it away or write to another folder or name")

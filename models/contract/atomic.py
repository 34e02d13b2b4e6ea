"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every writer goes through :func:`atomic_path`: the content is written to a hidden temporary
name in the destination's folder (same filesystem, so the final rename is atomic), flushed
to disk, then renamed over the destination with ``os.replace``. On any failure, including
Ctrl-C, the temporary file is removed and the destination is untouched.

No torch import; callers that save with a library (``torch.jit.save``, ``onnx.save``) write
to the yielded temporary path.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_MARK = ".tmp"  # every temporary name ends with this (plus the destination's suffix)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable; not every filesystem lets a folder be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The temporary name keeps ``path``'s suffix (some libraries choose the format by it).
    ``durable=False`` skips the fsyncs (for files that are cheap to rebuild).
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem[:40]}.", suffix=f"{TEMP_MARK}{path.suffix}",
                                dir=path.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        if durable:
            _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_folder(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, durable: bool = True) -> Path:
    path = Path(path)
    with atomic_path(path, durable) as temporary:
        temporary.write_bytes(data)
    return path


def atomic_write_text(path: str | Path, text: str, durable: bool = True) -> Path:
    """UTF-8, '\\n' line ends on every platform (patches and scores are shared between hosts)."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable)

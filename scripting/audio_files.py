"""Sound files in and out of the engine: checked before any audio is computed, written atomically.

``read_audio`` reads a whole input file with the model's channel count at its own rate, or says in
one line why it cannot. ``AtomicOutput`` checks an output path when it is created (a known extension, a
folder that exists or can be made, that is a folder and is writable: it creates the temporary
file there at once), writes under that temporary name and renames it when complete; nothing is
left behind on failure.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType

import numpy as np

from tildekit.errors import TildekitError
from tildekit.models.contract.audio import Undecodable, one_line, read_sound

# Extension -> (soundfile format, subtype). Float where the format has it: the engine's output is
# float and stays bit-exact; FLAC and Ogg store it at their own resolution.
OUTPUT_FORMATS: dict[str, tuple[str, str | None]] = {
    ".wav": ("WAV", "FLOAT"),
    ".flac": ("FLAC", "PCM_24"),
    ".ogg": ("OGG", "VORBIS"),
    ".aif": ("AIFF", "FLOAT"),
    ".aiff": ("AIFF", "FLOAT"),
    ".caf": ("CAF", "FLOAT"),
    ".w64": ("W64", "FLOAT"),
}


def read_audio(path: str | Path, channels: int, option: str = "--input") -> tuple[np.ndarray, int]:
    """An audio file as ((channels, frames) float32, its own sample rate), or a clear error.

    The one sound-file policy (models/contract/audio.py) without resampling: the engine plays a
    file at its own rate, as a host would.
    """
    path = Path(path)
    if not path.is_file():
        raise TildekitError(f"{option} {path}: no such file")
    try:
        return read_sound(path, channels)
    except Undecodable as exc:
        raise TildekitError(f"{option} {path}: not a readable sound file ({exc})") from None


def output_format(path: Path, option: str = "--output") -> tuple[str, str | None]:
    chosen = OUTPUT_FORMATS.get(path.suffix.lower())
    if chosen is None:
        known = ", ".join(OUTPUT_FORMATS)
        what = f"extension {path.suffix!r}" if path.suffix else "no extension"
        raise TildekitError(f"{option} {path}: {what} is not a sound file type tildekit writes: "
                            f"end the name with one of {known}")
    return chosen


class AtomicOutput:
    """One output sound file: checked and reserved on creation, complete or absent at the end."""

    def __init__(self, path: str | Path, option: str = "--output") -> None:
        self.path = Path(path)
        self.option = option
        if self.path.is_dir():
            raise TildekitError(f"{option} {self.path}: is a folder; give a file name such as "
                                f"{self.path / 'out.wav'}")
        self.format, self.subtype = output_format(self.path, option)
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise TildekitError(f"{option} {self.path}: {self._blocking_file(folder)} is a file, not a "
                                f"folder: choose another output folder") from None
        except OSError as exc:
            raise TildekitError(f"{option} {self.path}: cannot create the folder {folder} "
                                f"({one_line(exc)}): choose a writable output folder") from None
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{self.path.stem[:80]}.", suffix=".part", dir=folder)
        except OSError as exc:
            raise TildekitError(f"{option} {self.path}: cannot write in {folder} ({one_line(exc)}): "
                                f"choose a writable output folder") from None
        os.close(fd)
        self.temporary: Path | None = Path(temporary)

    @staticmethod
    def _blocking_file(folder: Path) -> Path:
        for candidate in [folder, *folder.parents]:
            if candidate.exists() and not candidate.is_dir():
                return candidate
        return folder

    def commit(self, audio: np.ndarray, rate: int) -> Path:
        """Write ``(channels, frames)`` audio and move it to the final name."""
        import soundfile as sf

        if self.temporary is None:
            raise TildekitError(f"{self.option} {self.path}: already written or discarded")
        try:
            sf.write(str(self.temporary), np.ascontiguousarray(audio.T), rate, format=self.format,
                     subtype=self.subtype)
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(self.temporary, 0o666 & ~mask)  # mkstemp made it private; a sound file is not
            os.replace(self.temporary, self.path)
        except (OSError, RuntimeError, sf.LibsndfileError) as exc:
            self.discard()
            raise TildekitError(f"{self.option} {self.path}: cannot write it ({one_line(exc)})") from None
        self.temporary = None
        return self.path

    def discard(self) -> None:
        if self.temporary is not None:
            self.temporary.unlink(missing_ok=True)
            self.temporary = None

    def __enter__(self) -> AtomicOutput:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.discard()

"""The runtime wheel: the installed tildekit's runtime modules (:mod:`tildekit.runtime`) as a wheel
of the ``tildekit-runtime`` distribution, written offline by ``tildekit bundle``.

    path = write_runtime_wheel(Path("voice-pi/wheels"))
    # -> voice-pi/wheels/tildekit_runtime-0.1.0-py3-none-any.whl

A wheel is a zip archive (PEP 427, PEP 491): the package files, then ``NAME-VERSION.dist-info/``
with ``METADATA`` (core metadata 2.1: name, version, Requires-Dist), ``WHEEL``,
``entry_points.txt`` (the ``tildekit`` command) and ``RECORD`` (sha256 and size of every file).
Entries are sorted and dated 1980-01-01, so the same sources give the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import zipfile
from pathlib import Path

import tildekit
from tildekit import runtime
from tildekit.errors import TildekitError

WHEEL_TAG = "py3-none-any"  # pure Python: one wheel for every machine
_DATE = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: reproducible archives
_VERSION = re.compile(r"\d+(\.\d+)*([abc]|rc|\.post|\.dev)?\d*")


def distribution_stem(version: str | None = None) -> str:
    """``tildekit_runtime-0.1.0`` (wheel file names use '_' in the distribution name)."""
    return f"{runtime.DISTRIBUTION.replace('-', '_')}-{version or tildekit.__version__}"


def wheel_name(version: str | None = None) -> str:
    return f"{distribution_stem(version)}-{WHEEL_TAG}.whl"


def _metadata(version: str) -> str:
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {runtime.DISTRIBUTION}",
        f"Version: {version}",
        "Summary: tildekit's runtime: the headless engine, OSC control, Pd/Max patches and ONNX checks, "
        "without torch",
        "License: MIT",
        f"Requires-Python: {runtime.REQUIRES_PYTHON}",
        *(f"Requires-Dist: {requirement}" for requirement in runtime.REQUIREMENTS),
    ]
    for extra, requirements in runtime.EXTRAS.items():
        lines.append(f"Provides-Extra: {extra}")
        lines.extend(f'Requires-Dist: {requirement}; extra == "{extra}"' for requirement in requirements)
    return "\n".join(lines) + "\n"


def _wheel_file() -> str:
    return (f"Wheel-Version: 1.0\nGenerator: tildekit {tildekit.__version__}\nRoot-Is-Purelib: true\n"
            f"Tag: {WHEEL_TAG}\n")


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return f"sha256={digest}"


def runtime_files(package: Path | None = None) -> dict[str, bytes]:
    """Archive path -> content of the package files: the runtime modules and the marker."""
    package = package or Path(tildekit.__file__).parent
    files: dict[str, bytes] = {}
    for relative in runtime.MODULES:
        source = package / relative
        if not source.is_file():
            raise TildekitError(f"this tildekit install has no {relative} (in {package}): reinstall tildekit, "
                                f"then bundle again")
        files[f"tildekit/{relative}"] = source.read_bytes()
    marker = {"distribution": runtime.DISTRIBUTION, "version": tildekit.__version__,
              "modules": list(runtime.MODULES), "left_out_commands": sorted(runtime.FULL_INSTALL_COMMANDS)}
    files[f"tildekit/{runtime.MARKER}"] = (json.dumps(marker, indent=1) + "\n").encode("utf-8")
    return files


def write_runtime_wheel(out_dir: Path) -> Path:
    """Write the runtime wheel into ``out_dir`` (which must exist); returns its path."""
    version = tildekit.__version__
    if not _VERSION.fullmatch(version):
        raise TildekitError(f"tildekit version {version!r} is not a release version a wheel can carry")
    dist_info = f"{distribution_stem(version)}.dist-info"
    files = runtime_files()
    files[f"{dist_info}/METADATA"] = _metadata(version).encode("utf-8")
    files[f"{dist_info}/WHEEL"] = _wheel_file().encode("utf-8")
    files[f"{dist_info}/entry_points.txt"] = b"[console_scripts]\ntildekit = tildekit.cli:main\n"
    files[f"{dist_info}/top_level.txt"] = b"tildekit\n"
    record_path = f"{dist_info}/RECORD"
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in sorted(files.items()))
    files[record_path] = (record + f"{record_path},,\n").encode("utf-8")

    path = out_dir / wheel_name(version)
    # Package files first, .dist-info last with RECORD at the very end (PEP 427's recommendation).
    order = sorted(files, key=lambda name: (name.startswith(dist_info), name == record_path, name))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in order:
            info = zipfile.ZipInfo(name, date_time=_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name])
    return path

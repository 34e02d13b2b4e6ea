"""Disk size of the Raspberry Pi bundle's install: a fresh venv plus the README's pip command
(the dependencies come from PyPI, so this needs the network), and the arm64 estimate (the same
requirements' manylinux aarch64 wheels for CPython 3.11, downloaded and unpacked).

    python benchmarks/runtime_install_size.py voice-pi        # a folder written by `tildekit bundle`

Target: <= 300 MB.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

TARGET_MB = 300
ARM64 = ["--platform", "manylinux_2_36_aarch64", "--platform", "manylinux_2_28_aarch64",
         "--platform", "manylinux_2_27_aarch64", "--platform", "manylinux2014_aarch64",
         "--python-version", "3.11", "--implementation", "cp", "--only-binary=:all:"]


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def main(bundle: Path) -> None:
    wheel = next((bundle / "wheels").glob("*.whl"))
    requirement = f"{wheel}[audio]"
    with tempfile.TemporaryDirectory() as scratch:
        venv = Path(scratch) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", requirement], check=True)
        site = next(venv.glob("lib/python*/site-packages"))
        total = size_mb(venv)
        print(f"venv after `pip install '{wheel.name}[audio]'` (this machine): {total:.0f} MB "
              f"(target <= {TARGET_MB} MB: {'met' if total <= TARGET_MB else 'NOT met'})")
        for path, mb in sorted(((p, size_mb(p)) for p in site.iterdir() if p.is_dir()), key=lambda x: -x[1])[:6]:
            print(f"  {path.name:<24} {mb:6.1f} MB")
        wheels, unpacked = Path(scratch) / "arm64", Path(scratch) / "arm64-site"
        subprocess.run([str(venv / "bin" / "pip"), "download", "-q", "-d", str(wheels), *ARM64, requirement],
                       check=True)
        for file in wheels.glob("*.whl"):
            zipfile.ZipFile(file).extractall(unpacked)
        tools = size_mb(site / "pip") + size_mb(next(site.glob("setuptools"), site / "setuptools"))
        print(f"arm64 (manylinux aarch64, CPython 3.11) packages unpacked: {size_mb(unpacked):.0f} MB, "
              f"with pip and setuptools: {size_mb(unpacked) + tools:.0f} MB (before .pyc files)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))

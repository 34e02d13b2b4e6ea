"""Dump every TorchScript operator schema of the running torch into a small data file.

Hosts such as nn~ and Neutone FX embed a fixed libtorch; a file exported with a newer torch
loads there only if every operator it calls exists in that libtorch. ``tildekit.export.ops``
checks exports against these dumps, so they are generated once per host libtorch, with that
exact torch installed in a side environment, and shipped with the package.

This script needs nothing but the standard library and torch (it does not import tildekit),
so it runs in a bare side venv:

    python3 -m venv /tmp/side-torch251
    /tmp/side-torch251/bin/pip install torch==2.5.1
    /tmp/side-torch251/bin/python export/make_op_schemas.py \\
        --note "nn~ 1.6 releases bundle libtorch 2.5.1"

It writes ``export/data/ops-torch-<version>.json.gz`` (local build suffixes such as
``+cpu`` are dropped): gzip JSON

    {"torch_version": "2.5.1",
     "generated_by": "export/make_op_schemas.py with torch 2.5.1 (Python 3.11.7)",
     "note": "...why this version, for which host...",
     "schemas": {"aten::add.Tensor": "aten::add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor",
                 "aten::cat": "aten::cat(Tensor[] tensors, int dim=0) -> Tensor", ...}}

Keys are ``namespace::name`` plus ``.overload`` when the overload name is not empty. The
output is deterministic (sorted keys, zero gzip timestamp), so regenerating an unchanged
version gives identical bytes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import sys
from pathlib import Path

from tildekit.models.contract.atomic import atomic_path

DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "data"


def schema_key(name: str, overload_name: str) -> str:
    return f"{name}.{overload_name}" if overload_name else name


def collect_schemas() -> dict[str, str]:
    """Every registered operator schema, keyed ``ns::name[.overload]``."""
    import torch

    schemas: dict[str, str] = {}
    for schema in torch._C._jit_get_all_schemas():
        key = schema_key(schema.name, schema.overload_name)
        # A few prim ops are registered more than once with the same name; any one proves
        # the operator exists, so keep the first for a stable file.
        schemas.setdefault(key, str(schema))
    return schemas


def public_version(version: str) -> str:
    return version.split("+", 1)[0]


def write_dump(out_dir: Path, note: str) -> Path:
    import torch

    version = public_version(torch.__version__)
    payload = {
        "torch_version": version,
        "generated_by": (f"export/make_op_schemas.py with torch {torch.__version__} "
                         f"(Python {platform.python_version()})"),
        "note": note,
        "schemas": dict(sorted(collect_schemas().items())),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"ops-torch-{version}.json.gz"
    raw = json.dumps(payload, indent=0, sort_keys=False).encode("utf-8")
    # mtime=0 and no file name in the header: same torch -> same bytes.
    with atomic_path(target) as tmp, open(tmp, "wb") as fh, \
            gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=9, mtime=0) as gz:
        gz.write(raw)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                        help=f"where to write ops-torch-<version>.json.gz (default {DEFAULT_OUT_DIR})")
    parser.add_argument("--note", default="",
                        help="why this torch version is dumped (which host bundles it)")
    args = parser.parse_args(argv)
    target = write_dump(args.out_dir, args.note)
    with gzip.open(target, "rt", encoding="utf-8") as fh:
        count = len(json.load(fh)["schemas"])
    print(f"wrote {target} ({count} schemas, {target.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The package's layers (docs/design.md): contract <- models <- export <- {patches, scripting} <- cli.

docs/dependency_graph.py declares them and reads every import with ast, lazy and relative ones
included; this test fails when the code drifts from the declaration or the graph in the docs.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_graph():
    spec = importlib.util.spec_from_file_location("dependency_graph", ROOT / "docs" / "dependency_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


graph = _load_graph()


def test_no_import_runs_against_the_layers() -> None:
    problems = graph.violations()
    assert not problems, "imports against the layering (docs/design.md):\n" + "\n".join(problems)


def test_every_module_is_in_a_declared_layer() -> None:
    modules = [graph.module_name(p) for p in graph.package_files()]
    assert "tildekit.models.contract.card" in modules and "tildekit.cli" in modules
    for module in modules:
        assert graph.layer_of(module) in graph.LAYERS


def test_no_module_imports_itself_through_others() -> None:
    """No import cycle anywhere, lazy imports included (a cycle inside a layer is still two
    modules that cannot be understood, tested or moved one without the other)."""
    assert graph.module_cycles() == []


def test_lazy_and_relative_imports_are_seen() -> None:
    code = ("import os\n"
            "from . import attributes\n"
            "from ..run import RunDir\n"
            "def later():\n"
            "    from tildekit.export.cli import describe_file\n"
            "    import tildekit.scripting.engine as engine\n")
    found = {i.target for i in graph.imports_in(code, "tildekit.models.contract.card")}
    assert found == {"os", "tildekit.models.contract.attributes", "tildekit.models.run", "tildekit.export.cli",
                     "tildekit.scripting.engine"}


@pytest.mark.parametrize("source,target,allowed", [
    ("tildekit.models.contract.card", "tildekit.errors", True),
    ("tildekit.models.contract.card", "tildekit.models.run", False),
    ("tildekit.export.cli", "tildekit.models.contract.hosts", True),
    ("tildekit.patches.spec", "tildekit.scripting.engine", False),  # siblings
    ("tildekit.scripting.bundle", "tildekit.patches.write", False),
    ("tildekit.models.trainer", "tildekit.cli", False),
    ("tildekit.cli", "tildekit.patches.write", True),
])
def test_the_rule(source: str, target: str, allowed: bool) -> None:
    src, dst = graph.layer_of(source), graph.layer_of(target)
    assert (src == dst or graph.LAYERS[dst] < graph.LAYERS[src]) is allowed


def test_design_doc_shows_the_graph_of_the_code() -> None:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    block = re.search(r"```mermaid\n(graph BT\n.*?)```", text, re.S)
    assert block is not None, "docs/design.md has no mermaid layer graph"
    assert block.group(1).strip() == graph.mermaid(), "regenerate it: python docs/dependency_graph.py"

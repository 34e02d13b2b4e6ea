"""The package's layers, declared, and its import graph, read from the code.

    python docs/dependency_graph.py            # mermaid graph of the layers, as in docs/design.md
    python docs/dependency_graph.py --text     # one line per edge, with the number of imports
    python docs/dependency_graph.py --check    # the imports that break the layering; exit 1 if any

Every ``import`` and ``from ... import`` is read with :mod:`ast`, wherever it stands (module
level, inside a function, under ``if TYPE_CHECKING``), relative or absolute: a lazy import is
still a dependency. tests/test_layering.py runs the same check.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository root is the `tildekit` package
PACKAGE = "tildekit"
SUB_PACKAGES = ("models", "export", "patches", "scripting")  # the rest of the root is not installed

# Lowest first. A module may import its own layer's modules and those of lower layers; layers of
# one rank are siblings and import neither each other nor anything above.
LAYERS: dict[str, int] = {
    "base": 0,       # tildekit/__init__ (version), errors, runtime: pure data, importable from anywhere
    "contract": 1,   # models/contract: the model card, names, host rules, atomic writes, audio reading
    "models": 2,     # training, preprocessing, streaming, resampling (torch)
    "export": 3,     # nn~ / Neutone / ONNX exporters, card embedding and reading, checks
    "patches": 4,    # Pd / Max patch generation
    "scripting": 4,  # OSC engine, scores, controller, bundle
    "cli": 5,        # the `tildekit` command and the demo
}
BASE_MODULES = {"tildekit", "tildekit.errors", "tildekit.runtime"}
CLI_MODULES = {"tildekit.cli", "tildekit.demo", "tildekit.__main__"}
# Beyond the standard library, what the contract layer may import (it must import without torch):
# soundfile and librosa only inside the functions that read sound files (contract/audio.py).
CONTRACT_THIRD_PARTY = {"numpy", "yaml", "soundfile", "librosa"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module (or name), dotted
    path: Path
    line: int


def module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_files() -> list[Path]:
    """The package's modules: the root's and each sub-package's, as pyproject.toml installs them."""
    files = list(ROOT.glob("*.py"))
    for folder in SUB_PACKAGES:
        files += [p for p in (ROOT / folder).rglob("*.py") if (p.parent / "__init__.py").is_file()]
    return sorted(files)


def imports_of(path: Path) -> list[Import]:
    """Every import in the file, resolved to an absolute dotted name."""
    return imports_in(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py", path)


def imports_in(text: str, source: str, is_package: bool = False, path: Path = ROOT) -> list[Import]:
    """Every import in ``text``, the code of module ``source``, wherever it stands."""
    package = source if is_package else source.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from tildekit.models import contract` imports the sub-package: name it.
            targets = [f"{stem}.{alias.name}" if _is_module(f"{stem}.{alias.name}") else stem
                       for alias in node.names]
        else:
            continue
        found.extend(Import(source, t, path, node.lineno) for t in dict.fromkeys(targets))
    return found


def _is_module(dotted: str) -> bool:
    if not dotted.startswith(PACKAGE + "."):
        return False
    relative = Path(*dotted.split(".")[1:])
    return (ROOT / relative).with_suffix(".py").is_file() or (ROOT / relative / "__init__.py").is_file()


def layer_of(module: str) -> str:
    if module in BASE_MODULES:
        return "base"
    if module in CLI_MODULES:
        return "cli"
    parts = module.split(".")
    if parts[1:3] == ["models", "contract"]:
        return "contract"
    if len(parts) > 1 and parts[1] in LAYERS:
        return parts[1]
    raise ValueError(f"{module}: in no declared layer (add it to docs/dependency_graph.py)")


def internal_imports() -> list[Import]:
    return [i for p in package_files() for i in imports_of(p)
            if i.target == PACKAGE or i.target.startswith(PACKAGE + ".")]


def violations() -> list[str]:
    """Imports against the declared layering, one line each (empty when the code follows it)."""
    problems = []
    for imp in internal_imports():
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src != dst and LAYERS[dst] >= LAYERS[src]:
            where = f"{imp.path.relative_to(ROOT)}:{imp.line}"
            kind = "sibling" if LAYERS[dst] == LAYERS[src] else "upward"
            problems.append(f"{where}: {src} -> {dst} ({kind}): imports {imp.target}")
    for path in package_files():
        if layer_of(module_name(path)) != "contract":
            continue
        for imp in imports_of(path):
            top = imp.target.split(".")[0]
            if top != PACKAGE and top not in sys.stdlib_module_names and top not in CONTRACT_THIRD_PARTY:
                problems.append(f"{path.relative_to(ROOT)}:{imp.line}: contract imports {imp.target} "
                                f"(only the standard library and " + ", ".join(sorted(CONTRACT_THIRD_PARTY)) + ")")
    return problems


def module_cycles() -> list[list[str]]:
    """Cycles between modules (any import, lazy ones included), each as a list of modules."""
    graph: dict[str, set[str]] = {}
    modules = {module_name(p) for p in package_files()}
    for imp in internal_imports():
        target = imp.target if imp.target in modules else imp.target.rpartition(".")[0]
        if target in modules and target != imp.source:
            graph.setdefault(imp.source, set()).add(target)
    # Tarjan's strongly connected components: every component of two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(modules):
        if node not in index:
            visit(node)
    return cycles


def layer_edges() -> Counter[tuple[str, str]]:
    return Counter((layer_of(i.source), layer_of(i.target)) for i in internal_imports()
                   if layer_of(i.source) != layer_of(i.target))


def mermaid() -> str:
    """The layers and which imports which (an arrow points at what is imported)."""
    lines = ["graph BT"]
    for src, dst in sorted(layer_edges()):
        lines.append(f"    {src} --> {dst}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", action="store_true", help="edges as text lines")
    parser.add_argument("--check", action="store_true", help="list the imports against the layering")
    args = parser.parse_args(argv)
    if args.check:
        problems = violations() + [" -> ".join(c) + " (cycle)" for c in module_cycles()]
        print("\n".join(problems) or "the imports follow the layering; no cycles")
        return 1 if problems else 0
    if args.text:
        for (src, dst), count in sorted(layer_edges().items()):
            print(f"{src} -> {dst}: {count}")
        return 0
    print(mermaid())
    return 0


if __name__ == "__main__":
    sys.exit(main())

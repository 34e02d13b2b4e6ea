"""Host-operator compatibility: does every operator of an export exist in the host's libtorch?

nn~ 1.6 bundles libtorch 2.5.1; a TorchScript file saved by a newer torch loads there only if
every operator it calls exists in 2.5.1 (else "Unknown builtin op"). The shipped data files
``data/ops-torch-<version>.json.gz`` (made by ``make_op_schemas.py`` with that exact torch)
hold every operator schema of a host's libtorch; this module checks scripted modules
against them with the torch that is running here.

How the check mirrors the host. A TorchScript archive stores Python-like source (``code/``),
not compiled graphs: ``torch.slice(x, -1, None, None, 2)``, ``torch.mm(a, b, 6)``,
``torch.rand_like(x, generator=None)``. The host compiles that text again, so it looks up each
operator by *name* and then picks whichever of its own overloads accepts the written
arguments. The saver writes only the arguments that differ from their defaults (trailing
defaulted arguments are left out, so operators that merely gained optional arguments keep
loading), keyword-only arguments by name. So an operator fails on a host when

- its name is unknown there (``aten::hash_tensor`` in 2.5.1), or
- none of the host's overloads of that name accepts the arguments as written: the 2.13
  overload used has no counterpart and the call passes more positional arguments or a
  keyword the host does not know (``torch.mm(a, b, out_dtype=...)`` is ``aten::mm.dtype``,
  new since 2.5.1, written as ``torch.mm(a, b, 6)``).

Both are reported; an overload name missing from the host is *not* an error on its own
when another host overload accepts the call, because that is what the host will pick.
Structural nodes without a schema (``prim::Constant``, ``prim::If``, ``prim::GetAttr``, ...) are
syntax, not operators, and are skipped; other ``prim::`` operators are checked like ``aten::``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

from ..errors import TildekitError

DATA_DIR = Path(__file__).resolve().parent / "data"

# Host name -> schema dump of the libtorch it bundles (see data/*.json.gz "note" for why).
HOSTS: dict[str, str] = {
    "nn~ 1.6 (libtorch 2.5.1)": "ops-torch-2.5.1.json.gz",
    # The Neutone FX plugin does not publish its libtorch; neutone_sdk 1.5.x accepts
    # torch>=1.11, which has no Python 3.11 wheel, so 1.13.0 (closest installable) stands in.
    "Neutone FX (assumed libtorch 1.13.0, neutone_sdk 1.5 floor)": "ops-torch-1.13.0.json.gz",
}


@dataclass(frozen=True)
class HostOps:
    """The operator schemas of one host's libtorch."""

    host: str
    torch_version: str
    schemas: dict[str, str]  # "ns::name[.overload]" -> schema text
    overloads: dict[str, tuple[str, ...]]  # "ns::name" -> its keys in `schemas`


@dataclass(frozen=True)
class Offender:
    """An operator of an export that the host's libtorch cannot resolve."""

    operator: str  # "aten::mm.dtype"
    schema: str  # the exporting torch's schema of that overload
    host: str
    methods: tuple[str, ...]  # qualified methods using it: "forward", "decoder.net.forward"
    reason: str = ""

    def message(self) -> str:
        return (f"{self.operator} (used by {', '.join(self.methods)}) breaks {self.host}: "
                f"{self.reason}")


@dataclass(frozen=True, eq=False)
class _Call:
    """One operator call as the archive writes it (equal when written alike)."""

    key: str  # "ns::name[.overload]" of the exporting torch
    name: str  # "ns::name"
    schema: str
    positional: tuple[torch._C.Type, ...]  # types of the positional arguments written
    keywords: tuple[tuple[str, torch._C.Type], ...]  # keyword arguments written
    written: tuple[str, ...] = ()  # names of all written arguments, for messages

    @property
    def signature(self) -> tuple[str, ...]:  # torch._C.Type is not hashable: compare text
        return (self.key, *map(str, self.positional), *(f"{n}={t}" for n, t in self.keywords))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Call) and self.signature == other.signature

    def __hash__(self) -> int:
        return hash(self.signature)


# ---------------------------------------------------------------- host data


def _split_key(key: str) -> str:
    """``aten::add.Tensor`` -> ``aten::add`` (operator names never contain a dot)."""
    ns, _, rest = key.partition("::")
    return f"{ns}::{rest.split('.', 1)[0]}"


@cache
def load_host_ops(data_file: str, host: str = "") -> HostOps:
    """Read one shipped schema dump (cached: each file is parsed once per process)."""
    path = DATA_DIR / data_file
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
        schemas: dict[str, str] = data["schemas"]
        version = str(data["torch_version"])
    except FileNotFoundError:
        raise TildekitError(
            f"operator data file {path} is missing: reinstall tildekit, or regenerate it with "
            f"export/make_op_schemas.py in an environment with that torch") from None
    except (OSError, ValueError, KeyError) as exc:
        raise TildekitError(f"operator data file {path} is unreadable ({exc}): reinstall "
                            f"tildekit or regenerate it with export/make_op_schemas.py") from None
    overloads: dict[str, list[str]] = {}
    for key in schemas:
        overloads.setdefault(_split_key(key), []).append(key)
    return HostOps(host or data_file, version, schemas,
                   {name: tuple(keys) for name, keys in overloads.items()})


def host_ops(hosts: Iterable[str] | None = None) -> list[HostOps]:
    """The schema sets of the named hosts (default: every host in HOSTS)."""
    names = list(HOSTS) if hosts is None else list(hosts)
    unknown = [h for h in names if h not in HOSTS]
    if unknown:
        raise TildekitError(f"unknown host {unknown[0]!r}: choose one of {', '.join(HOSTS)}")
    return [load_host_ops(HOSTS[h], h) for h in names]


@cache
def _parse_schema(text: str) -> torch._C.FunctionSchema | None:
    try:
        return torch._C.parse_schema(text)
    except RuntimeError:  # a host type this torch no longer parses: judged by name only
        return None


# ---------------------------------------------------------------- graph walk


def _module_methods(module: torch.jit.ScriptModule) -> Iterator[tuple[str, str, Any]]:
    """(qualified name, type key, method) of every method of the module and its submodules."""
    for prefix, sub in module.named_modules():
        c_module = getattr(sub, "_c", None)
        if c_module is None:
            continue
        # Submodules of one script type share their compiled methods: analyse each once.
        type_name = c_module._type().qualified_name()
        for name in c_module._method_names():
            yield (f"{prefix}.{name}" if prefix else name), f"{type_name}.{name}", \
                c_module._get_method(name)


def _inlined(method: Any) -> torch._C.Graph:
    graph = method.graph.copy()
    # Inline calls so operators of functions (torch.nn.functional.*), of script classes and
    # of submodules are attributed to the method that runs them.
    torch._C._jit_pass_inline(graph)
    return graph


def _nodes(block: Any) -> Iterator[torch._C.Node]:
    for node in block.nodes():
        yield node
        for sub in node.blocks():
            yield from _nodes(sub)


def _same_value(default: Any, value: Any) -> bool:
    try:
        return bool(default == value) and type(default) is type(value)
    except (RuntimeError, TypeError):  # tensors and other values without plain equality
        return False


def _written_call(node: torch._C.Node, schema: torch._C.FunctionSchema, text: str) -> _Call:
    """The arguments the archive's code writes for this node.

    Mirrors the TorchScript printer: trailing `out=` arguments are written by name, and
    trailing arguments whose constant value equals the schema default are left out.
    """
    args = list(schema.arguments)
    inputs = list(node.inputs())
    key = f"{schema.name}.{schema.overload_name}" if schema.overload_name else schema.name
    if len(inputs) > len(args):  # varargs (aten::format): everything is written positionally
        return _Call(key, schema.name, text, tuple(v.type() for v in inputs), (), ())
    last = len(args) - 1
    while last >= 0 and args[last].is_out:
        last -= 1
    outs = range(last + 1, len(args))
    needed = last + 1
    while needed > 0:
        arg, value = args[needed - 1], inputs[needed - 1]
        if not arg.has_default_value() or value.node().kind() != "prim::Constant":
            break
        if not _same_value(arg.default_value, value.toIValue()):
            break
        needed -= 1
    positional = tuple(inputs[i].type() for i in range(needed) if not args[i].kwarg_only)
    keywords = tuple((args[i].name, inputs[i].type())
                     for i in [*range(needed), *outs] if args[i].kwarg_only or args[i].is_out)
    written = tuple(args[i].name for i in [*range(needed), *outs])
    return _Call(key, schema.name, text, positional, keywords, written)


def _calls(module: torch.jit.ScriptModule) -> dict[_Call | str, set[str]]:
    """Every operator call (or schema-less node kind) -> the methods that contain it."""
    per_type: dict[str, set[_Call | str]] = {}
    found: dict[_Call | str, set[str]] = {}
    for method_name, type_key, method in _module_methods(module):
        entries = per_type.get(type_key)
        if entries is None:
            entries = per_type[type_key] = set()
            for node in _nodes(_inlined(method)):
                text = node.schema()
                schema = _parse_schema(text) if text != "(no schema)" else None
                entries.add(node.kind() if schema is None else _written_call(node, schema, text))
        for entry in entries:
            found.setdefault(entry, set()).add(method_name)
    return found


def graph_operators(module: torch.jit.ScriptModule) -> dict[str, set[str]]:
    """Operator (``aten::slice.Tensor``; node kind when it has no schema) -> methods using it.

    Covers every method of the module and of all its submodules, with called functions and
    methods inlined, so an operator used inside a submodule is listed both under that
    submodule's method and under each method that calls it.
    """
    ops: dict[str, set[str]] = {}
    for entry, methods in _calls(module).items():
        key = entry if isinstance(entry, str) else entry.key
        ops.setdefault(key, set()).update(methods)
    return ops


# ---------------------------------------------------------------- matching


_NUMBERS = ("int", "float", "complex", "bool", "number", "Scalar", "SymInt", "SymFloat", "SymBool")


def _fits_type(value: torch._C.Type, wanted: torch._C.Type) -> bool:
    """Could the host's compiler pass a value of this type for that argument? Lenient:
    TorchScript converts between number kinds and 0-dim tensors, and a wrong 'no' here would
    be a false alarm."""
    if value.isSubtypeOf(wanted):
        return True
    target = wanted.getElementType() if isinstance(wanted, torch._C.OptionalType) else wanted
    names = (str(value), str(target))
    if all(any(n.startswith(k) for k in (*_NUMBERS, "Tensor")) for n in names):
        return True  # number <-> Scalar/float/int, tensor <-> number conversions
    return str(value).replace("SymInt", "int") == str(target).replace("SymInt", "int")


def _accepts(host_text: str, call: _Call, same_overload: bool) -> bool:
    """Would the host's compiler match the written call to this host schema?"""
    schema = _parse_schema(host_text)
    if schema is None:
        return same_overload  # unparsable here: trust the overload name alone
    args = list(schema.arguments)
    positional = [a for a in args if not a.kwarg_only]
    if host_text.rstrip().split("->")[0].rstrip(" )").endswith("..."):
        return True  # varargs (aten::format(str self, ...)): takes whatever is written
    if len(call.positional) > len(positional):
        return False
    given = {a.name for a in positional[:len(call.positional)]}
    by_name = {a.name: a for a in args}
    for name, _ in call.keywords:
        if name not in by_name or name in given:
            return False
        given.add(name)
    if any(a.name not in given and not a.has_default_value() for a in args):
        return False
    if same_overload:  # same overload name: the types are the same operator's
        return True
    typed = [*zip(call.positional, positional), *((t, by_name[n]) for n, t in call.keywords)]
    return all(_fits_type(t, a.type) for t, a in typed)


def _host_problem(call: _Call, host: HostOps) -> str | None:
    """Why the host cannot resolve this call, or None when it can."""
    keys = host.overloads.get(call.name)
    if not keys:
        return (f"libtorch {host.torch_version} has no operator {call.name} "
                f"(loading fails with 'Unknown builtin op: {call.name}')")
    if call.key in host.schemas and _accepts(host.schemas[call.key], call, same_overload=True):
        return None
    if any(_accepts(host.schemas[k], call, same_overload=(k == call.key)) for k in keys):
        return None
    if call.key not in host.schemas:
        return (f"libtorch {host.torch_version} has {call.name} but not the overload "
                f"{call.key}, and none of its overloads accepts the arguments this call "
                f"passes (loading fails with 'Arguments for call are not valid')")
    host_schema = _parse_schema(host.schemas[call.key])
    known = {a.name for a in host_schema.arguments} if host_schema is not None else set()
    extra = [n for n in call.written if known and n not in known]
    passes = (f"argument {', '.join(extra)}, which it lacks" if extra
              else "arguments it does not accept")
    return (f"this call passes {call.key} the {passes} in libtorch {host.torch_version} "
            f"('{host.schemas[call.key]}'; loading fails with 'Arguments for call are not valid')")


def check_operators(module: torch.jit.ScriptModule,
                    hosts: Iterable[str] | None = None) -> list[Offender]:
    """Operators of ``module`` (all methods, all submodules) that a host cannot load.

    ``hosts`` names entries of HOSTS (default: all). One Offender per (operator, host),
    sorted by host then operator.
    """
    targets = host_ops(hosts)
    merged: dict[tuple[str, str], tuple[str, str, set[str]]] = {}
    for entry, methods in _calls(module).items():
        if isinstance(entry, str):
            continue  # structural node without a schema (prim::Constant, prim::If, ...)
        for host in targets:
            reason = _host_problem(entry, host)
            if reason is not None:
                slot = merged.setdefault((host.host, entry.key), (entry.schema, reason, set()))
                slot[2].update(methods)
    return [Offender(op, schema, host, tuple(sorted(methods)), reason)
            for (host, op), (schema, reason, methods) in sorted(merged.items())]


def require_host_operators(module: torch.jit.ScriptModule, what: str,
                           hosts: Iterable[str] | None = None) -> None:
    """Raise TildekitError naming every offending operator and the host it breaks."""
    offenders = check_operators(module, hosts)
    if offenders:
        details = "; ".join(o.message() for o in offenders)
        raise TildekitError(
            f"{what} uses operators that a host's libtorch lacks: {details}. Rewrite those "
            f"calls with older operators (TorchScript keeps every branch of a called library "
            f"function such as F.interpolate, so an unused branch counts too), or export "
            f"with the host's torch version")

"""Host-operator check: exports must only call operators the hosts' libtorch has.

The expectations below were confirmed by really loading archives saved with torch 2.13 in
torch 2.5.1 and 1.13.0 side environments (see export/ops.py); CI has no such environment,
so these tests use the shipped schema dumps only.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tildekit.errors import TildekitError
from tildekit.export.ops import DATA_DIR, HOSTS, check_operators, graph_operators, load_host_ops, require_host_operators

NN_TILDE = "nn~ 1.6 (libtorch 2.5.1)"
NEUTONE = next(h for h in HOSTS if h.startswith("Neutone FX"))


class ConvNet(nn.Module):
    """conv1d, cat, tanh and slicing: what the streaming models are made of."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 5, padding=2)
        self.out = nn.Conv1d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.conv(x))
        y = torch.cat([y, -y], 1)[:, :, : x.shape[-1]]
        return self.out(y[..., ::1])


class HashTensor(nn.Module):
    """aten::hash_tensor is new since 2.5.1: 'Unknown builtin op' in nn~."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.hash_tensor(x)


class RmsNorm(nn.Module):
    """aten::rms_norm exists in 2.5.1 (new in 2.4), not in 1.13."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.rms_norm(x, [x.shape[-1]])


class MatMulOutDtype(nn.Module):
    """The out_dtype form selects aten::mm.dtype, an overload new since 2.5.1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mm(x, x, out_dtype=torch.float32)


class MatMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mm(x, x)


class DeadBranch(nn.Module):
    """A branch never taken is still compiled, saved, and compiled again by the host."""

    def __init__(self) -> None:
        super().__init__()
        self.never = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.never:
            return torch.hash_tensor(x)
        return x


class ChangedSchemas(nn.Module):
    """Operators whose 2.13 schema differs from 2.5.1 but whose written calls still load."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tril's diagonal became SymInt; squeeze.dims (int[]) exists since 2.0
        return torch.squeeze(torch.tril(x, 1), [0])


class Leaf(nn.Module):
    @torch.jit.export
    def probe(self, x: torch.Tensor) -> torch.Tensor:  # never called by forward
        return torch.hash_tensor(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Sequential(Leaf())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def script(module: nn.Module) -> torch.jit.ScriptModule:
    return torch.jit.script(module.eval())


def offenders_by_host(module: nn.Module) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {h: [] for h in HOSTS}
    for o in check_operators(script(module)):
        found[o.host].append(o.operator)
    return found


def test_every_shipped_data_file_loads_and_has_conv1d() -> None:
    files = sorted(DATA_DIR.glob("ops-torch-*.json.gz"))
    assert files, "no operator data shipped"
    assert set(HOSTS.values()) <= {f.name for f in files}
    for path in files:
        ops = load_host_ops(path.name)
        assert path.name == f"ops-torch-{ops.torch_version}.json.gz"
        assert "aten::conv1d" in ops.schemas
        assert ops.schemas["aten::conv1d"].startswith("aten::conv1d(Tensor input")
        assert "aten::cat" in ops.overloads and "aten::slice.Tensor" in ops.schemas
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            header = json.load(fh)
        assert header["generated_by"].startswith("export/make_op_schemas.py")
        assert path.stat().st_size < 1_000_000


def test_conv_cat_tanh_slicing_passes_every_host() -> None:
    assert check_operators(script(ConvNet())) == []


def test_new_operator_is_flagged_with_host_and_method() -> None:
    offenders = check_operators(script(HashTensor()))
    assert {o.host for o in offenders} == set(HOSTS)
    nn_tilde = next(o for o in offenders if o.host == NN_TILDE)
    assert nn_tilde.operator == "aten::hash_tensor"
    assert nn_tilde.methods == ("forward",)
    assert "Unknown builtin op: aten::hash_tensor" in nn_tilde.message()
    assert NN_TILDE in nn_tilde.message()


def test_rms_norm_loads_in_nn_tilde_but_not_in_the_neutone_floor() -> None:
    found = offenders_by_host(RmsNorm())
    assert found[NN_TILDE] == []
    assert found[NEUTONE] == ["aten::rms_norm"]


def test_overload_new_since_host_is_flagged_precisely() -> None:
    found = offenders_by_host(MatMulOutDtype())
    assert found[NN_TILDE] == ["aten::mm.dtype"]
    assert offenders_by_host(MatMul()) == {h: [] for h in HOSTS}


def test_operator_on_a_branch_never_taken_still_counts() -> None:
    assert offenders_by_host(DeadBranch())[NN_TILDE] == ["aten::hash_tensor"]


def test_changed_schemas_that_still_load_are_not_flagged() -> None:
    found = offenders_by_host(ChangedSchemas())
    assert found[NN_TILDE] == []
    assert found[NEUTONE] == ["aten::squeeze.dims"]  # squeeze(x, [dims]) is new since 2.0


def test_graph_operators_cover_every_method_of_every_submodule() -> None:
    ops = graph_operators(script(Outer()))
    assert ops["aten::hash_tensor"] == {"inner.0.probe"}
    assert ops["aten::relu"] == {"forward", "inner.forward", "inner.0.forward"}
    offenders = check_operators(script(Outer()), [NN_TILDE])
    assert [(o.operator, o.methods) for o in offenders] == [("aten::hash_tensor", ("inner.0.probe",))]


def test_functions_called_from_methods_are_inlined() -> None:
    ops = graph_operators(script(RmsNorm()))
    assert "forward" in ops["aten::rms_norm"]  # called inside torch.nn.functional.rms_norm


def test_saved_and_reloaded_archive_gives_the_same_verdict(tmp_path: Path) -> None:
    path = tmp_path / "model.ts"
    script(MatMulOutDtype()).save(str(path))
    loaded = torch.jit.load(str(path))
    assert [o.operator for o in check_operators(loaded, [NN_TILDE])] == ["aten::mm.dtype"]


def test_require_host_operators_names_offender_and_host() -> None:
    require_host_operators(script(ConvNet()), "model.ts")
    with pytest.raises(TildekitError) as err:
        require_host_operators(script(HashTensor()), "model.ts", [NN_TILDE])
    text = str(err.value)
    assert "model.ts" in text and "aten::hash_tensor" in text and NN_TILDE in text


def test_unknown_host_is_a_clear_error() -> None:
    with pytest.raises(TildekitError, match="unknown host"):
        check_operators(script(ConvNet()), ["Max 9"])

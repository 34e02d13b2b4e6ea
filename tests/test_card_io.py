"""The model card travels inside exported files and is read back without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import onnx
import pytest
import torch

from tests.conftest import make_card
from tildekit.errors import TildekitError
from tildekit.export.card_io import card_extra_files, read_card, set_onnx_card
from tildekit.models.contract.card import CARD_FILE_NAME, CARD_FORMAT, ModelCard

pytestmark = pytest.mark.filterwarnings(r"ignore:.torch\.(jit|onnx):DeprecationWarning")


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _save_ts(path: Path, extra: dict[str, str] | None) -> Path:
    module = torch.jit.script(Tiny())
    torch.jit.save(module, str(path), _extra_files=extra or {})
    return path


@pytest.mark.parametrize("suffix", [".ts", ".nm"])
def test_torchscript_round_trip(tmp_path: Path, tiny_card: ModelCard, suffix: str) -> None:
    path = _save_ts(tmp_path / f"tiny{suffix}", card_extra_files(tiny_card))
    assert read_card(path) == tiny_card
    # torch itself sees the same extra file, so hosts that read it through libtorch agree.
    files = {CARD_FILE_NAME: ""}
    torch.jit.load(str(path), _extra_files=files)
    assert ModelCard.from_json(files[CARD_FILE_NAME]) == tiny_card


def test_archive_root_name_does_not_matter(tmp_path: Path, tiny_card: ModelCard) -> None:
    path = _save_ts(tmp_path / "original_name.ts", card_extra_files(tiny_card))
    renamed = tmp_path / "renamed.ts"
    path.rename(renamed)
    assert read_card(renamed) == tiny_card


def test_read_card_does_not_import_torch(tmp_path: Path, tiny_card: ModelCard) -> None:
    path = _save_ts(tmp_path / "tiny.ts", card_extra_files(tiny_card))
    code = ("import sys; from tildekit.export.card_io import read_card; "
            f"card = read_card({str(path)!r}); assert 'torch' not in sys.modules, 'torch imported'; "
            "print(card.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == tiny_card.name


def test_json_card(tmp_path: Path, tiny_card: ModelCard) -> None:
    path = tmp_path / "tiny.json"
    path.write_text(tiny_card.to_json())
    assert read_card(path) == tiny_card


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TildekitError, match="does not exist"):
        read_card(tmp_path / "nope.ts")


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"x")
    with pytest.raises(TildekitError, match="unknown model file type '.pt'"):
        read_card(path)


def test_truncated_archive(tmp_path: Path, tiny_card: ModelCard) -> None:
    path = _save_ts(tmp_path / "tiny.ts", card_extra_files(tiny_card))
    data = path.read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(TildekitError, match="not a TorchScript archive.*re-export it") as info:
        read_card(cut)
    assert "\n" not in str(info.value)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.nm"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(TildekitError, match="not a TorchScript archive.*re-export it"):
        read_card(path)


def test_zip_that_is_not_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "other.ts"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(TildekitError, match="not a TorchScript archive"):
        read_card(path)


def test_archive_without_card(tmp_path: Path) -> None:
    path = _save_ts(tmp_path / "plain.ts", None)
    with pytest.raises(TildekitError, match="exported without tildekit or by an older version"):
        read_card(path)


def test_card_from_newer_tildekit(tmp_path: Path, tiny_card: ModelCard) -> None:
    data = json.loads(tiny_card.to_json())
    data["card_format"] = CARD_FORMAT + 1
    path = _save_ts(tmp_path / "future.ts", {CARD_FILE_NAME: json.dumps(data)})
    with pytest.raises(TildekitError, match="newer than this tildekit.*upgrade tildekit") as info:
        read_card(path)
    assert str(path) in str(info.value)


def test_malformed_card_inside(tmp_path: Path) -> None:
    path = _save_ts(tmp_path / "bad.ts", {CARD_FILE_NAME: "{not json"})
    with pytest.raises(TildekitError, match="not valid JSON"):
        read_card(path)


def _export_onnx(path: Path) -> onnx.ModelProto:
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(12, 3))
    torch.onnx.export(model.eval(), (torch.zeros(1, 1, 8),), str(path), dynamo=False)
    return onnx.load(str(path))


def test_onnx_round_trip(tmp_path: Path) -> None:
    card = make_card(latent_size=3)
    path = tmp_path / "tiny.onnx"
    proto = _export_onnx(path)
    set_onnx_card(proto, card)
    set_onnx_card(proto, card)  # idempotent: one property, not two
    assert sum(p.key == "tildekit.card" for p in proto.metadata_props) == 1
    onnx.save(proto, str(path))
    assert read_card(path) == card
    onnx.checker.check_model(str(path))


def test_onnx_without_card(tmp_path: Path) -> None:
    path = tmp_path / "plain.onnx"
    _export_onnx(path)
    with pytest.raises(TildekitError, match="exported without tildekit"):
        read_card(path)


def test_onnx_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(TildekitError, match="not a readable ONNX model"):
        read_card(path)

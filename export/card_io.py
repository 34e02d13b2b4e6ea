"""Embed the model card in exported files and read it back.

TorchScript (``.ts``) and Neutone (``.nm``) files are zip archives written by
``torch.jit.save``; the card travels as the extra file ``<root>/extra/tildekit.json``. Reading it
goes straight through :mod:`zipfile`: no torch import, no model load, so ``tildekit patch`` and
the OSC tools start in milliseconds. ONNX files carry the card as the metadata property
``tildekit.card``. A ``.json`` path is read as a bare card (handy for tests and hand-made cards).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from tildekit.errors import TildekitError
from tildekit.models.contract.card import CARD_FILE_NAME, CARD_ONNX_KEY, CardError, ModelCard
from tildekit.models.contract.card_check import MAX_CARD_BYTES

if TYPE_CHECKING:  # onnx is only imported when an .onnx file is actually read
    import onnx

TORCHSCRIPT_SUFFIXES = (".ts", ".nm")
CARD_MEMBER_SUFFIX = f"/extra/{CARD_FILE_NAME}"
SUPPORTED = ".ts, .nm, .onnx or .json"


class MissingCardError(TildekitError):
    """A readable model file that carries no tildekit card (exported by another tool)."""


def card_extra_files(card: ModelCard) -> dict[str, str]:
    """The ``_extra_files`` mapping to pass to ``torch.jit.save`` so the card travels with the model."""
    return {CARD_FILE_NAME: card.to_json()}


def set_onnx_card(model_proto: onnx.ModelProto, card: ModelCard) -> None:
    """Store the card in ``model_proto.metadata_props`` (replacing any previous card)."""
    for prop in list(model_proto.metadata_props):
        if prop.key == CARD_ONNX_KEY:
            model_proto.metadata_props.remove(prop)
    prop = model_proto.metadata_props.add()
    prop.key = CARD_ONNX_KEY
    prop.value = card.to_json()


def model_card(path: str | Path, *, measure_delays: bool = True) -> ModelCard:
    """The embedded tildekit card, or, for an nn~ ``.ts`` without one, a card derived from the
    file (export/foreign_nn.py, which loads torch: only then)."""
    path = Path(path)
    try:
        return read_card(path)
    except MissingCardError:
        if path.suffix.lower() != ".ts":
            raise
    from tildekit.export.foreign_nn import derive_card

    return derive_card(path, measure_delays=measure_delays)


def read_card(path: str | Path) -> ModelCard:
    """The model card embedded in an exported model file (or a bare ``.json`` card)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a model file" if path.is_dir() else "does not exist"
        raise TildekitError(f"{path} {what}: pass an exported model file ({SUPPORTED})")
    suffix = path.suffix.lower()
    text: str | bytes
    if suffix in TORCHSCRIPT_SUFFIXES:
        text = _card_text_from_archive(path)
    elif suffix == ".onnx":
        text = _card_text_from_onnx(path)
    elif suffix == ".json":
        if path.stat().st_size > MAX_CARD_BYTES:
            raise TildekitError(f"{path} is {path.stat().st_size} bytes: too big for a model card "
                                f"(at most {MAX_CARD_BYTES}); pass a card written by tildekit")
        text = path.read_bytes()
    else:
        raise TildekitError(
            f"{path}: unknown model file type {path.suffix or '(no extension)'!r}: "
            f"pass a {SUPPORTED} file written by `tildekit export`")
    try:
        return ModelCard.from_json(text)
    except CardError as exc:
        # One validation point (models/contract/card_check.py): nothing downstream sees a bad card.
        raise TildekitError(f"{path}: {exc}") from None


def _card_text_from_archive(path: Path) -> bytes:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            # A torch.jit.save archive has one root folder (its name varies) holding data.pkl.
            if not any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names):
                raise TildekitError(
                    f"{path} is not a TorchScript archive (no data.pkl inside): re-export it "
                    f"with `tildekit export`")
            members = [n for n in names if n.endswith(CARD_MEMBER_SUFFIX) and n.count("/") == 2]
            if not members:
                raise MissingCardError(
                    f"{path} holds no tildekit model card: it was exported without tildekit or by "
                    f"an older version; re-export it with `tildekit export`")
            info = archive.getinfo(members[0])
            if info.file_size > MAX_CARD_BYTES:  # checked before inflating: a zip bomb stays shut
                raise TildekitError(
                    f"{path}: its model card is {info.file_size} bytes (at most {MAX_CARD_BYTES}): this "
                    f"is not a tildekit card; re-export the model with `tildekit export`")
            return archive.read(members[0])
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise TildekitError(
            f"{path} is not a TorchScript archive or is truncated/corrupt ({_one_line(exc)}): re-export it "
            f"with `tildekit export`") from None


def _card_text_from_onnx(path: Path) -> str:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise TildekitError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {_one_line(exc)}): re-export it "
            f"with `tildekit export`") from None
    for prop in proto.metadata_props:
        if prop.key == CARD_ONNX_KEY:
            return prop.value
    raise MissingCardError(
        f"{path} holds no tildekit model card (metadata {CARD_ONNX_KEY!r}): it was exported without "
        f"tildekit or by an older version; re-export it with `tildekit export`")


def _one_line(exc: BaseException) -> str:
    """Library messages may span lines; user errors are one line."""
    return " ".join(str(exc).split())[:200]

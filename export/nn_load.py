"""Load a TorchScript file the way nn~ does (``torch::jit::load`` then ``eval()``), with one line
for a file that does not load. Shared by the checks and by the cards derived from foreign files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tildekit.errors import TildekitError


def load_like_nn(path: Path) -> Any:
    """``torch::jit::load`` then ``eval()``; unreadable files raise TildekitError (one line)."""
    import torch

    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError/ValueError with multi-line text
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise TildekitError(f"{path} does not load as TorchScript ({first}): re-export it with "
                            f"`tildekit export`") from None
    model.eval()
    return model

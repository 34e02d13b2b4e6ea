"""The export target interface, and the one way every target writes its files.

A target (nn~, Neutone, ONNX, ...) turns an :class:`~tildekit.export.exportable.Exportable`
and its card into host files, and checks such files the way its host loads them. Adding a
target is one module with a :class:`Target` subclass, registered in ``export/targets.py``.

:func:`write_checked` is the write-check-rename every target uses: each file is saved under a
hidden temporary name in its folder, the target's check runs on those, and only when every
item passed are they renamed into place; otherwise nothing is left behind.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

from tildekit.errors import TildekitError
from tildekit.export.check_result import CheckResult, failures_message
from tildekit.export.exportable import Exportable
from tildekit.models.contract.atomic import atomic_path
from tildekit.models.contract.card import ModelCard
from tildekit.models.contract.hosts import DEFAULT_BUFFER


class Target(ABC):
    """One host's file format. ``buffer``: samples per call, for targets with a fixed one."""

    name: str = ""

    def __init__(self, buffer: int = DEFAULT_BUFFER) -> None:
        self.buffer = buffer

    def takes(self, family: str) -> bool:
        """Does this target export models of ``family``? (``--target all`` skips those it does not.)"""
        return True

    @abstractmethod
    def files(self, model_name: str) -> list[str]:
        """Every file name this target may write for ``model_name`` (known before any work)."""

    @abstractmethod
    def write(self, model: Exportable, card: ModelCard, folder: Path, quick: bool = False) -> list[Path]:
        """Write and check the files of ``model`` into ``folder``; returns them, all checked."""

    @abstractmethod
    def check(self, paths: Sequence[Path], card: ModelCard | None = None, quick: bool = False) -> list[CheckResult]:
        """Load ``paths`` as the host does and check them (against ``card`` when given).

        ``quick``: the structural items only (load, methods / attributes / card agree, a short
        stream); the full run adds every buffer size, host rate and operator table.
        """


def write_checked(finals: Sequence[Path], save: Callable[[list[Path]], None],
                  check: Callable[[list[Path]], list[CheckResult]], what: str) -> list[Path]:
    """Save ``finals`` under temporary names, check them, rename them into place if all passed.

    ``save`` writes the temporary paths (in the order of ``finals``); ``check`` gets them too.
    A failed item raises TildekitError naming every failure; no file is left behind.
    """
    with contextlib.ExitStack() as stack:
        temporaries = [stack.enter_context(atomic_path(path)) for path in finals]
        try:
            save(temporaries)
            failed = [r for r in check(temporaries) if not r.passed]
        except TildekitError as exc:
            raise TildekitError(_final_names(str(exc), temporaries, finals)
                                + f" (nothing was written for {what})") from None
        if failed:
            raise TildekitError(f"{what}: export failed its contract check, nothing written: "
                                + _final_names(failures_message(failed), temporaries, finals))
    return list(finals)


def _final_names(text: str, temporaries: Sequence[Path], finals: Sequence[Path]) -> str:
    for temporary, final in zip(temporaries, finals):
        text = text.replace(str(temporary), str(final))
    return text

"""One line of a contract check's report: what was checked, whether it passed, and why not."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckResult:
    item: str
    passed: bool
    reason: str = ""

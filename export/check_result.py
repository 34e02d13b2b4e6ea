"""One line of a contract check's report: what was checked, whether it passed, and why not."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class CheckResult:
    item: str
    passed: bool
    reason: str = ""


def format_results(results: Iterable[CheckResult]) -> str:
    return "\n".join(f"{'PASS' if r.passed else 'FAIL'}  {r.item}" + (f": {r.reason}" if r.reason else "")
                     for r in results)


def failures_message(failed: Iterable[CheckResult]) -> str:
    return "; ".join(f"{r.item}: {r.reason}" for r in failed)

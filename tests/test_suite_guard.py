"""The suite's own guard: a test that leaves a child process running fails, and the child is reaped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")


def test_a_leaked_child_fails_its_test_and_is_killed(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_leaks="""
        import subprocess, sys

        def test_leaks(tmp_path):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            (tmp_path.parent.parent / "leaked.pid").write_text(str(child.pid))

        def test_reaps():
            subprocess.run([sys.executable, "-c", "pass"], check=True)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--basetemp={pytester.path / 'tmp'}")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*child process(es) outlived the test and were killed*time.sleep(600)*"])
    pid = int((pytester.path / "leaked.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone: killed and reaped, not a zombie

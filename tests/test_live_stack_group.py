"""`make test`'s xdist grouping: the live-stack tests share one group, and a run where xdist did not
group them fails those tests with the reason instead of running them beside each other."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = """
import pytest

@pytest.mark.slow
def test_boots_a_stack():
    pass

@pytest.mark.distributed
def test_boots_workers():
    pass

def test_light():
    pass
"""
# The repository's two hooks, as the only plugin of an inner pytest run.
CONFTEST = "from tests.conftest import pytest_collection_modifyitems, pytest_runtest_setup  # noqa: F401\n"
# As a worker whose xdist ignored the group marks: loadgroup on, no group suffix given.
NO_GROUPING = """
def pytest_configure(config):
    config.option.loadgroup = True
"""


def inner_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest over `folder`'s tests with the repository importable; its output and exit code."""
    (folder / "test_inner.py").write_text(TESTS)
    (folder / "conftest.py").write_text(CONFTEST)
    (folder / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow\n    distributed\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_live_stack_tests_share_one_xdist_group(tmp_path):
    result = inner_pytest(tmp_path, "-n", "2", "--dist", "loadgroup")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "test_boots_a_stack@live_stack" in result.stdout
    assert "test_boots_workers@live_stack" in result.stdout
    assert "test_light@" not in result.stdout


def test_a_live_stack_test_xdist_did_not_group_fails_with_the_reason(tmp_path):
    (tmp_path / "no_grouping.py").write_text(NO_GROUPING)
    result = inner_pytest(tmp_path, "-p", "no_grouping")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "2 errors" in result.stdout and "1 passed" in result.stdout, result.stdout[-3000:]
    assert "pytest-xdist did not put this live-stack test in its group" in result.stdout

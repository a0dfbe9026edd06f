import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # no test writes to the user's real ~/.cache: make test points this at build/test-cache
    os.environ.setdefault("KD_CACHE_DIR", str(ROOT / "build" / "test-cache"))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private, empty dataset cache for tests that check cache behaviour."""
    d = tmp_path / "cache"
    monkeypatch.setenv("KD_CACHE_DIR", str(d))
    return d


@pytest.fixture(scope="session")
def assigned(tmp_path_factory):
    """``otter assign`` every assignment once per test session (otter assign fails if a solution fails a test)."""
    from kdutils.course import grading

    d = tmp_path_factory.mktemp("dist")
    names = grading.list_assignments()
    table = grading.assign_all(dist=d, verify=False, jobs=2)
    assert list(table.assignment) == names
    for name in names:
        student = (d / name / "student" / f"{name}.ipynb").read_text()
        leaks = [m for m in grading.LEAK_MARKERS if m in student]     # (otter_assign refuses these too)
        assert not leaks and "# BEGIN SOLUTION" in grading.LEAK_MARKERS, f"{name}: solutions or hidden tests leak: {leaks}"
    return d

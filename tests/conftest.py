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
        assert "# BEGIN SOLUTION" not in student and "Rubric (solution)" not in student, "solutions leak into the student version"
        assert "hidden=True" not in student, "hidden tests leak into the student version"
    return d

"""Shared fixtures, and the split between the unit loop and the slow suites.

``make unit`` runs ``pytest -m "not slow"``: the tests of the library and the tooling that start no
kernel, sandbox, browser or other process (minutes). ``make test`` runs everything. A test is slow
when it is marked ``@pytest.mark.slow`` or uses a fixture that executes notebooks (``assigned``,
``simulations``); a test that is not slow and starts a process anyway fails, naming the command, so
the unit loop stays fast as the course grows.
"""
import contextlib
import hashlib
import io
import importlib.metadata
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLOW_FIXTURES = {"assigned", "simulations"}      # each executes notebooks (otter assign, the Colab simulation)


def load_script(relative: str):
    """A script of the repository that is not in a package (``.ci/stages.py``, ``benchmarks/...``) as a module."""
    import importlib.util
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_configure(config):
    # no test writes to the user's real ~/.cache: make test points this at build/test-cache
    os.environ.setdefault("KD_CACHE_DIR", str(ROOT / "build" / "test-cache"))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request, monkeypatch):
    if request.node.get_closest_marker("slow"):
        yield
        return

    def refuse(self, args, *a, **k):
        raise AssertionError(f"a unit test started a process ({args!r}): mark the test @pytest.mark.slow "
                             "(make unit runs only tests that start none)")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    yield


def run_cli(*args, env=None):
    """``python -m <module> <args>`` run in this process (the module's ``main``): exit status and what it printed.

    Starting a Python for each case would cost seconds of imports apiece; ``test_the_entry_point_prints_an_error_line``
    proves the real ``python -m`` entry point behaves the same."""
    from types import SimpleNamespace
    from unittest import mock

    from kdutils import fullrun
    from kdutils.course import cli

    module, *argv = args
    main = {"kdutils": cli.main, "kdutils.fullrun": fullrun.main}[module]
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, env or {}), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:       # argparse's own errors
            code = exc.code
    result = SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
    assert "Traceback" not in result.stderr, f"a traceback instead of an error line:\n{result.stderr[-2000:]}"
    return result


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private, empty dataset cache for tests that check cache behaviour."""
    d = tmp_path / "cache"
    monkeypatch.setenv("KD_CACHE_DIR", str(d))
    return d


def _assign_key(name: str) -> str:
    """What ``otter assign``'s output depends on: the master notebook, the course's code, otter, the profile."""
    h = hashlib.sha256()
    files = [ROOT / "notebooks" / "assignments" / name / f"{name}.ipynb", ROOT / "pyproject.toml",
             *sorted((ROOT / "kdutils").rglob("*.py"))]
    for f in files:
        h.update(f.relative_to(ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    h.update(importlib.metadata.version("otter-grader").encode())
    h.update(os.environ.get("KD_PROFILE", "").encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def assigned(tmp_path_factory):
    """``otter assign`` every assignment (otter assign fails if a solution fails a test), once per content.

    otter assign executes each master notebook (minutes). Its output is kept in the test cache
    (``$KD_CACHE_DIR/otter-assign/<name>-<key>``), keyed by the master, every file of kdutils, otter's
    version and the profile, so the pytest sessions of ``make check``'s stages (and the loop while
    editing a test) run it once for each change; the tests get a private copy.
    """
    from kdutils.course import assign, layout, otterformat

    d = tmp_path_factory.mktemp("dist")
    names = layout.list_assignments()
    store = Path(os.environ["KD_CACHE_DIR"]) / "otter-assign"
    keys = {name: _assign_key(name) for name in names}
    todo = [n for n in names if not (store / f"{n}-{keys[n]}" / ".complete").exists()]
    if todo:
        fresh = tmp_path_factory.mktemp("assign")
        table = assign.assign_all(todo, dist=fresh, verify=False, jobs=2)
        assert list(table.assignment) == todo
        for name in todo:
            for old in store.glob(f"{name}-*"):                  # an older version of this master
                shutil.rmtree(old, ignore_errors=True)
            kept = store / f"{name}-{keys[name]}"
            tmp = store / f".{name}-{keys[name]}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(fresh / name, tmp)
            (tmp / ".complete").write_text("")
            shutil.rmtree(kept, ignore_errors=True)
            os.replace(tmp, kept)
    for name in names:
        shutil.copytree(store / f"{name}-{keys[name]}", d / name, ignore=shutil.ignore_patterns(".complete"))
        student = (d / name / "student" / f"{name}.ipynb").read_text()
        leaks = [m for m in otterformat.LEAK_MARKERS if m in student]     # (otter_assign refuses these too)
        assert not leaks and "# BEGIN SOLUTION" in otterformat.LEAK_MARKERS, f"{name}: solutions or hidden tests leak: {leaks}"
    return d

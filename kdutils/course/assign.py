"""``make assignments``: build every assignment's handouts from its master notebook.

``assign_all`` runs ``otter assign`` on every ``notebooks/assignments/<name>/<name>.ipynb``
(``otter_assign``), writing ``dist/<name>/student/`` (to hand out) and ``dist/<name>/autograder/``
(the grader zip, with ``cache/``: the teachers the master trained, so no submission trains them);
grades the solution with the fresh zip and fails unless it earns every autograded point; and writes
``dist/<name>/gradescope/`` (the zip to upload to Gradescope, ``kdutils.course.gradescope``).

The student version carries its public tests inside the notebook (``student_for_colab``), since Colab
opens it alone, and is refused if it holds any of ``otterformat.LEAK_MARKERS``.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from . import layout, otterformat
from .layout import CourseError


class AssignError(CourseError):
    """``otter assign`` failed, or what it wrote cannot be handed out."""


def _run(cmd, timeout, cwd=None, env=None):
    """Run ``cmd`` in its own process group; on timeout kill the whole group (kernels included)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                            start_new_session=True, env=env)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise


def student_for_colab(notebook: Path, assignment: str) -> Path:
    """Put the public tests that ``otter assign`` wrote beside the student notebook into the notebook.

    Colab opens the notebook alone: no ``tests/`` folder, and no notebook file for otter to read
    tests from. The autograder cell (``colab.otter_init_cell_source``) carries the public tests and
    writes them where ``otter.Notebook(tests_dir=...)`` finds them, so ``grader.check`` works there
    and from any folder. The ``tests/`` folder is then removed: the notebook is the whole handout.
    """
    import nbformat

    from . import colab

    tests_dir = notebook.parent / "tests"
    public = {p.name: p.read_text() for p in sorted(tests_dir.glob("*.py"))}
    if not public:
        raise AssignError(f"otter assign wrote no public tests beside {notebook} (is `tests: files: true` set?)")
    leaked = [n for n, text in public.items() if otterformat.HIDDEN_TEST in text]
    if leaked:
        raise AssignError(f"hidden tests in the student version's {leaked}: refusing to hand them out")
    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(otterformat.AUTOGRADER_CELL)]
    if len(cells) != 1:
        raise AssignError(f"{notebook}: expected one autograder cell starting {otterformat.AUTOGRADER_CELL!r}, "
                          f"found {len(cells)} (the master needs colab.otter_init_placeholder() after its set-up cell)")
    cells[0].source = colab.otter_init_cell_source(assignment, public)
    tmp = notebook.with_name(f".{notebook.name}.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, notebook)
    shutil.rmtree(tests_dir)
    return notebook


def otter_assign(name: str, target: Path, *, timeout: float = 300.0, run_tests: bool = True, env=None) -> Path:
    """``otter assign`` one master into ``target`` (replaced): the autograder and the student version, the
    latter with its public tests carried inside for Colab (``student_for_colab``) and refused if it holds
    any of ``otterformat.LEAK_MARKERS``. ``run_tests=False`` skips executing the master (seconds instead
    of minutes). Returns the student notebook."""
    master = layout.master(name)
    shutil.rmtree(target, ignore_errors=True)
    cmd = [sys.executable, "-m", "otter", "assign", "--no-pdfs", *([] if run_tests else ["--no-run-tests"]),
           str(master), str(target)]
    code, out = _run(cmd, timeout, cwd=master.parent, env=env)
    if code != 0:
        raise AssignError(f"otter assign failed for {name}:\n{out[-2000:]}")
    student = student_for_colab(target / "student" / f"{name}.ipynb", name)
    leaks = [m for m in otterformat.LEAK_MARKERS if m in student.read_text()]
    if leaks:
        raise AssignError(f"the student version of {name} contains {leaks}: refusing to hand it out")
    return student


def _verify(name: str, zip_path: Path, tests: otterformat.Tests, timeout: float) -> None:
    """Grade the solution with its fresh autograder zip, as a submission is graded; it must earn every point.
    This run fills the autograder's cache (``fill_cache``): what it trains, the submissions find."""
    from .grade import grade_one
    from .submissions import Submission

    solution = Submission("solution", zip_path.parent / f"{name}.ipynb")
    row, feedback, _ = grade_one(solution, tests.sources, tests.points, timeout=timeout, cache=zip_path.parent / "cache",
                                 fill_cache=True, sandboxed=shutil.which("bwrap") is not None)
    short = {q: (row[q], p) for q, p in tests.points.items() if row[q] < p}
    if short or not row["status"].startswith("graded"):
        raise AssignError(f"the solution of {name} does not pass its own tests: {short} ({row['status']})\n{feedback}")


def assign_one(name: str, dist: Path, *, timeout: float = 300.0, verify: bool = True, wheel: Path | None = None) -> dict:
    """Build ``dist/<name>/`` (student version, autograder and its cache, Gradescope zip); a row of the summary."""
    from . import gradescope

    target, start = dist / name, time.perf_counter()
    # otter assign executes the master: with KD_CACHE_DIR here, that run trains kdutils.zoo's teachers
    # once and the autograder ships them (autograder/cache)
    cache = dist / f".{name}-cache"
    shutil.rmtree(cache, ignore_errors=True)
    otter_assign(name, target, timeout=timeout, env={**os.environ, "KD_CACHE_DIR": str(cache)})
    cache.mkdir(exist_ok=True)
    os.replace(cache, target / "autograder" / "cache")
    zip_path = layout.autograder_zip(name, dist)
    tests = otterformat.read_tests(zip_path)
    if verify:
        _verify(name, zip_path, tests, timeout)
    gradescope.build(name, dist, wheel=wheel)
    return {"assignment": name, "questions": len(tests.points), "points": sum(tests.points.values()),
            "seconds": round(time.perf_counter() - start, 1), "student version": str(target / "student")}


def assign_all(names: list[str] | None = None, *, dist: Path | None = None, timeout: float = 300.0,
               verify: bool = True, jobs: int = 1) -> pd.DataFrame:
    """``assign_one`` every assignment (``names``, default all) into ``dist/``, ``jobs`` at once; the summary table.

    ``otter assign`` itself fails when a test fails on the solution; ``verify`` also grades the
    solution with the generated autograder zip, exactly as submissions will be graded.
    """
    from concurrent.futures import ThreadPoolExecutor

    from . import gradescope

    dist = Path(dist or layout.dist_dir())
    names = names or layout.list_assignments()
    for name in names:
        layout.master(name)                                  # an unknown name is refused before any work
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        wheel = gradescope.kdutils_wheel(Path(tmp))          # one kdutils wheel for every Gradescope zip
        rows = list(pool.map(lambda n: assign_one(n, dist, timeout=timeout, verify=verify, wheel=wheel), names))
    return pd.DataFrame(rows)

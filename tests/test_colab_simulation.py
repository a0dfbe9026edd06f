"""Every notebook and every student assignment, opened alone on a simulated Colab runtime.

This is the one execution of each course notebook at the smoke scale in ``make test`` (the stored
outputs of the cells marked ``NBVAL_CHECK_OUTPUT`` are compared here, as nbval would).

See ``kdutils/course/colabsim.py`` for what is simulated: an empty working directory, Colab's
preinstalled packages without kdutils / mnist1d / otter-grader, Colab's kernel class, and the
notebook's own set-up cell installing kdutils (from a wheel of this checkout) and what it needs
(from a local folder of wheels). The simulations run two at a time, once per session; each test
below reads one result.
"""
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from kdutils.course import colabsim, layout, otterformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ASSIGNMENTS = layout.list_assignments()


def _wheelhouse() -> Path:
    path = Path(os.environ.get("KD_WHEELHOUSE", ROOT / ".venv" / "wheelhouse"))
    have = {p.name.split("-")[0].replace("_", "-").lower() for p in path.glob("*.whl")}
    missing = [n for n in colabsim.COLAB_LACKS if n != "kdutils" and n not in have]
    if missing:
        pytest.fail(f"the Colab simulation needs wheels of {missing} in {path}: run `make venv` (it fetches them)")
    return path


def _checks(nb):
    return [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("grader.check(")]


def answered(student: nbformat.NotebookNode, solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version as a student who answered every question correctly hands it in: the
    solution's code pasted into the student's cells (the autograder cell stays the student's)."""
    nb = nbformat.from_dict(student)
    mine = [c for c in nb.cells if c.cell_type == "code"]
    theirs = [c for c in solution.cells if c.cell_type == "code"]
    assert len(mine) == len(theirs), "student and solution versions must have the same code cells"
    for m, t in zip(mine, theirs):
        if otterformat.AUTOGRADER_CELL not in m.source:
            m.source = t.source
    return nb


def checks_only(student: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The untouched student version as a student who runs the set-up, then every ``grader.check``
    without answering anything (the cells in between need answers, or minutes of training)."""
    nb = nbformat.from_dict(student)
    code = [c for c in nb.cells if c.cell_type == "code"]
    nb.cells = code[:2] + _checks(nb)
    return nb


@pytest.fixture(scope="session")
def simulations(tmp_path_factory, assigned):
    wheelhouse = _wheelhouse()
    root = tmp_path_factory.mktemp("colab")
    wheel = colabsim.build_kdutils_wheel(ROOT, root / "wheel")
    jobs = {nb.name: (nb, nb.name) for nb in NOTEBOOKS}
    for name in ASSIGNMENTS:
        student = nbformat.read(assigned / name / "student" / f"{name}.ipynb", as_version=4)
        solution = nbformat.read(assigned / name / "autograder" / f"{name}.ipynb", as_version=4)
        jobs[f"{name} answered"] = (answered(student, solution), f"{name}.ipynb")
        jobs[f"{name} untouched"] = (checks_only(student), f"{name}.ipynb")

    def one(key):
        nb, filename = jobs[key]
        return key, colabsim.simulate(nb, name=filename, root=root / key.replace(" ", "-"), wheel=wheel,
                                      wheelhouse=wheelhouse, timeout=600,
                                      # one thread per kernel: two kernels with two threads each on two cores crawl
                                      env={"KD_PROFILE": "smoke", "OMP_NUM_THREADS": "1"})

    start = time.perf_counter()
    slow_first = sorted(jobs, key=lambda k: ("answered" not in k, k))     # the long ones start first
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(pool.map(one, slow_first))
    wall = time.perf_counter() - start
    print(f"\nColab simulation: {len(results)} runs in {wall:.0f} s (two at a time)")
    for key in sorted(results):
        r = results[key]
        print(f"  {key:40s} {'ok' if r.error is None else 'FAILED'} {r.seconds:6.1f} s")
    # the same summary for CI's records, beside the notebooks' results (make test: build/test-results/)
    summary = {"wall_seconds": round(wall, 1), "runs": {k: {"ok": r.error is None, "seconds": round(r.seconds, 1),
                                                            "error": r.error} for k, r in sorted(results.items())}}
    out = Path(os.environ.get("KD_RESULTS_DIR", ROOT / "build" / "test-results"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "colab_simulation.json").write_text(json.dumps(summary, indent=2))
    return results


def _explain(r) -> str:
    return f"{r.notebook} failed on simulated Colab: {r.error}; cells that raised: {r.cell_errors()}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_course_notebook_runs_opened_alone_on_colab(simulations, path):
    r = simulations[path.name]
    assert r.error is None and not r.cell_errors(), _explain(r)
    assert {"kdutils", "mnist1d"} <= r.installed, f"the set-up cell installed {r.installed}"
    assert not set(colabsim.NEVER_REINSTALLED) & r.installed, f"Colab's own packages were replaced: {r.installed}"
    # results land beside the notebook (./build/results, i.e. /content/build/results on Colab)
    assert f"build/results/{path.stem}.json" in r.results_files, r.results_files
    # nbval's check, on this execution (make test runs each notebook once at the smoke scale): a cell marked
    # NBVAL_CHECK_OUTPUT prints what is stored
    assert not colabsim.stored_output_mismatches(nbformat.read(path, as_version=4), r.executed)


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_answered_student_assignment_runs_and_passes_its_checks_on_colab(simulations, name):
    r = simulations[f"{name} answered"]
    assert r.error is None and not r.cell_errors(), _explain(r)
    assert {"kdutils", "otter-grader"} <= r.installed and not set(colabsim.NEVER_REINSTALLED) & r.installed
    checks = _checks(r.executed)
    assert checks, "the student version has grader.check cells"
    for cell in checks:
        text = " ".join(str(o.get("data", {}).get("text/plain", o.get("text", ""))) for o in cell.outputs)
        assert "All test cases passed" in text, f"{cell.source}: {text[:300]}"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_untouched_student_assignment_starts_and_checks_on_colab(simulations, name):
    """Opened as handed out: the set-up installs otter, the autograder cell starts, and every
    grader.check reports the unanswered question as failing instead of crashing."""
    r = simulations[f"{name} untouched"]
    assert r.error is None and not r.cell_errors(), _explain(r)
    assert "otter-grader" in r.installed
    for cell in _checks(r.executed):
        text = " ".join(str(o.get("data", {}).get("text/plain", o.get("text", ""))) for o in cell.outputs)
        assert "results" in text and "All test cases passed" not in text, f"{cell.source}: {text[:300]}"

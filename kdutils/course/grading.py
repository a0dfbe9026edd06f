"""Instructor tools around otter-grader: build the assignments, grade a folder of submissions.

``assign_all``    runs ``otter assign`` on every ``notebooks/assignments/<name>/<name>.ipynb``, writing
                  ``dist/<name>/student/`` (to hand out) and ``dist/<name>/autograder/`` (the grader
                  zip), then grades the solution with the fresh zip and fails unless it earns every
                  autograded point.
``grade_folder``  grades every ``.ipynb`` (or a ``.zip`` holding one) in a folder with ``otter run``,
                  one at a time under a time limit, and writes ``grades.csv`` (one row per submission:
                  every question's score, total, status), ``grades.png`` (score per question) and
                  ``feedback/<submission>.txt`` (public and hidden test output). A submission that is
                  not a notebook, does not parse, loops forever or breaks the grader gets a row saying
                  so and 0 points; the batch goes on. An earlier ``grades.csv`` is kept, renamed with
                  its time stamp, never overwritten. A folder with no files, a file given as the
                  folder, or a missing autograder is an error, and then nothing is written.

``otter run`` executes student code unsandboxed on this machine: for untrusted submissions use
otter's Docker-based ``otter grade`` instead.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pandas as pd

from .. import runtime
from ..files import atomic_write_text


class GradingError(RuntimeError):
    pass


def assignments_root() -> Path:
    return runtime.repo_root() / "notebooks" / "assignments"


def list_assignments(root: Path | None = None) -> list[str]:
    root = Path(root or assignments_root())
    return sorted(p.name for p in root.iterdir() if (p / f"{p.name}.ipynb").exists())


def find_autograder(assignment: str, dist: Path) -> Path:
    zips = sorted((Path(dist) / assignment / "autograder").glob(f"{assignment}-autograder_*.zip"))
    if not zips:
        raise GradingError(f"no autograder zip for {assignment!r} under {dist}/{assignment}/autograder: "
                           "run `make assignments` first")
    return zips[-1]


def questions(autograder_zip: Path) -> dict[str, float]:
    """{question: points} of the autograded questions, read from the zip's test files."""
    out = {}
    with zipfile.ZipFile(autograder_zip) as z:
        for name in sorted(z.namelist()):
            if name.startswith("tests/") and name.endswith(".py"):
                tree = ast.parse(z.read(name).decode())
                values = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign)
                          for t in n.targets if isinstance(t, ast.Name)}
                out[ast.literal_eval(values["name"])] = float(ast.literal_eval(values["points"]))
    return out


def _run(cmd, timeout, cwd=None):
    """Run ``cmd`` in its own process group; on timeout kill the whole group (kernels included)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise


def otter_run(autograder_zip: Path, notebook: Path, *, timeout: float) -> dict:
    """Grade one notebook with ``otter run``; returns otter's results.json as a dict."""
    with tempfile.TemporaryDirectory(prefix="kd-grade-") as tmp:
        work = Path(tmp)
        nb = work / "submission.ipynb"
        shutil.copy(notebook, nb)
        (work / "out").mkdir()
        code, out = _run([sys.executable, "-m", "otter", "run", "--no-logo", "-a", str(Path(autograder_zip).resolve()),
                          "-o", str(work / "out"), str(nb)], timeout, cwd=work)
        results = work / "out" / "results.json"
        if code != 0 or not results.exists():
            raise GradingError(f"otter run failed (exit {code}): {out.strip()[-500:]}")
        return json.loads(results.read_text())


def _extract_notebook(path: Path, into: Path) -> Path:
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.endswith(".ipynb") and not n.startswith("__MACOSX")]
        if not names:
            raise GradingError("the zip holds no notebook")
        target = into / Path(names[0]).name
        target.write_bytes(z.read(names[0]))
        return target


def _feedback_text(results: dict) -> str:
    parts = []
    for t in results.get("tests", []):
        head = t["name"] + (f": {t['score']:g} / {t['max_score']:g}" if "score" in t else "")
        parts.append(f"== {head} ({t.get('visibility', '')})\n{t.get('output', '').rstrip()}\n")
    return "\n".join(parts)


def grade_one(path: Path, autograder_zip: Path, qs: dict[str, float], *, timeout: float) -> tuple[dict, str]:
    import nbformat

    row = {"submission": path.name, **{q: 0.0 for q in qs}, "status": ""}
    feedback = ""
    with tempfile.TemporaryDirectory(prefix="kd-sub-") as tmp:
        try:
            if path.suffix == ".zip":
                nb_path = _extract_notebook(path, Path(tmp))
            elif path.suffix == ".ipynb":
                nb_path = path
            else:
                raise GradingError(f"not a notebook ({path.suffix or 'no extension'})")
            try:
                nb = nbformat.read(nb_path, as_version=4)
            except Exception as exc:
                raise GradingError(f"does not parse as a notebook: {type(exc).__name__}: {str(exc)[:120]}") from None
            notes = []
            if not any("grader.check" in c.source for c in nb.cells if c.cell_type == "code"):
                notes.append("grader cells deleted (graded from the autograder's tests anyway)")
            results = otter_run(autograder_zip, nb_path, timeout=timeout)
            for t in results.get("tests", []):
                if t["name"] in qs and "score" in t:
                    row[t["name"]] = float(t["score"])
            row["status"] = "; ".join(["graded"] + notes)
            feedback = _feedback_text(results)
        except subprocess.TimeoutExpired:
            row["status"] = f"timed out after {timeout:g} s (infinite loop?): 0 points"
        except GradingError as exc:
            row["status"] = f"{exc}: 0 points"
    if not feedback:
        feedback = f"Not graded: {row['status']}\n"
    return row, feedback


def grade_folder(assignment: str, submissions: Path, *, dist: Path | None = None, out: Path | None = None,
                 timeout: float = 120.0, jobs: int = 1, progress: bool = True) -> pd.DataFrame:
    """Grade every submission in ``submissions``; see the module docstring for what is written.

    ``jobs > 1`` grades that many submissions at once (each in its own ``otter run`` process, each
    with its own time limit); the default grades them one at a time.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    if jobs < 1:
        raise GradingError(f"jobs must be >= 1, got {jobs}")
    dist = Path(dist or runtime.repo_root() / "dist")
    submissions = Path(submissions)
    if submissions.is_file():
        raise GradingError(f"--submissions {submissions} is a file: give the folder that holds the submissions")
    if not submissions.is_dir():
        raise GradingError(f"submissions folder {submissions} does not exist")
    files = sorted(p for p in submissions.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise GradingError(f"no submissions in {submissions}: the folder holds no files (nothing was written)")
    zip_path = find_autograder(assignment, dist)
    qs = questions(zip_path)
    # only now, with something to grade and a grader to grade it, is anything written
    out = Path(out or runtime.repo_root() / "grades" / assignment)
    out.mkdir(parents=True, exist_ok=True)
    (out / "feedback").mkdir(exist_ok=True)
    rows = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        graded = pool.map(lambda p: (p, *grade_one(p, zip_path, qs, timeout=timeout)), files)
        for path, row, feedback in tqdm(graded, total=len(files), desc=f"grading {assignment}", disable=not progress):
            row["total"] = sum(row[q] for q in qs)
            row["possible"] = sum(qs.values())
            rows.append(row)
            atomic_write_text(out / "feedback" / f"{path.stem}.txt", feedback)
    table = pd.DataFrame(rows, columns=["submission", *qs, "total", "possible", "status"])
    csv = out / "grades.csv"
    if csv.exists():  # keep the previous table: a rerun never loses grades
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(csv.stat().st_mtime))
        kept = out / f"grades-{stamp}.csv"
        n = 1
        while kept.exists():
            kept, n = out / f"grades-{stamp}-{n}.csv", n + 1
        os.replace(csv, kept)
    atomic_write_text(csv, table.to_csv(index=False))
    if len(table):
        _plot(table, qs, out / "grades.png", assignment)
    return table


def _plot(table: pd.DataFrame, qs: dict[str, float], path: Path, assignment: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = table.melt(id_vars="submission", value_vars=list(qs), var_name="question", value_name="score")
    long["fraction of points"] = long.apply(lambda r: r.score / qs[r.question] if qs[r.question] else 0.0, axis=1)
    fig, ax = plt.subplots(figsize=(1.2 * len(qs) + 3, 3.5))
    sns.barplot(long, x="question", y="fraction of points", ax=ax, errorbar=None, color="C0")
    ax.set(ylim=(0, 1), title=f"{assignment}: mean fraction of points per question (n={len(table)})")
    fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)


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
        raise GradingError(f"otter assign wrote no public tests beside {notebook} (is `tests: files: true` set?)")
    leaked = [n for n, text in public.items() if "hidden=True" in text]
    if leaked:
        raise GradingError(f"hidden tests in the student version's {leaked}: refusing to hand them out")
    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(colab.OTTER_INIT_MARKER)]
    if len(cells) != 1:
        raise GradingError(f"{notebook}: expected one autograder cell starting {colab.OTTER_INIT_MARKER!r}, "
                           f"found {len(cells)} (the master needs colab.otter_init_placeholder() after its set-up cell)")
    cells[0].source = colab.otter_init_cell_source(assignment, public)
    tmp = notebook.with_name(f".{notebook.name}.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, notebook)
    shutil.rmtree(tests_dir)
    return notebook


def assign_all(names: list[str] | None = None, *, dist: Path | None = None, timeout: float = 300.0,
               verify: bool = True, jobs: int = 1) -> pd.DataFrame:
    """``otter assign`` every assignment into ``dist/`` and check each solution earns full marks.

    ``otter assign`` itself fails when a test fails on the solution; ``verify`` also grades the
    solution with the generated autograder zip, exactly as submissions will be graded.
    """
    from concurrent.futures import ThreadPoolExecutor

    root = assignments_root()
    dist = Path(dist or runtime.repo_root() / "dist")

    def one(name):
        master = root / name / f"{name}.ipynb"
        if not master.exists():
            raise GradingError(f"no assignment {name!r} (expected {master})")
        target = dist / name
        if target.exists():
            shutil.rmtree(target)
        start = time.perf_counter()
        code, out = _run([sys.executable, "-m", "otter", "assign", "--no-pdfs", str(master), str(target)], timeout,
                         cwd=master.parent)
        if code != 0:
            raise GradingError(f"otter assign failed for {name}:\n{out[-2000:]}")
        student_for_colab(target / "student" / f"{name}.ipynb", name)
        zip_path = find_autograder(name, dist)
        qs = questions(zip_path)
        if verify:
            results = otter_run(zip_path, target / "autograder" / f"{name}.ipynb", timeout=timeout)
            scores = {t["name"]: t["score"] for t in results["tests"] if "score" in t}
            short = {q: (scores.get(q, 0.0), p) for q, p in qs.items() if scores.get(q, 0.0) < p}
            if short:
                raise GradingError(f"the solution of {name} does not pass its own tests: {short}\n{_feedback_text(results)}")
        return {"assignment": name, "questions": len(qs), "points": sum(qs.values()),
                "seconds": round(time.perf_counter() - start, 1), "student version": str(target / "student")}

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = list(pool.map(one, names or list_assignments(root)))
    return pd.DataFrame(rows)

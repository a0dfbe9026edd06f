"""``make grade``: grade a folder of submissions, each in its own sandbox, question by question.

``grade_folder`` finds every submission in a folder (``kdutils.course.submissions``: notebooks, zips,
per-student folders of LMS downloads) and grades each with ``grade_one``: the notebook's cells run in a
sandbox (``kdutils.course.sandbox``: no privileges, no network, limits), driven by the trusted test
process (``kdutils.course.autograde``), which runs the tests and reports what it graded
(``kdutils.course.records``). It writes into ``grades/<assignment>/``:

* ``grades.csv``: one row per submission (every question's score, total, status, a digest of the graded
  file), rewritten atomically as **each** submission finishes: a run that is killed keeps every finished
  row, and a rerun grades only the submissions that are new or changed;
* ``feedback/<submission>.instructor.txt`` and ``feedback/<submission>.student.txt``
  (``kdutils.course.feedback``; the student's is safe to hand out);
* ``grades.png``: the mean fraction of points per question.

A submission that is not a notebook, does not parse, loops forever, kills its own process or breaks the
pipe to the test process gets a status that says so; the batch goes on. Rows that a rerun replaces (a
changed submission, ``regrade``) are kept, with their feedback, under ``previous/<time>/``: nothing is
overwritten. A folder with no files, a file given as the folder, a missing autograder or a missing
sandbox is an error, and then nothing is written.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..files import atomic_write_text
from . import feedback, layout, otterformat, records, sandbox, submissions
from .layout import CourseError


class GradingError(CourseError):
    """A batch that cannot be graded: no submissions, a bad option."""


def _row(name: str, qs: dict[str, float], status: str = "") -> dict:
    return {"submission": name, **{q: 0.0 for q in qs}, "total": 0.0, "possible": sum(qs.values()), "status": status}


def _code_cells(sub: submissions.Submission) -> tuple[list[str] | None, str]:
    """The submission's code cells, or (None, why it cannot be graded)."""
    import nbformat

    if sub.problem:
        return None, f"{sub.problem}: 0 points"
    try:
        raw = sub.read()
    except submissions.TooLarge as exc:
        return None, f"not graded: {exc} (a zip bomb or a notebook full of outputs?): 0 points, review by hand"
    try:
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
        return [c.source for c in nb.cells if c.cell_type == "code"], ""
    except Exception as exc:
        return None, f"does not parse as a notebook ({type(exc).__name__}: {str(exc)[:100]}): 0 points"


def _notebook_command(scratch: Path, *, cache: Path | None, fill_cache: bool, sandboxed: bool, cell_timeout: float,
                      cgroup) -> dict:
    """How the test process starts the notebook's side (``kdutils.course.notebook_runner``): in the sandbox,
    with the cache read-only (written only by the solution's run, ``fill_cache``)."""
    argv = [sys.executable, "-m", "kdutils.course.notebook_runner"]
    env = {"KD_PROFILE": "smoke"} if os.environ.get("KD_PROFILE") == "smoke" else {}
    env["KD_CELL_TIMEOUT"] = str(cell_timeout)
    if cache is not None:
        env["KD_CACHE_DIR"] = str(Path(cache).resolve())
    if not sandboxed:
        return {"argv": argv, "cwd": str(scratch), "env": {**os.environ, **env, "MPLBACKEND": "Agg"}}
    shared = [Path(cache).resolve()] if cache is not None else []
    command = sandbox.command(argv, scratch=scratch, env=env, readonly=[] if fill_cache else shared,
                              writable=shared if fill_cache else [], cgroup=cgroup)
    if not fill_cache:
        sandbox.hand_over(scratch)      # a root grader runs the submission as nobody: its folder is nobody's
    return {"argv": command, "cwd": str(scratch), "env": None}


@dataclass
class _Ran:
    lines: list[bytes]      # the test process's stdout (capped): the records
    err: str                # its stderr (capped)
    returncode: int
    timed_out: bool


def _run_judge(job: dict, *, cache: Path | None, timeout: float) -> _Ran:
    """Run the trusted test process (outside the sandbox; the notebook's side is its child) on ``job``;
    after ``timeout`` seconds, or when it ends, kill its whole process group."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    if cache is not None:
        env["KD_CACHE_DIR"] = str(Path(cache).resolve())
    proc = subprocess.Popen([sys.executable, "-m", "kdutils.course.autograde"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env)
    lines, errs = [], []
    readers = [threading.Thread(target=records.read_capped, args=(proc.stdout, lines), daemon=True),
               threading.Thread(target=records.read_capped, args=(proc.stderr, errs, 1 << 16), daemon=True)]
    for r in readers:
        r.start()
    proc.stdin.write(json.dumps(job).encode())
    proc.stdin.close()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)      # the test process and the notebook's, whatever is left
    proc.wait()
    for r in readers:
        r.join(timeout=10)
    return _Ran(lines, b"".join(errs).decode(errors="replace"), proc.returncode, timed_out)


def _status(ran: _Ran, done, last_cell: int, tamper: list[str], notes: list[str], *, timeout: float,
            cell_timeout: float) -> str:
    stopped = done if isinstance(done, str) else None
    if tamper:
        return "grading records rejected: " + "; ".join(tamper) + ": 0 points, review by hand"
    if ran.timed_out or stopped == "timed out":
        return (f"timed out in code cell {last_cell} (deaf to the {cell_timeout:g} s cell limit, or past the "
                f"{timeout:g} s limit for the notebook: killed): questions graded before then kept")
    if done is not True:
        why = stopped or (ran.err.strip().splitlines()[-1][:200] if ran.err.strip() else f"exit code {ran.returncode}")
        return f"the notebook's process ended early after code cell {last_cell} ({why}): questions graded before then kept"
    return "; ".join(["graded", *notes])


def grade_one(sub: submissions.Submission, tests: dict[str, str], qs: dict[str, float], *, timeout: float,
              cell_timeout: float = 60.0, sandboxed: bool = True, cache: Path | None = None,
              fill_cache: bool = False, records_out: dict | None = None) -> tuple[dict, str, str]:
    """Grade one submission in its sandbox. Returns (row, feedback for the instructor, feedback for the student).

    ``tests`` {question: test file source}, ``qs`` {question: points} (``otterformat.read_tests``).
    ``cache`` is the autograder's cache (``KD_CACHE_DIR`` inside: the trained teachers of
    ``kdutils.zoo``, the generated datasets), read-only unless ``fill_cache`` (the solution's run).
    ``records_out``, if given, receives each graded question's record (its tests' results).
    """
    row = _row(sub.name, qs)
    sources, problem = _code_cells(sub)
    if sources is None:
        row["status"] = problem
        text = f"{sub.name}: not graded: {problem}\n"
        return row, text, text
    notes = list(sub.notes)
    if not any(otterformat.CHECK.search(s) for s in sources):
        notes.append("no grader.check cells: each question graded once its answers were defined")
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="kd-sub-") as tmp, \
            (sandbox.limits() if sandboxed else contextlib.nullcontext([])) as cgroup:
        scratch = Path(tmp)
        runner = _notebook_command(scratch, cache=cache, fill_cache=fill_cache, sandboxed=sandboxed,
                                   cell_timeout=cell_timeout, cgroup=cgroup)
        job = {"token": token, "cells": sources, "tests": tests, "cell_timeout": cell_timeout,
               "grace": min(10.0, cell_timeout), "runner": runner}
        ran = _run_judge(job, cache=cache, timeout=timeout)
        log = records.read_regular(scratch / "output.log")
    graded, cells, done, tamper = records.read_records(ran.lines, token, qs)
    if records_out is not None:
        records_out.update(graded)
    if not tamper:
        for q, rec in graded.items():
            row[q] = float(min(rec["score"], qs[q]))
    row["status"] = _status(ran, done, max(cells, default=-1), tamper, notes, timeout=timeout, cell_timeout=cell_timeout)
    row["total"] = sum(row[q] for q in qs)
    for_instructor = feedback.write(row, qs, graded, cells, student=False, tamper=tamper,
                                    log=log + ("\n" + ran.err if ran.err else ""))
    for_student = feedback.write(row, qs, graded, cells, student=True)
    return row, for_instructor, for_student


# --------------------------------------------------------------------------------------- the batch
COLUMNS_AFTER = ["total", "possible", "status", "digest"]


def _archive(out: Path, names: list[str] | None) -> Path:
    """Move the current table, plot and the feedback of ``names`` (all if None) to ``previous/<time>/``."""
    csv = out / "grades.csv"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(csv.stat().st_mtime))
    target, n = out / "previous" / stamp, 1
    while target.exists():
        target, n = out / "previous" / f"{stamp}-{n}", n + 1
    (target / "feedback").mkdir(parents=True)
    shutil.copy2(csv, target / "grades.csv")
    if (out / "grades.png").exists():
        shutil.copy2(out / "grades.png", target / "grades.png")
    stems = None if names is None else {submissions.feedback_stem(n) for n in names}
    for f in sorted((out / "feedback").glob("*.txt")):
        if stems is None or f.name.rsplit(".", 2)[0] in stems:
            os.replace(f, target / "feedback" / f.name)
    return target


def _rows_to_keep(csv: Path, columns: list[str], digests: dict[str, str], *, regrade: bool) -> list[dict]:
    """The rows of an earlier run still valid (same questions, same file): the others are archived first."""
    if not csv.exists():
        return []
    table = pd.read_csv(csv, dtype={"digest": str}, keep_default_na=False)
    same_columns, old = list(table.columns) == columns, table.to_dict("records")
    keep = [r for r in old if same_columns and not regrade and digests.get(r["submission"]) == r["digest"]]
    if len(keep) < len(old):
        _archive(csv.parent, None if not keep else [r["submission"] for r in old if r not in keep])
    return keep


def _find(assignment: str, submissions_dir: Path) -> list[submissions.Submission]:
    submissions_dir = Path(submissions_dir)
    if submissions_dir.is_file():
        raise GradingError(f"--submissions {submissions_dir} is a file: give the folder that holds the submissions")
    if not submissions_dir.is_dir():
        raise GradingError(f"submissions folder {submissions_dir} does not exist")
    found = submissions.find(submissions_dir, assignment)
    if not found:
        raise GradingError(f"no submissions in {submissions_dir}: the folder holds no files (nothing was written)")
    return found


def grade_folder(assignment: str, submissions_dir: Path, *, dist: Path | None = None, out: Path | None = None,
                 timeout: float = 120.0, cell_timeout: float = 60.0, jobs: int = 1, progress: bool = True,
                 sandboxed: bool = True, regrade: bool = False) -> pd.DataFrame:
    """Grade every submission in ``submissions_dir``; see the module docstring for what is written.

    A rerun on the same folder grades only what is new or changed since the last run (a run that was
    interrupted picks up where it stopped); ``regrade=True`` grades everything again. ``jobs > 1``
    grades that many submissions at once, each in its own sandbox with its own time limit.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm.auto import tqdm

    if jobs < 1:
        raise GradingError(f"jobs must be >= 1, got {jobs}")
    found = _find(assignment, submissions_dir)
    zip_path = layout.autograder_zip(assignment, dist)
    tests = otterformat.read_tests(zip_path)
    qs = tests.points
    if sandboxed and not sandbox.container_mode():
        sandbox.bwrap()                               # refuse now, before anything is written
    cache = zip_path.parent / "cache"
    cache = cache if cache.is_dir() else None
    # only now, with something to grade and a grader to grade it, is anything written
    out = Path(out or layout.grades_dir(assignment))
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    columns = ["submission", *qs, *COLUMNS_AFTER]
    digests = {s.name: s.digest() for s in found}
    csv = out / "grades.csv"
    rows = {r["submission"]: r for r in _rows_to_keep(csv, columns, digests, regrade=regrade)}
    todo = [s for s in found if s.name not in rows]

    def save():
        table = pd.DataFrame([rows[n] for n in sorted(rows)], columns=columns)
        atomic_write_text(csv, table.to_csv(index=False))
        return table

    table = save()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(grade_one, s, tests.sources, qs, timeout=timeout, cell_timeout=cell_timeout,
                               sandboxed=sandboxed, cache=cache): s for s in todo}
        for fut in tqdm(as_completed(futures), total=len(futures), desc=f"grading {assignment}", disable=not progress):
            s = futures[fut]
            try:
                row, for_instructor, for_student = fut.result()
                row["digest"] = digests[s.name]
            except Exception as exc:   # one submission's failure never stops the batch; the next run retries it
                row = {**_row(s.name, qs, f"not graded: the grader failed on it ({type(exc).__name__}: "
                                          f"{str(exc)[:150]}): review by hand"), "digest": ""}
                for_instructor = for_student = f"{s.name}: {row['status']}\n"
            stem = submissions.feedback_stem(s.name)
            atomic_write_text(out / "feedback" / f"{stem}.instructor.txt", for_instructor)
            atomic_write_text(out / "feedback" / f"{stem}.student.txt", for_student)
            rows[s.name] = row
            table = save()                            # one row more on disk as each submission finishes
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

"""Instructor tools: build the assignments, grade a folder of submissions.

``assign_all``    runs ``otter assign`` on every ``notebooks/assignments/<name>/<name>.ipynb``, writing
                  ``dist/<name>/student/`` (to hand out) and ``dist/<name>/autograder/`` (the grader
                  zip), then grades the solution with the fresh zip and fails unless it earns every
                  autograded point; ``dist/<name>/gradescope/`` gets the zip to upload to Gradescope.
``grade_folder``  grades every submission in a folder (``kdutils.course.submissions``: notebooks,
                  zips, per-student folders of LMS downloads), each in its own sandbox
                  (``kdutils.course.sandbox``), question by question (``kdutils.course.autograde``),
                  and writes into ``grades/<assignment>/``:

                  * ``grades.csv``: one row per submission (every question's score, total, status,
                    a digest of the graded file), rewritten atomically as **each** submission
                    finishes: a run that is killed keeps every finished row, and a rerun grades only
                    the submissions that are new or changed;
                  * ``feedback/<submission>.instructor.txt`` (every test's output, the notebook's
                    output) and ``feedback/<submission>.student.txt`` (safe to hand
                    out: scores, public test output, the hidden tests' failure messages, never their
                    source);
                  * ``grades.png``: the mean fraction of points per question.

                  A submission that is not a notebook, does not parse, loops forever, kills its own
                  process or breaks the pipe to the test process gets a status that says so; the batch goes on.
                  Rows that a rerun replaces (a changed submission, ``regrade``) are kept, with their
                  feedback, under ``previous/<time>/``: nothing is overwritten. A folder with no files,
                  a file given as the folder, a missing autograder or a missing sandbox is an error,
                  and then nothing is written.
"""
from __future__ import annotations

import ast
import contextlib
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import pandas as pd

from .. import runtime
from ..files import atomic_write_text
from . import sandbox, submissions
from .autograde import CHECK


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


def _tests(autograder_zip: Path) -> dict[str, tuple[float, str]]:
    """{question: (points, test file source)}: each test file of the zip read and parsed once."""
    out = {}
    with zipfile.ZipFile(autograder_zip) as z:
        for name in sorted(n for n in z.namelist() if n.startswith("tests/") and n.endswith(".py")):
            text = z.read(name).decode()
            values = {t.id: n.value for n in ast.parse(text).body if isinstance(n, ast.Assign)
                      for t in n.targets if isinstance(t, ast.Name)}
            if "name" not in values or "points" not in values:
                raise GradingError(f"{autograder_zip}: {name} sets no question name or points: build it again (make assignments)")
            question = ast.literal_eval(values["name"])
            if question in out:
                raise GradingError(f"{autograder_zip}: two test files for question {question!r}: build it again (make assignments)")
            out[question] = (float(ast.literal_eval(values["points"])), text)
    return out


def questions(autograder_zip: Path) -> dict[str, float]:
    """{question: points} of the autograded questions, read from the zip's test files."""
    return {q: points for q, (points, _) in _tests(autograder_zip).items()}


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


def test_sources(autograder_zip: Path) -> dict[str, str]:
    """{question: test file source} from the autograder zip (public and hidden tests)."""
    return {q: text for q, (_, text) in _tests(autograder_zip).items()}


def student_message(r: dict) -> str:
    """What a student may see of a failed test: the public test's message; for a hidden test only its
    failure message and the assertion's own text (never the test's source)."""
    if not r["hidden"]:
        return r["message"]
    last = r["message"].strip().splitlines()[-1] if r["message"].strip() else ""
    said = last.split(": ", 1)[1].strip() if last.startswith("AssertionError: ") else ""
    parts = [p for p in (r.get("failure_message"), said) if p]
    return "❌ " + (" -- ".join(parts) if parts else "failed")


def _feedback(row: dict, qs: dict, graded: dict, cells: dict, tamper: list[str], log: str, *, student: bool) -> str:
    lines = [f"{row['submission']}: {row['total']:g} / {row['possible']:g} points", f"status: {row['status']}", ""]
    for q, points in qs.items():
        g = graded.get(q)
        if g is None:
            lines.append(f"== {q}: 0 / {points:g} (not graded: the notebook stopped before it)")
            continue
        lines.append(f"== {q}: {row[q]:g} / {points:g}" + ("" if student else f" (graded {g['when']}, code cell {g['cell']})"))
        for r in g["results"]:
            tag = "hidden" if r["hidden"] else "public"
            if r["passed"]:
                lines.append(f"  [{tag}] {r['name']}: passed")
            else:
                msg = student_message(r) if student else r["message"] + (f"\n  ({r['failure_message']})" if r["failure_message"] else "")
                lines.append(f"  [{tag}] {r['name']}: {msg}".replace("\n", "\n    "))
        lines.append("")
    errors = [(i, c["error"]) for i, c in sorted(cells.items()) if c.get("error")]
    if errors:
        lines.append("cells that raised an error:")
        lines += [f"  code cell {i}: {e}" for i, e in errors]
    if not student:
        timed = ", ".join(f"{i}: {c['seconds']:.1f} s" for i, c in sorted(cells.items()) if (c.get("seconds") or 0) >= 0.5)
        lines += ["", f"seconds per code cell (0.5 s and over): {timed or 'none'}"]
        if tamper:
            lines += ["", "GRADING RECORDS REJECTED (scores withheld): " + "; ".join(tamper)]
        lines += ["", "---- the notebook's output (last 3000 characters) ----", log[-3000:]]
    return "\n".join(lines) + "\n"


OUTPUT_CAP = 4 << 20     # bytes read from a sandbox's output, its log or any file it wrote; the rest is dropped


def _read_capped(stream, lines: list[bytes], cap: int = OUTPUT_CAP) -> None:
    """Collect ``stream``'s lines up to ``cap`` bytes in all, then drain the rest unread (a flood costs
    the grader nothing, and the sandbox never blocks on a full pipe)."""
    total = 0
    for line in stream:
        if total < cap:
            lines.append(line[: cap - total])
            total += len(line)


def read_regular(path: Path, cap: int) -> str:
    """The first ``cap`` bytes of ``path`` as text, only if it is a regular file: never follows a link,
    never waits on a FIFO or a device the sandbox left in its folder ("" otherwise)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, cap).decode(errors="replace")
    finally:
        os.close(fd)


def read_records(lines: list[bytes], token: str, qs: dict[str, float]):
    """The grading records among a sandbox's output lines: only lines that start with this run's token,
    each a JSON object of a known kind with values of the right type. A score must be a number in
    [0, points] (records of other questions are ignored); a malformed record or an impossible score is
    reported (as tampering), never raised, so one submission's output cannot stop the batch.
    Returns (graded, cells, done, problems); ``done`` is True when the notebook ran to its end, the
    reason it stopped (a string) when the test process says so, False otherwise."""
    graded, cells, done, problems = {}, {}, False, []

    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")

    for raw in lines:
        line = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        if not line.startswith(token):
            continue
        try:
            rec = json.loads(line[len(token):])
        except ValueError:
            problems.append("sent a malformed grading record")
            continue
        if not isinstance(rec, dict):
            problems.append("sent a malformed grading record")
        elif "question" in rec:
            q, score = rec.get("question"), rec.get("score")
            if not (isinstance(q, str) and q in qs):
                continue                                # not a question of this assignment: ignored
            if not (number(score) and 0 <= score <= qs[q] + 1e-9):
                problems.append(f"sent a grading record with an impossible score for {q}")
            elif q not in graded or score > graded[q]["score"]:
                graded[q] = rec
        elif "tamper" in rec:
            problems.append(str(rec["tamper"])[:200])
        elif "stopped" in rec:                          # the notebook's process stopped before the end: why
            done = str(rec["stopped"])[:200]
        elif "cell" in rec:
            if isinstance(rec["cell"], int) and not isinstance(rec["cell"], bool):
                cells[rec["cell"]] = rec
        elif rec.get("done") is True:
            done = True
    return graded, cells, done, list(dict.fromkeys(problems))


def grade_one(sub: submissions.Submission, tests: dict[str, str], qs: dict[str, float], *, timeout: float,
              cell_timeout: float = 60.0, sandboxed: bool = True, cache: Path | None = None,
              fill_cache: bool = False, records: dict | None = None) -> tuple[dict, str, str]:
    """Grade one submission in its sandbox. Returns (row, feedback for the instructor, feedback for the student).

    ``cache`` is the autograder's cache (``KD_CACHE_DIR`` inside: the trained teachers of
    ``kdutils.zoo``, the generated datasets), read-only unless ``fill_cache`` (the solution's run).
    ``records``, if given, receives each graded question's record (its tests' results).
    """
    import nbformat

    row = {"submission": sub.name, **{q: 0.0 for q in qs}, "total": 0.0, "possible": sum(qs.values()), "status": ""}
    if sub.problem:
        row["status"] = f"{sub.problem}: 0 points"
        text = f"{sub.name}: not graded: {row['status']}\n"
        return row, text, text
    try:
        raw = sub.read()
    except submissions.TooLarge as exc:
        row["status"] = f"not graded: {exc} (a zip bomb or a notebook full of outputs?): 0 points, review by hand"
        text = f"{sub.name}: {row['status']}\n"
        return row, text, text
    try:
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
        sources = [c.source for c in nb.cells if c.cell_type == "code"]
    except Exception as exc:
        row["status"] = f"does not parse as a notebook ({type(exc).__name__}: {str(exc)[:100]}): 0 points"
        text = f"{sub.name}: not graded: {row['status']}\n"
        return row, text, text
    notes = list(sub.notes)
    if not any(CHECK.search(s) for s in sources):
        notes.append("no grader.check cells: each question graded once its answers were defined")
    tamper: list[str] = []
    token = secrets.token_hex(16)
    graded, cells, done, log = {}, {}, False, ""
    with tempfile.TemporaryDirectory(prefix="kd-sub-") as tmp, \
            (sandbox.limits() if sandboxed else contextlib.nullcontext([])) as cgroup:
        scratch = Path(tmp)
        argv = [sys.executable, "-m", "kdutils.course.notebook_runner"]
        env = {"KD_PROFILE": "smoke"} if os.environ.get("KD_PROFILE") == "smoke" else {}
        env["KD_CELL_TIMEOUT"] = str(cell_timeout)
        if cache is not None:
            env["KD_CACHE_DIR"] = str(Path(cache).resolve())
        if sandboxed:
            shared = [Path(cache).resolve()] if cache is not None else []
            runner = {"argv": sandbox.command(argv, scratch=scratch, env=env, readonly=[] if fill_cache else shared,
                                              writable=shared if fill_cache else [], cgroup=cgroup),
                      "cwd": str(scratch), "env": None}
            if not fill_cache:
                sandbox.hand_over(scratch)      # a root grader runs the submission as nobody: its folder is nobody's
        else:
            runner = {"argv": argv, "cwd": str(scratch), "env": {**os.environ, **env, "MPLBACKEND": "Agg"}}
        # the test process: trusted (it runs no student code), outside the sandbox, the notebook's side its child
        judge_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
        if cache is not None:
            judge_env["KD_CACHE_DIR"] = str(Path(cache).resolve())
        proc = subprocess.Popen([sys.executable, "-m", "kdutils.course.autograde"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=judge_env)
        lines, errs = [], []
        readers = [threading.Thread(target=_read_capped, args=(proc.stdout, lines), daemon=True),
                   threading.Thread(target=_read_capped, args=(proc.stderr, errs, 1 << 16), daemon=True)]
        for r in readers:
            r.start()
        proc.stdin.write(json.dumps({"token": token, "cells": sources, "tests": tests, "cell_timeout": cell_timeout,
                                     "grace": min(10.0, cell_timeout), "runner": runner}).encode())
        proc.stdin.close()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)      # the test process and the notebook's, whatever is left
        except ProcessLookupError:
            pass
        proc.wait()
        for r in readers:
            r.join(timeout=10)
        err = b"".join(errs).decode(errors="replace")
        graded, cells, done, bad = read_records(lines, token, qs)
        tamper += bad
        if records is not None:
            records.update(graded)
        log = read_regular(scratch / "output.log", OUTPUT_CAP)
    for q, rec in graded.items():
        row[q] = float(min(rec["score"], qs[q]))
    stopped = done if isinstance(done, str) else None
    last = max(cells, default=-1)
    if tamper:
        row.update({q: 0.0 for q in qs})
        row["status"] = "grading records rejected: " + "; ".join(dict.fromkeys(tamper)) + ": 0 points, review by hand"
    elif timed_out or stopped == "timed out":
        row["status"] = (f"timed out in code cell {last} (deaf to the {cell_timeout:g} s cell limit, or past the "
                         f"{timeout:g} s limit for the notebook: killed): questions graded before then kept")
    elif done is not True:
        why = stopped or (err.strip().splitlines()[-1][:200] if err.strip() else f"exit code {proc.returncode}")
        row["status"] = f"the notebook's process ended early after code cell {last} ({why}): questions graded before then kept"
    else:
        row["status"] = "; ".join(["graded", *notes])
    row["total"] = sum(row[q] for q in qs)
    for_instructor = _feedback(row, qs, graded, cells, list(dict.fromkeys(tamper)), log + ("\n" + err if err else ""), student=False)
    for_student = _feedback(row, qs, graded, cells, [], "", student=True)
    return row, for_instructor, for_student


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
    for f in sorted((out / "feedback").glob("*.txt")):
        if names is None or f.name.rsplit(".", 2)[0] in {submissions.feedback_stem(n) for n in names}:
            os.replace(f, target / "feedback" / f.name)
    return target


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
    dist = Path(dist or runtime.repo_root() / "dist")
    submissions_dir = Path(submissions_dir)
    if submissions_dir.is_file():
        raise GradingError(f"--submissions {submissions_dir} is a file: give the folder that holds the submissions")
    if not submissions_dir.is_dir():
        raise GradingError(f"submissions folder {submissions_dir} does not exist")
    found = submissions.find(submissions_dir, assignment)
    if not found:
        raise GradingError(f"no submissions in {submissions_dir}: the folder holds no files (nothing was written)")
    zip_path = find_autograder(assignment, dist)
    qs = questions(zip_path)
    tests = test_sources(zip_path)
    if sandboxed:
        if not sandbox.container_mode():
            sandbox.bwrap()                           # refuse now, before anything is written
    cache = zip_path.parent / "cache"
    cache = cache if cache.is_dir() else None
    # only now, with something to grade and a grader to grade it, is anything written
    out = Path(out or runtime.repo_root() / "grades" / assignment)
    (out / "feedback").mkdir(parents=True, exist_ok=True)
    columns = ["submission", *qs, *COLUMNS_AFTER]
    digests = {s.name: s.digest() for s in found}
    csv = out / "grades.csv"
    kept = []
    if csv.exists():
        old = pd.read_csv(csv, dtype={"digest": str}, keep_default_na=False)
        same_columns = list(old.columns) == columns
        keep = [r for r in old.to_dict("records") if same_columns and not regrade and digests.get(r["submission"]) == r["digest"]]
        if len(keep) < len(old):
            _archive(out, None if not keep else [r["submission"] for r in old.to_dict("records") if r not in keep])
        kept = keep
    done = {r["submission"] for r in kept}
    todo = [s for s in found if s.name not in done]
    rows = {r["submission"]: r for r in kept}

    def save():
        table = pd.DataFrame([rows[n] for n in sorted(rows)], columns=columns)
        atomic_write_text(csv, table.to_csv(index=False))
        return table

    table = save()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(grade_one, s, tests, qs, timeout=timeout, cell_timeout=cell_timeout,
                               sandboxed=sandboxed, cache=cache): s for s in todo}
        for fut in tqdm(as_completed(futures), total=len(futures), desc=f"grading {assignment}", disable=not progress):
            s = futures[fut]
            try:
                row, for_instructor, for_student = fut.result()
                row["digest"] = digests[s.name]
            except Exception as exc:   # one submission's failure never stops the batch; the next run retries it
                row = {"submission": s.name, **{q: 0.0 for q in qs}, "total": 0.0, "possible": sum(qs.values()),
                       "status": f"not graded: the grader failed on it ({type(exc).__name__}: {str(exc)[:150]}): "
                                 "review by hand", "digest": ""}
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


# what no student version may contain: otter's solution and test markers, and the rubrics
LEAK_MARKERS = ("# BEGIN SOLUTION", "# SOLUTION", "hidden=True", "Rubric (solution)", "# BEGIN TESTS")


def otter_assign(name: str, target: Path, *, timeout: float = 300.0, run_tests: bool = True, env=None) -> Path:
    """``otter assign`` one master into ``target`` (replaced): the autograder and the student version, the
    latter with its public tests carried inside for Colab (``student_for_colab``) and refused if it holds
    any of ``LEAK_MARKERS``. ``run_tests=False`` skips executing the master (seconds instead of minutes).
    Returns the student notebook."""
    master = assignments_root() / name / f"{name}.ipynb"
    if not master.exists():
        raise GradingError(f"no assignment {name!r} (expected {master})")
    shutil.rmtree(target, ignore_errors=True)
    cmd = [sys.executable, "-m", "otter", "assign", "--no-pdfs", *([] if run_tests else ["--no-run-tests"]), str(master), str(target)]
    code, out = _run(cmd, timeout, cwd=master.parent, env=env)
    if code != 0:
        raise GradingError(f"otter assign failed for {name}:\n{out[-2000:]}")
    student = student_for_colab(target / "student" / f"{name}.ipynb", name)
    leaks = [m for m in LEAK_MARKERS if m in student.read_text()]
    if leaks:
        raise GradingError(f"the student version of {name} contains {leaks}: refusing to hand it out")
    return student


def assign_all(names: list[str] | None = None, *, dist: Path | None = None, timeout: float = 300.0,
               verify: bool = True, jobs: int = 1) -> pd.DataFrame:
    """``otter assign`` every assignment into ``dist/`` and check each solution earns full marks.

    ``otter assign`` itself fails when a test fails on the solution; ``verify`` also grades the
    solution with the generated autograder zip, exactly as submissions will be graded. Each
    assignment also gets its Gradescope autograder (``kdutils.course.gradescope``).
    """
    from concurrent.futures import ThreadPoolExecutor

    from . import gradescope

    root = assignments_root()
    dist = Path(dist or runtime.repo_root() / "dist")

    def one(name):
        target = dist / name
        start = time.perf_counter()
        # otter assign executes the master: with KD_CACHE_DIR here, that run trains kdutils.zoo's teachers
        # once and the autograder ships them (autograder/cache), so no submission has to train them
        cache = dist / f".{name}-cache"
        shutil.rmtree(cache, ignore_errors=True)
        otter_assign(name, target, timeout=timeout, env={**os.environ, "KD_CACHE_DIR": str(cache)})
        cache.mkdir(exist_ok=True)
        os.replace(cache, target / "autograder" / "cache")
        zip_path = find_autograder(name, dist)
        qs = questions(zip_path)
        if verify:
            solution = submissions.Submission("solution", target / "autograder" / f"{name}.ipynb")
            cache = zip_path.parent / "cache"
            row, feedback, _ = grade_one(solution, test_sources(zip_path), qs, timeout=timeout, cache=cache,
                                         fill_cache=True, sandboxed=shutil.which("bwrap") is not None)
            short = {q: (row[q], p) for q, p in qs.items() if row[q] < p}
            if short or not row["status"].startswith("graded"):
                raise GradingError(f"the solution of {name} does not pass its own tests: {short} ({row['status']})\n{feedback}")
        gradescope.build(name, dist, wheel=wheel)
        return {"assignment": name, "questions": len(qs), "points": sum(qs.values()),
                "seconds": round(time.perf_counter() - start, 1), "student version": str(target / "student")}

    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        wheel = gradescope.kdutils_wheel(Path(tmp))          # one kdutils wheel for every Gradescope zip
        rows = list(pool.map(one, names or list_assignments(root)))
    return pd.DataFrame(rows)

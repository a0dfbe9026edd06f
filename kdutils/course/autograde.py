"""Grade one notebook, question by question: the process that runs inside the sandbox.

``python -m kdutils.course.autograde`` reads a job (JSON) on stdin -- the notebook's file name, the
autograder's test files (otter's exception-based format, as ``otter assign`` writes them), a
per-cell time limit and a random token -- and executes the notebook's code cells in order in an
IPython shell (so magics work). The tests never touch the disk: a submission cannot read or rewrite
them.

**Each question is graded on the state right after its own cells**, so a later cell that reuses a
name (``student = ...``) cannot change an earlier grade. A question is graded at up to three points
of the run, and keeps its best score:

1. right after the cell that runs ``grader.check("qN")`` (the student version has one per question);
2. right after the first cell after which every name its tests use is defined (this is how a
   notebook without the grader cells, or pasted into a fresh notebook, is graded);
3. at the end of the notebook.

A cell that raises, or runs past the per-cell limit, costs only what depends on it: the next
cells run. The results go out as one JSON line per graded question, prefixed with the token, on
a private copy of stdout; the submission's own output goes to ``output.log`` in its folder.

Tampering is reported, not graded: the autograder cell is replaced by an inert ``grader`` whose
only method is ``check``; any other use of it (``grader.update_score``, ...) and any replacement
of a function the tests rely on (``torch.isclose``, a builtin, ...) is reported as ``tamper``.
"""
from __future__ import annotations

import builtins
import inspect
import json
import os
import re
import signal
import sys
import time

CHECK = re.compile(r"""grader\s*\.\s*check\s*\(\s*(?:question\s*=\s*)?["']([^"']+)["']""")


def is_autograder_cell(src: str) -> bool:
    """The notebook's autograder set-up cell (master: ``# Autograder set-up...``; student version:
    ``# @title Autograder set-up ...``, see ``kdutils.course.colab``)."""
    first = src.lstrip().split("\n", 1)[0]
    return first.startswith("#") and "Autograder set-up" in first


class CellTimeout(BaseException):
    """Raised in a cell (or a test) that runs past the limit; a BaseException so `except Exception` cannot swallow it."""


class InertGrader:
    """Stands in for ``otter.Notebook`` while grading: ``check`` does nothing, anything else is tampering."""

    def __init__(self, report):
        object.__setattr__(self, "_report", report)

    def check(self, *args, **kwargs):
        return None

    def __getattr__(self, name):
        self._report(f"used grader.{name}")
        return lambda *a, **k: None

    def __setattr__(self, name, value):
        self._report(f"set grader.{name}")


class TestCase:
    """One ``@test_case`` of a test file (otter's exception-based format, read without importing
    otter: that import alone costs seconds per submission)."""

    def __init__(self, name=None, points=None, hidden=False, success_message=None, failure_message=None):
        self.name, self.points, self.hidden, self.failure_message = name, points, hidden, failure_message

    def __call__(self, func):
        self.func = func
        return self


def load_tests(source: str, path: str) -> tuple[list[TestCase], float]:
    """The test cases of one test file and the question's points, resolved as otter resolves them
    (a file's ``points`` shared by the cases that name none)."""
    env = {"__name__": "kd_tests"}
    code = "\n".join("" if line.startswith("from otter.test_files import") else line for line in source.split("\n"))
    env["test_case"] = TestCase
    exec(compile(code, path, "exec"), env)
    cases = [v for v in env.values() if isinstance(v, TestCase)]
    for i, tc in enumerate(cases):
        tc.name = tc.name or f"{env['name']} - {i + 1}"
    total = env.get("points")
    given = sum(tc.points for tc in cases if tc.points is not None)
    unnamed = sum(tc.points is None for tc in cases)
    if total is not None:
        share = (total - given) / unnamed if unnamed else 0.0
    else:
        share = 1 / unnamed if given == 0 and unnamed else 0.0
    for tc in cases:
        tc.points = share if tc.points is None else tc.points
    return cases, float(sum(tc.points for tc in cases))


def run_case(tc: TestCase, ns: dict, source_lines: list[str], path: str) -> tuple[bool, str]:
    """Call a test with the notebook's names as arguments; (passed, message)."""
    params = inspect.signature(tc.func).parameters
    try:
        tc.func(**{p: ns if p == "env" else ns.get(p) for p in params})
        return True, "passed"
    except Exception as exc:
        tb = exc.__traceback__
        line = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == path:
                line = tb.tb_lineno
            tb = tb.tb_next
        where = f"Error at line {line} in test {path}:\n  {source_lines[line - 1].strip()}\n" if line else ""
        return False, f"{where}{type(exc).__name__}: {str(exc).strip()}"


def _guarded():
    """The functions the tests rely on, by name: replacing any of them from a cell is tampering."""
    import torch
    import torch.nn.functional as F

    out = {f"builtins.{k}": v for k, v in vars(builtins).items() if callable(v)}
    for name in ("isclose", "allclose", "equal", "as_tensor", "tensor", "randn", "isfinite"):
        out[f"torch.{name}"] = getattr(torch, name)
    for name in ("double", "float", "item", "__float__", "__bool__", "__eq__", "__lt__", "__gt__", "__ge__", "__le__",
                 "backward", "abs", "sum", "mean", "max", "allclose", "isclose", "tolist"):
        out[f"torch.Tensor.{name}"] = getattr(torch.Tensor, name)
    for name in ("softmax", "log_softmax", "kl_div", "cross_entropy"):
        out[f"torch.nn.functional.{name}"] = getattr(F, name)
    return out


def _owner(dotted):
    import importlib

    mod, _, attr = dotted.rpartition(".")
    if mod == "torch.Tensor":
        import torch
        return torch.Tensor, attr
    return importlib.import_module(mod), attr


def main():
    job = json.loads(sys.stdin.read())
    sys.stdin.close()
    token = job["token"]
    out = os.fdopen(os.dup(1), "w", buffering=1)
    log = os.open("output.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)

    def emit(**record):
        out.write(token + json.dumps(record) + "\n")
        out.flush()

    tests = {q: load_tests(src, f"{q}.py") for q, src in job["tests"].items()}
    lines = {q: src.split("\n") for q, src in job["tests"].items()}
    needs = {q: sorted({p for tc in cases for p in inspect.signature(tc.func).parameters} - {"env"})
             for q, (cases, _) in tests.items()}
    possible = {q: points for q, (_, points) in tests.items()}

    with open(job["notebook"], encoding="utf-8") as f:
        cells = [c for c in json.load(f).get("cells", []) if c.get("cell_type") == "code"]
    sources = ["".join(c.get("source", "")) if isinstance(c.get("source"), list) else c.get("source", "") for c in cells]
    check_at = {}
    for i, src in enumerate(sources):
        for q in CHECK.findall(src):
            check_at.setdefault(q, i)

    tampered = []

    def report(what):
        if what not in tampered:
            tampered.append(what)
            emit(tamper=what)

    limit = float(job.get("cell_timeout", 60))

    def on_alarm(signum, frame):
        raise CellTimeout(f"ran past the {limit:g} s limit")

    signal.signal(signal.SIGALRM, on_alarm)

    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance(colors="nocolor")
    ns = shell.user_ns
    grader = InertGrader(report)
    ns["grader"] = grader
    guarded = _guarded()
    best = {q: None for q in tests}
    defined = set()                                   # questions whose answers are all defined by now

    def grade(q, at, why):
        results = []
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            for tc in tests[q][0]:
                passed, message = run_case(tc, ns, lines[q], f"{q}.py")
                results.append({"name": tc.name, "hidden": bool(tc.hidden), "points": tc.points, "passed": passed,
                                "message": message, "failure_message": None if passed else tc.failure_message})
        except CellTimeout:
            results.append({"name": f"{q} (time limit)", "hidden": False, "points": 0, "passed": False,
                            "message": f"the tests ran past the {limit:g} s limit", "failure_message": None})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        score = sum(r["points"] for r in results if r["passed"])
        if best[q] is None or score > best[q]:
            best[q] = score
            emit(question=q, score=score, possible=possible[q], cell=at, when=why, results=results)

    for i, src in enumerate(sources):
        if is_autograder_cell(src):
            continue                                  # the autograder cell: the inert grader stands in
        if "grader" in src:
            ns["grader"] = grader                     # a pasted `grader = otter.Notebook()` is replaced
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            result = shell.run_cell(src, store_history=True, silent=False)   # In[]: what the cells said
            error = result.error_before_exec or result.error_in_exec
        except CellTimeout as exc:
            error = exc
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        emit(cell=i, seconds=round(time.perf_counter() - start, 3),
             error=None if error is None else f"{type(error).__name__}: {str(error)[:300]}")
        for name, obj in guarded.items():
            owner, attr = _owner(name)
            if getattr(owner, attr, None) is not obj:
                report(f"replaced {name}")
                setattr(owner, attr, obj)
        for q in tests:
            if best[q] is not None and best[q] >= possible[q]:
                continue
            if check_at.get(q) == i:
                grade(q, i, "after its grader.check cell")
            elif q not in defined and all(n in ns for n in needs[q]):
                defined.add(q)
                grade(q, i, "once its answers were defined")
    for q in tests:
        if best[q] is None or best[q] < possible[q]:
            grade(q, len(sources) - 1, "at the end of the notebook")
    emit(done=True, cells=len(sources))


if __name__ == "__main__":
    main()

"""Grade one notebook, question by question: the trusted test process, which runs no student code.

``python -m kdutils.course.autograde`` reads a job (JSON) on stdin -- the notebook's code cells, the
autograder's test files (otter's exception-based format, as ``otter assign`` writes them), a
per-cell time limit, a random token, and the command that starts the notebook's side
(``kdutils.course.notebook_runner``, inside the sandbox) -- and drives that process over a pipe
(``kdutils.course.wire``): run this cell; give me the value of this name; call this function.

**The tests never share a process with the submission.** They run here, with their own ``torch``,
``F``, ``pandas``, ``matplotlib`` and ``kdutils`` modules (a test's parameter of one of those names is
always the trusted module, whatever the notebook called it); the token and the result channel
(this process's stdout) are out of the notebook's reach; what the notebook sends back is data
(tensors as bytes, numbers, strings, tables, a figure's contents) or a reference its tests can call,
never a pickle. Patching ``torch`` in a cell, a ``Tensor`` subclass, reading the tests from memory or
forging a result line changes nothing here.

**Each question is graded on the state right after its own cells**, so a later cell that reuses a
name (``student = ...``) cannot change an earlier grade. A question is graded at up to three points
of the run, and keeps its best score:

1. right after the cell that runs ``grader.check("qN")`` (the student version has one per question);
2. right after the first cell after which every name its tests use is defined (this is how a
   notebook without the grader cells, or pasted into a fresh notebook, is graded);
3. at the end of the notebook.

A name belongs to the first question whose tests use it (``student``: Question 1). A later question
that reuses it is graded with its value now and, if that name has since been bound to another object
(a cell exploring Question 4 retrains ``student``), once more with the object the first question was
graded with; it keeps the better score (``pin``/``rebound`` requests).

A cell that raises, or runs past the per-cell limit, costs only what depends on it: the next
cells run. A notebook deaf to the limit (minutes of C code) is killed after a grace period; one
that ends its own process, or breaks the channel, keeps the questions graded before. The results
go out as one JSON line per graded question, prefixed with the token, on stdout.
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import json
import re
import subprocess
import sys
import time

CHECK = re.compile(r"""grader\s*\.\s*check\s*\(\s*(?:question\s*=\s*)?["']([^"']+)["']""")


def is_autograder_cell(src: str) -> bool:
    """The notebook's autograder set-up cell (master: ``# Autograder set-up...``; student version:
    ``# @title Autograder set-up ...``, see ``kdutils.course.colab``)."""
    first = src.lstrip().split("\n", 1)[0]
    return first.startswith("#") and "Autograder set-up" in first


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


TRUSTED_MODULES = {"torch": "torch", "F": "torch.nn.functional", "nn": "torch.nn", "np": "numpy", "numpy": "numpy",
                   "pd": "pandas", "pandas": "pandas", "matplotlib": "matplotlib", "math": "math"}


@functools.lru_cache(maxsize=None)
def trusted_module(name: str):
    """The grader's own module a test parameter names (``torch``, ``F``, ``pd``, a ``kdutils`` module), or None."""
    target = TRUSTED_MODULES.get(name)
    if target is None and name.isidentifier() and name != "course" and importlib.util.find_spec(f"kdutils.{name}"):
        target = f"kdutils.{name}"
    if target is None:
        return None
    module = importlib.import_module(target)
    if target == "matplotlib":
        importlib.import_module("matplotlib.figure")
    return module


class Names:
    """What a test receives for each parameter: a trusted module, or the notebook's value (fetched as
    data or a reference, once per grading of a question; None when the notebook never defined it)."""

    def __init__(self, endpoint, defined: set[str], pinned: dict[str, str] | None = None):
        self.endpoint, self.defined, self.cache = endpoint, defined, {}
        self.pinned = pinned or {}           # name -> the earlier question whose graded value to use

    def get(self, name, default=None):
        module = trusted_module(name)
        if module is not None:
            return module
        if name not in self.defined and name not in self.pinned:
            return default
        if name not in self.cache:
            self.cache[name] = self.endpoint.request("get", name=name, pin=self.pinned.get(name))[0]
        return self.cache[name]

    def __getitem__(self, name):
        if name not in self.defined and trusted_module(name) is None:
            raise KeyError(name)
        return self.get(name)

    def __contains__(self, name):
        return name in self.defined or trusted_module(name) is not None


def main():
    import os

    job = json.loads(sys.stdin.read())
    sys.stdin.close()
    runner = job["runner"]          # started first: its imports (torch, IPython) overlap this process's
    proc = subprocess.Popen(runner["argv"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=runner.get("cwd"),
                            env=runner.get("env"))

    import torch

    from . import wire

    torch.set_num_threads(1)
    token = job["token"]
    out = sys.stdout

    def emit(**record):
        out.write(token + json.dumps(record) + "\n")
        out.flush()

    tests = {q: load_tests(src, f"{q}.py") for q, src in job["tests"].items()}
    lines = {q: src.split("\n") for q, src in job["tests"].items()}
    needs = {q: sorted({p for tc in cases for p in inspect.signature(tc.func).parameters} - {"env"})
             for q, (cases, _) in tests.items()}
    needs = {q: [n for n in names if trusted_module(n) is None] for q, names in needs.items()}
    possible = {q: points for q, (_, points) in tests.items()}
    sources = job["cells"]
    check_at = {}
    for i, src in enumerate(sources):
        for q in CHECK.findall(src):
            check_at.setdefault(q, i)
    limit = float(job.get("cell_timeout", 60))
    grace = float(job.get("grace", 10))

    ep = wire.Endpoint(proc.stdout.fileno(), proc.stdin.fileno(), trusted_peer=False)
    best = {q: None for q in tests}
    defined_q = set()                                 # questions whose answers are all defined by now
    names: set[str] = set()
    stopped = None

    def channel_lost(exc) -> str:
        if isinstance(exc, wire.Timeout):
            return "timed out"
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if isinstance(exc, wire.ProtocolError) or code is None:
            return f"broke the grading channel ({str(exc)[:150]})"
        return f"exit code {code}"

    # a name belongs to the first question whose tests use it (`student`: Question 1); a later question that
    # reuses it is also graded with the value that question was graded with, and keeps the better score
    owner = {}
    for q in tests:
        for n in needs[q]:
            owner.setdefault(n, q)
    pinned_at: set[str] = set()

    def run_tests(q, pinned=None):
        nonlocal stopped
        results = []
        ns = Names(ep, names, pinned)
        ep.deadline = time.monotonic() + limit
        try:
            for tc in tests[q][0]:
                passed, message = run_case(tc, ns, lines[q], f"{q}.py")
                results.append({"name": tc.name, "hidden": bool(tc.hidden), "points": tc.points, "passed": passed,
                                "message": message, "failure_message": None if passed else tc.failure_message})
        except wire.Timeout:
            results.append({"name": f"{q} (time limit)", "hidden": False, "points": 0, "passed": False,
                            "message": f"the tests ran past the {limit:g} s limit", "failure_message": None})
        except (wire.ChannelClosed, wire.ProtocolError) as exc:
            stopped = channel_lost(exc)
            results.append({"name": f"{q} (notebook gone)", "hidden": False, "points": 0, "passed": False,
                            "message": f"the notebook's process {stopped} during the tests", "failure_message": None})
        finally:
            ep.deadline = None
        return results, sum(r["points"] for r in results if r["passed"])

    def grade(q, at, why):
        nonlocal stopped
        results, score = run_tests(q)
        borrowed = [[n, owner[n]] for n in needs[q] if owner[n] != q and owner[n] in pinned_at]
        if score < possible[q] and borrowed and not stopped:
            try:
                ep.deadline = time.monotonic() + limit
                rebound = ep.request("rebound", pairs=borrowed)[0]
            except (wire.Timeout, wire.ChannelClosed, wire.ProtocolError) as exc:
                stopped, rebound = channel_lost(exc), []
            finally:
                ep.deadline = None
            if isinstance(rebound, list) and rebound and not stopped:
                again, score_again = run_tests(q, {n: owner[n] for n in rebound if n in owner})
                if score_again > score:
                    results, score = again, score_again
                    graded_in = ", ".join(sorted({owner[n] for n in rebound if n in owner}))
                    why += f" (with {', '.join(map(str, rebound))} as graded in {graded_in})"
        if best[q] is None or score > best[q]:
            best[q] = score
            emit(question=q, score=score, possible=possible[q], cell=at, when=why, results=results)
            mine = [n for n in needs[q] if owner[n] == q]
            if mine and not stopped:
                try:                              # the values this score was earned with, kept for later questions
                    ep.deadline = time.monotonic() + limit
                    ep.request("pin", key=q, names=mine)
                    pinned_at.add(q)
                except (wire.Timeout, wire.ChannelClosed, wire.ProtocolError):
                    pass
                finally:
                    ep.deadline = None

    last = -1
    for i, src in enumerate(sources):
        if is_autograder_cell(src):
            continue                                  # the autograder cell: the inert grader stands in
        ep.deadline = time.monotonic() + limit + grace
        try:
            info = ep.request("run", source=src)[0]
        except (wire.Timeout, wire.ChannelClosed, wire.ProtocolError) as exc:
            stopped = channel_lost(exc)
            emit(cell=i, seconds=None, error=f"the notebook's process {stopped} in this cell")
            last = i
            break
        finally:
            ep.deadline = None
        last = i
        if not (isinstance(info, dict) and isinstance(info.get("names"), list)):
            stopped = "broke the grading channel (a malformed answer)"
            emit(cell=i, seconds=None, error=stopped)
            break
        names = {n for n in info["names"] if isinstance(n, str)}
        seconds = info.get("seconds") if isinstance(info.get("seconds"), (int, float)) else None
        error = str(info["error"])[:400] if info.get("error") is not None else None
        emit(cell=i, seconds=seconds, error=error)
        for q in tests:
            if best[q] is not None and best[q] >= possible[q]:
                continue
            if check_at.get(q) == i:
                grade(q, i, "after its grader.check cell")
            elif q not in defined_q and all(n in names for n in needs[q]):
                defined_q.add(q)
                grade(q, i, "once its answers were defined")
            if stopped:
                break
        if stopped:
            break
    if not stopped:
        for q in tests:
            if best[q] is None or best[q] < possible[q]:
                grade(q, max(last, 0), "at the end of the notebook")
                if stopped:
                    break
    if stopped:
        emit(stopped=stopped)
    else:
        emit(done=True, cells=len(sources))
    try:
        proc.stdin.close()
        proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    os._exit(0)


if __name__ == "__main__":
    main()

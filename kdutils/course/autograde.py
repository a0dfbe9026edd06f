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
import subprocess
import sys
import time

from .otterformat import CHECK, is_autograder_cell


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


class Judge:
    """Grades one notebook's questions while its cells run, one request at a time over ``ep`` (``wire``).

    ``tests`` {question: test file source}; ``emit(**record)`` sends a record to the host. The state
    kept between cells: the names the notebook has defined, each question's best score, which
    questions' answers were pinned (``pin``) for later questions that reuse a name (module docstring).
    """

    def __init__(self, ep, proc, tests: dict[str, str], emit, *, limit: float):
        self.ep, self.proc, self.emit, self.limit = ep, proc, emit, limit
        self.tests = {q: load_tests(src, f"{q}.py") for q, src in tests.items()}
        self.lines = {q: src.split("\n") for q, src in tests.items()}
        self.possible = {q: points for q, (_, points) in self.tests.items()}
        params = {q: sorted({p for tc in cases for p in inspect.signature(tc.func).parameters} - {"env"})
                  for q, (cases, _) in self.tests.items()}
        self.needs = {q: [n for n in names if trusted_module(n) is None] for q, names in params.items()}
        self.owner = {}                      # a name belongs to the first question whose tests use it
        for q in self.tests:
            for n in self.needs[q]:
                self.owner.setdefault(n, q)
        self.best = {q: None for q in self.tests}
        self.pinned_at: set[str] = set()
        self.names: set[str] = set()
        self.stopped = None                  # why the notebook's process is gone, once it is

    def unfinished(self, q) -> bool:
        return self.best[q] is None or self.best[q] < self.possible[q]

    def lost(self, exc) -> str:
        """Why the channel failed: a timeout, a broken protocol, or the process's exit code."""
        from . import wire

        if isinstance(exc, wire.Timeout):
            return "timed out"
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if isinstance(exc, wire.ProtocolError) or code is None:
            return f"broke the grading channel ({str(exc)[:150]})"
        return f"exit code {code}"

    def request(self, kind, *, extra: float = 0.0, **fields):
        """One request to the notebook's side within the per-cell limit; a lost channel sets ``stopped``
        and returns None."""
        from . import wire

        self.ep.deadline = time.monotonic() + self.limit + extra
        try:
            return self.ep.request(kind, **fields)[0]
        except (wire.Timeout, wire.ChannelClosed, wire.ProtocolError) as exc:
            self.stopped = self.lost(exc)
            return None
        finally:
            self.ep.deadline = None

    def run_tests(self, q, pinned=None) -> tuple[list[dict], float]:
        """Every test case of ``q`` on the notebook's values now (or those ``pinned``); (results, score)."""
        from . import wire

        def failed(name, message):
            return {"name": name, "hidden": False, "points": 0, "passed": False, "message": message,
                    "failure_message": None}

        results = []
        ns = Names(self.ep, self.names, pinned)
        self.ep.deadline = time.monotonic() + self.limit
        try:
            for tc in self.tests[q][0]:
                passed, message = run_case(tc, ns, self.lines[q], f"{q}.py")
                results.append({"name": tc.name, "hidden": bool(tc.hidden), "points": tc.points, "passed": passed,
                                "message": message, "failure_message": None if passed else tc.failure_message})
        except wire.Timeout:
            results.append(failed(f"{q} (time limit)", f"the tests ran past the {self.limit:g} s limit"))
        except (wire.ChannelClosed, wire.ProtocolError) as exc:
            self.stopped = self.lost(exc)
            results.append(failed(f"{q} (notebook gone)", f"the notebook's process {self.stopped} during the tests"))
        finally:
            self.ep.deadline = None
        return results, sum(r["points"] for r in results if r["passed"])

    def grade(self, q, at: int, why: str) -> None:
        """Grade ``q`` now; if it falls short and reuses names an earlier question was graded with that the
        notebook has since rebound, grade it again with those; emit the score if it is ``q``'s best."""
        results, score = self.run_tests(q)
        borrowed = [[n, self.owner[n]] for n in self.needs[q] if self.owner[n] != q and self.owner[n] in self.pinned_at]
        if score < self.possible[q] and borrowed and not self.stopped:
            rebound = self.request("rebound", pairs=borrowed)
            if isinstance(rebound, list) and rebound and not self.stopped:
                again, score_again = self.run_tests(q, {n: self.owner[n] for n in rebound if n in self.owner})
                if score_again > score:
                    results, score = again, score_again
                    graded_in = ", ".join(sorted({self.owner[n] for n in rebound if n in self.owner}))
                    why += f" (with {', '.join(map(str, rebound))} as graded in {graded_in})"
        if self.best[q] is not None and score <= self.best[q]:
            return
        self.best[q] = score
        self.emit(question=q, score=score, possible=self.possible[q], cell=at, when=why, results=results)
        mine = [n for n in self.needs[q] if self.owner[n] == q]
        if mine and not self.stopped:        # the values this score was earned with, kept for later questions
            self.pin(q, mine)

    def pin(self, q, names: list[str]) -> None:
        """Ask the notebook's side to hold ``names``' objects as ``q`` was graded with them. A failure costs
        the pin only (the next cell finds a lost channel)."""
        from . import wire

        self.ep.deadline = time.monotonic() + self.limit
        try:
            self.ep.request("pin", key=q, names=names)
            self.pinned_at.add(q)
        except (wire.Timeout, wire.ChannelClosed, wire.ProtocolError):
            pass
        finally:
            self.ep.deadline = None

    def run_cell(self, i: int, src: str, *, grace: float) -> bool:
        """Run cell ``i`` in the notebook's process and record it; False when the process is gone."""
        info = self.request("run", extra=grace, source=src)
        if self.stopped:
            self.emit(cell=i, seconds=None, error=f"the notebook's process {self.stopped} in this cell")
            return False
        if not (isinstance(info, dict) and isinstance(info.get("names"), list)):
            self.stopped = "broke the grading channel (a malformed answer)"
            self.emit(cell=i, seconds=None, error=self.stopped)
            return False
        self.names = {n for n in info["names"] if isinstance(n, str)}
        seconds = info.get("seconds") if isinstance(info.get("seconds"), (int, float)) else None
        error = str(info["error"])[:400] if info.get("error") is not None else None
        self.emit(cell=i, seconds=seconds, error=error)
        return True

    def run(self, sources: list[str], *, grace: float) -> None:
        """Every cell in order, each question graded at its grader.check cell, once its answers are
        defined, and at the end (module docstring); then a last record: done, or why it stopped."""
        check_at = {}
        for i, src in enumerate(sources):
            for q in CHECK.findall(src):
                check_at.setdefault(q, i)
        defined_q, last = set(), -1
        for i, src in enumerate(sources):
            if is_autograder_cell(src):
                continue                                  # the autograder cell: the inert grader stands in
            last = i
            if not self.run_cell(i, src, grace=grace):
                break
            for q in [q for q in self.tests if self.unfinished(q)]:
                if check_at.get(q) == i:
                    self.grade(q, i, "after its grader.check cell")
                elif q not in defined_q and all(n in self.names for n in self.needs[q]):
                    defined_q.add(q)
                    self.grade(q, i, "once its answers were defined")
                if self.stopped:
                    break
            if self.stopped:
                break
        for q in self.tests:
            if self.stopped:
                break
            if self.unfinished(q):
                self.grade(q, max(last, 0), "at the end of the notebook")
        if self.stopped:
            self.emit(stopped=self.stopped)
        else:
            self.emit(done=True, cells=len(sources))


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
    token, out = job["token"], sys.stdout

    def emit(**record):
        out.write(token + json.dumps(record) + "\n")
        out.flush()

    ep = wire.Endpoint(proc.stdout.fileno(), proc.stdin.fileno(), trusted_peer=False)
    judge = Judge(ep, proc, job["tests"], emit, limit=float(job.get("cell_timeout", 60)))
    judge.run(job["cells"], grace=float(job.get("grace", 10)))
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

"""The notebook's side of grading: the only process that runs the submission's code (in the sandbox).

``python -m kdutils.course.notebook_runner`` talks to the grader's test process
(``kdutils.course.autograde``) over its stdin and stdout (``kdutils.course.wire``). It holds no
test, no token and no result channel: it runs the cells it is sent, one at a time, in an IPython
shell (so magics work), and answers the test process's questions about the notebook's names with
data. Its own output goes to ``output.log`` (``$KD_OUTPUT_LOG``). Every request runs under the per-cell time limit
(``SIGALRM``): a loop in a cell, or in a function a test calls, is stopped there.

The autograder set-up cell is never run: ``grader`` is an inert stand-in whose methods do nothing,
so ``grader.check("q1")`` (and ``grader.check_all()``, or any other call) runs without otter.
"""
from __future__ import annotations

import os
import signal
import sys
import time


class CellTimeout(BaseException):
    """Raised in a cell (or a called function) that runs past the limit; ``except Exception`` cannot swallow it."""


class InertGrader:
    """Stands in for ``otter.Notebook`` while grading: every method does nothing."""

    def __getattr__(self, name):
        return lambda *a, **k: None


def main():
    proto_in, proto_out = os.dup(0), os.dup(1)
    limit = float(os.environ.get("KD_CELL_TIMEOUT", "60"))
    log = os.open(os.environ.get("KD_OUTPUT_LOG", "output.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdin = open(os.devnull)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)

    from IPython.core.interactiveshell import InteractiveShell

    from . import wire

    shell = InteractiveShell.instance(colors="nocolor")
    ns = shell.user_ns
    grader = InertGrader()
    ns["grader"] = grader

    def on_alarm(signum, frame):
        raise CellTimeout(f"ran past the {limit:g} s limit")

    signal.signal(signal.SIGALRM, on_alarm)
    depth = [0]

    def limited(run):
        depth[0] += 1
        if depth[0] == 1:
            signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            return run()
        finally:
            if depth[0] == 1:
                signal.setitimer(signal.ITIMER_REAL, 0)
            depth[0] -= 1

    def run_cell(source: str):
        if "grader" in source:
            ns["grader"] = grader                  # a pasted `grader = otter.Notebook()` is replaced
        start = time.perf_counter()
        try:
            result = shell.run_cell(source, store_history=True, silent=False)   # In[]: what the cells said
            error = result.error_before_exec or result.error_in_exec
        except CellTimeout as exc:
            error = exc
        if "grader" in source:
            ns["grader"] = grader
        return {"seconds": round(time.perf_counter() - start, 3),
                "error": None if error is None else f"{type(error).__name__}: {str(error)[:300]}",
                "names": sorted(k for k in ns if isinstance(k, str) and not k.startswith("_"))[:20000]}, {}

    pins: dict = {}            # question -> {name: the object it was bound to when that question was graded}

    def get(name: str, pin=None):
        where = pins.get(pin, {}) if pin is not None else ns
        if not isinstance(name, str) or name not in where:
            raise NameError(f"name {name!r} is not defined")
        return where[name], {}

    def pin(key: str, names: list):
        pins[key] = {n: ns[n] for n in names if isinstance(n, str) and n in ns}
        return None, {}

    def rebound(pairs: list):
        """Which names are no longer bound to the object their question was graded with."""
        out = []
        for n, key in pairs:
            held = pins.get(key, {})
            if n in held and (n not in ns or ns[n] is not held[n]):
                out.append(n)
        return out, {}

    wire.SERVED["run"] = lambda ep, inp, source: run_cell(source)
    wire.SERVED["get"] = lambda ep, inp, name, pin=None: get(name, pin)
    wire.SERVED["pin"] = lambda ep, inp, key, names: pin(key, names)
    wire.SERVED["rebound"] = lambda ep, inp, pairs: rebound(pairs)
    ep = wire.Endpoint(proto_in, proto_out, trusted_peer=True)
    ep.on_request = limited
    ep.serve_forever()
    os._exit(0)


if __name__ == "__main__":
    main()

"""A Gradescope autograder per assignment: the course's grader, its environment and its teachers in one zip.

``make assignments`` writes ``dist/<name>/gradescope/<name>-gradescope.zip`` (``build``). Uploaded as a
Gradescope programming assignment's autograder, Gradescope unpacks it into ``/autograder/source`` and
runs, once per image build, ``setup.sh`` (a virtual environment in ``/autograder/venv``: the pinned CPU
build of torch and the exact package versions this course was tested with, ``requirements.txt``,
then the ``kdutils`` wheel inside the zip, with ``bubblewrap`` and ``util-linux`` from apt), and for
each submission ``run_autograder``, which calls ``python -m kdutils.course.gradescope`` (``run``):

* the student's notebook is found in ``/autograder/submission`` as ``make grade`` finds it
  (``kdutils.course.submissions``) and graded by the same code (``grade.grade_one``): the cells run
  in the sandbox, the tests in the trusted test process, with the teachers shipped in ``cache/``;
* where bubblewrap cannot run (Gradescope's containers have no user namespaces), the submission runs
  as the user ``nobody`` with every capability dropped and ``prlimit``'s limits (``KD_SANDBOX=container``),
  with the autograder's files closed to it: the container is the sandbox, one per submission;
* ``/autograder/results/results.json`` gets one entry per question: its score, and only what the
  student may see (``feedback.student_message``): the public tests' output at once, the hidden tests'
  messages (never their code) once the grades are published.

Tested offline by running ``run_autograder`` in a simulated ``/autograder`` layout (``source/``,
``submission/``, ``results/``), with this machine's environment standing in for ``setup.sh``'s.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from .. import runtime
from ..files import atomic_write_text

TORCH = ("torch", "torchvision")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once when it builds the autograder's image (as root, with network).
set -euo pipefail
apt-get update
apt-get install -y python3 python3-venv python3-pip bubblewrap util-linux
cd /autograder/source
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --upgrade pip
/autograder/venv/bin/pip install {torch} --index-url {index}
/autograder/venv/bin/pip install -r requirements.txt
/autograder/venv/bin/pip install --no-deps wheels/*.whl
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for each submission (as root): grade /autograder/submission into /autograder/results.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PYTHON="${KD_GRADESCOPE_PYTHON:-$ROOT/venv/bin/python}"
exec "$PYTHON" -m kdutils.course.gradescope run --root "$ROOT"
"""


def _requirements() -> str:
    """This environment's exact versions of what the grader imports (torch comes from its CPU index)."""
    wanted = {"numpy", "pandas", "matplotlib", "seaborn", "ipython", "nbformat", "tqdm", "scipy", "scikit-learn",
              "mnist1d", "safetensors"}
    found = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name in wanted:
            found[name] = dist.version
    # the dependencies of what is wanted, as installed here (so the image matches what was tested)
    todo, seen = list(found), set(found)
    while todo:
        name = todo.pop()
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for req in reqs:
            if "extra ==" in req:
                continue
            dep = req.split(";")[0].strip().split(" ")[0]
            for sep in "<>=!~[(":
                dep = dep.split(sep)[0]
            dep = dep.strip().lower()
            if dep and dep not in seen and not dep.startswith("nvidia") and dep not in ("torch", "triton"):
                seen.add(dep)
                try:
                    found[dep] = metadata.version(dep)
                    todo.append(dep)
                except metadata.PackageNotFoundError:
                    pass
    return "".join(f"{n}=={v}\n" for n, v in sorted(found.items()))


def kdutils_wheel(into: Path) -> Path:
    """The kdutils wheel, built from this checkout (no dependencies: requirements.txt pins them)."""
    into.mkdir(parents=True, exist_ok=True)
    code = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(into), str(runtime.repo_root())], capture_output=True, text=True)
    wheels = sorted(into.glob("kdutils-*.whl"))
    if code.returncode != 0 or not wheels:
        raise RuntimeError(f"could not build the kdutils wheel:\n{code.stdout[-2000:]}{code.stderr[-2000:]}")
    return wheels[-1]


def build(name: str, dist: Path, wheel: Path | None = None) -> Path:
    """Write ``dist/<name>/gradescope/<name>-gradescope.zip`` from the assignment's autograder and cache
    (``wheel``: a kdutils wheel already built, else one is built here)."""
    from . import layout

    autograder = layout.autograder_zip(name, dist)
    cache = autograder.parent / "cache"
    target = Path(dist) / name / "gradescope"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    torch = " ".join(f"{p}=={metadata.version(p).split('+')[0]}" for p in TORCH)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(wheel) if wheel is not None else kdutils_wheel(Path(tmp) / "wheels")
        out = target / f"{name}-gradescope.zip"
        with zipfile.ZipFile(out.with_suffix(".tmp"), "w", zipfile.ZIP_DEFLATED) as z:
            def text(path, body, mode=0o644):
                info = zipfile.ZipInfo(path)
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                z.writestr(info, body)
            text("setup.sh", SETUP_SH.format(torch=torch, index=CPU_INDEX), 0o755)
            text("run_autograder", RUN_AUTOGRADER, 0o755)
            text("requirements.txt", _requirements())
            text("config.json", json.dumps({"assignment": name}, indent=1) + "\n")
            z.write(wheel, f"wheels/{wheel.name}")
            z.write(autograder, "autograder.zip")
            if cache.is_dir():
                for f in sorted(cache.rglob("*")):
                    if f.is_file():
                        z.write(f, f"cache/{f.relative_to(cache).as_posix()}")
        os.replace(out.with_suffix(".tmp"), out)
    return out


def results(row: dict, qs: dict[str, float], graded: dict) -> dict:
    """Gradescope's results.json: per question the score with the hidden tests' messages (shown once
    published), and the public tests' output (shown at once); never a hidden test's code."""
    from .feedback import student_message

    def show(rs):
        return "\n".join(f"{r['name']}: " + ("passed" if r["passed"] else student_message(r)) for r in rs)

    tests = []
    for q, points in qs.items():
        g = graded.get(q) or {"results": []}
        public = [r for r in g["results"] if not r["hidden"]]
        hidden = [r for r in g["results"] if r["hidden"]]
        tests.append({"name": f"{q}: public tests", "score": 0, "max_score": 0, "visibility": "visible",
                      "output": show(public) or ("not graded: the notebook stopped before it" if q not in graded else "")})
        tests.append({"name": q, "score": float(row[q]), "max_score": float(points), "visibility": "after_published",
                      "output": show(hidden)})
    return {"score": float(row["total"]), "visibility": "after_published", "stdout_visibility": "hidden",
            "output": f"status: {row['status']}", "tests": tests}


def run(root: Path) -> dict:
    """Grade the one submission in ``root/submission`` into ``root/results/results.json``."""
    from . import grade, otterformat, sandbox, submissions

    root = Path(root)
    source, results_dir = root / "source", root / "results"
    name = json.loads((source / "config.json").read_text())["assignment"]
    autograder = source / "autograder.zip"
    tests = otterformat.read_tests(autograder)
    qs = tests.points
    cache = source / "cache"
    if os.geteuid() == 0:
        # the submission runs as nobody: the autograder's files closed to it, the teachers readable
        readable = root / "kd-cache"
        shutil.rmtree(readable, ignore_errors=True)
        if cache.is_dir():
            shutil.copytree(cache, readable)
            for p in [readable, *readable.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
            cache = readable
        source.chmod(0o700)
        results_dir.mkdir(exist_ok=True)
        results_dir.chmod(0o700)
    sub = submissions.one_student(root / "submission", name)
    results_dir.mkdir(exist_ok=True)
    if sub.problem:
        out = {"score": 0.0, "output": f"not graded: {sub.problem}", "visibility": "visible", "tests": []}
    else:
        if not sandbox.bwrap_works():
            os.environ["KD_SANDBOX"] = "container"
        graded: dict = {}
        row, _, _ = grade.grade_one(sub, tests.sources, qs, timeout=float(os.environ.get("KD_TIMEOUT", 600)),
                                    cache=cache if cache.is_dir() else None, records_out=graded)
        out = results(row, qs, graded)
    atomic_write_text(results_dir / "results.json", json.dumps(out, indent=1) + "\n")
    return out


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(prog="python -m kdutils.course.gradescope")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="grade /autograder/submission (Gradescope's run_autograder)")
    r.add_argument("--root", default="/autograder")
    args = p.parse_args(argv)
    out = run(Path(args.root))
    print(f"graded: {out['score']:g} points; {out.get('output', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Gradescope autograder of each assignment, run as Gradescope runs it, in a simulated /autograder.

Gradescope unpacks the zip into ``/autograder/source``, puts the student's upload in
``/autograder/submission`` and runs ``run_autograder``, reading ``/autograder/results/results.json``.
Here the layout is a temporary folder and this machine's environment stands in for what ``setup.sh``
installs; the submission runs as Gradescope's containers allow (``KD_SANDBOX=container``: as nobody,
no bubblewrap, inside a stand-in for the container), and once in bubblewrap for a1.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kdutils.course import layout, otterformat, sandbox

pytestmark = pytest.mark.slow


def _layout(tmp: Path, zip_path: Path, notebook: Path, upload_name: str) -> Path:
    root = tmp / "autograder"
    (root / "submission").mkdir(parents=True)
    (root / "results").mkdir()
    with zipfile.ZipFile(zip_path) as z:
        z.extractall(root / "source")
    for f in ("run_autograder", "setup.sh"):
        (root / "source" / f).chmod(0o755)
    shutil.copy(notebook, root / "submission" / upload_name)
    return root


def _container(root: Path) -> tuple[list[str], str]:
    """A stand-in for Gradescope's container (root, the machine's files, ``/autograder`` readable by any user):
    this machine as is, except that Python (under root's home here) is reachable by ``nobody``, and the
    layout mounted at ``/mnt/autograder``. Returns (command prefix, the layout's path inside)."""
    python = Path(sys.base_prefix).resolve()
    cmd = [sandbox.bwrap(), "--bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    if python.is_relative_to("/root"):
        cmd += ["--perms", "0755", "--tmpfs", "/root"]
        for folder in reversed(python.parents):
            if folder.is_relative_to("/root") and folder != Path("/root"):
                cmd += ["--perms", "0755", "--dir", str(folder)]
        cmd += ["--ro-bind", str(python), str(python)]
    cmd += ["--perms", "0755", "--tmpfs", "/mnt", "--bind", str(root), "/mnt/autograder", "--"]
    return cmd, "/mnt/autograder"


def _run(root: Path, **env) -> dict:
    prefix, inside = _container(root) if env.get("KD_SANDBOX") == "container" else ([], str(root))
    done = subprocess.run([*prefix, "bash", f"{inside}/source/run_autograder"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "AUTOGRADER_ROOT": inside, "KD_GRADESCOPE_PYTHON": sys.executable, **env})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads((root / "results" / "results.json").read_text())


@pytest.mark.parametrize("name", layout.list_assignments())
def test_gradescope_zip_grades_the_solution_fully_and_the_student_version_zero(assigned, tmp_path, name):
    zip_path = assigned / name / "gradescope" / f"{name}-gradescope.zip"
    assert zip_path.exists(), "make assignments writes a Gradescope zip per assignment"
    with zipfile.ZipFile(zip_path) as z:
        names = set(z.namelist())
        setup = z.read("setup.sh").decode()
    assert {"setup.sh", "run_autograder", "requirements.txt", "config.json", "autograder.zip"} <= names
    assert any(n.startswith("wheels/kdutils-") for n in names), "the kdutils wheel is inside"
    assert "download.pytorch.org/whl/cpu" in setup and "torch==" in setup, "a pinned CPU torch"
    qs = otterformat.read_tests(layout.autograder_zip(name, assigned)).points
    cache = assigned / name / "autograder" / "cache"
    shipped = {f"cache/{p.relative_to(cache).as_posix()}" for p in cache.rglob("*") if p.suffix in (".pt", ".npz")}
    assert shipped <= names, f"the trained teachers and datasets are inside: missing {sorted(shipped - names)[:3]}"

    solution = assigned / name / "autograder" / f"{name}.ipynb"
    student = assigned / name / "student" / f"{name}.ipynb"
    modes = [{"KD_SANDBOX": "container"}] + ([{}] if name == "a1_kd_losses" else [])
    for mode in modes:
        got = _run(_layout(tmp_path / f"sol{len(mode)}", zip_path, solution, f"{name}.ipynb"), **mode)
        assert got["score"] == sum(qs.values()), got
        scored = {t["name"]: t for t in got["tests"] if t["max_score"] > 0}
        assert {q: scored[q]["score"] for q in qs} == {q: float(p) for q, p in qs.items()}
        assert all(t["visibility"] == "after_published" for t in scored.values()), "hidden results wait for publication"
    got = _run(_layout(tmp_path / "stu", zip_path, student, "my upload.ipynb"), KD_SANDBOX="container")
    assert got["score"] == 0 and all(t["score"] == 0 for t in got["tests"]), got
    text = json.dumps(got)
    assert "def test_" not in text and "suspects = {" not in text, "no hidden test's source in what students see"


def test_gradescope_without_a_notebook_says_so(assigned, tmp_path):
    name = "a1_kd_losses"
    zip_path = assigned / name / "gradescope" / f"{name}-gradescope.zip"
    root = _layout(tmp_path, zip_path, assigned / name / "student" / f"{name}.ipynb", "a.ipynb")
    shutil.copy(root / "submission" / "a.ipynb", root / "submission" / "b.ipynb")
    got = _run(root, KD_SANDBOX="container")
    assert got["score"] == 0 and "ambiguous" in got["output"], got

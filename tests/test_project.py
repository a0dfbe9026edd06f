"""The project's set-up: Colab cells, environment files, notebook hygiene, the CLI."""
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest

from kdutils.course import colab

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in py["dependencies"] + py["optional-dependencies"]["dev"]}
    conda_alias = {"pytorch": "torch"}
    names = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("dependencies:"):].splitlines():
        m = re.match(r"^\s*-\s+([A-Za-z0-9_.-]+)", line)
        if m and m.group(1) not in ("pip", "python", "-e"):
            names.add(conda_alias.get(_name(m.group(1)), _name(m.group(1))))
    assert names == wanted, f"only in environment.yml: {names - wanted}; only in pyproject: {wanted - names}"


def test_pyproject_uses_lower_bounds_only():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in py["dependencies"]:
        assert ">=" in req and "==" not in req and "<" not in req.replace(">=", ""), req


@pytest.mark.parametrize("path", NOTEBOOKS + sorted((ROOT / "notebooks" / "assignments").rglob("*.ipynb")),
                         ids=lambda p: p.name)
def test_notebook_starts_with_badge_and_colab_setup_and_has_no_stray_outputs(path):
    nb = nbformat.read(path, as_version=4)
    first, second = nb.cells[0], nb.cells[1]
    assert first.cell_type == "markdown" and colab.BADGE_RE.search(first.source), "first cell needs a Colab badge"
    assert colab.BADGE_RE.search(first.source)["path"] == path.relative_to(ROOT).as_posix()
    assert second.cell_type == "code" and "google.colab" in second.source and colab.INSTALL_RE.search(second.source)
    for cell in nb.cells:
        if cell.cell_type == "code" and "NBVAL_CHECK_OUTPUT" not in cell.source:
            assert not cell.get("outputs"), f"stored output in a cell that is not NBVAL_CHECK_OUTPUT: {cell.source[:60]!r}"
    assert "torch" not in re.findall(r"pip\", \"install\"[^\n]*", second.source)


def test_colab_setup_cell_is_a_no_op_outside_colab():
    code = colab.setup_cell_source("someone/fork", "dev")
    sentinel = {}
    exec(compile(code, "setup", "exec"), sentinel)  # would try to pip install if it thought it was Colab
    assert "google.colab" not in sys.modules


def test_colab_rewrite_on_a_copy(tmp_path):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    before = {p: p.read_text() for p in (tmp_path / "notebooks").rglob("*.ipynb")}
    out = subprocess.run([sys.executable, "-m", "kdutils", "colab", "--repo", "prof-x/kd-fall",
                          "--branch", "term-2", "--root", str(tmp_path / "notebooks")],
                         capture_output=True, text=True, check=True)
    assert "rewritten" in out.stdout
    for p in before:
        nb = nbformat.read(p, as_version=4)
        badge = colab.BADGE_RE.search(nb.cells[0].source)
        assert badge["repo"] == "prof-x/kd-fall" and badge["branch"] == "term-2"
        assert badge["path"].endswith(p.name)
        inst = colab.INSTALL_RE.search(nb.cells[1].source)
        assert inst["repo"] == "prof-x/kd-fall" and inst["branch"] == "term-2"
        assert colab.DEFAULT_REPO not in p.read_text()
    # the originals are untouched, and a bad repo name is refused with a clear message
    assert all(colab.DEFAULT_REPO in p.read_text() for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
    bad = subprocess.run([sys.executable, "-m", "kdutils", "colab", "--repo", "no-slash",
                          "--root", str(tmp_path / "notebooks")], capture_output=True, text=True)
    assert bad.returncode == 2 and "OWNER/NAME" in bad.stderr


def test_cli_run_reports_failing_notebook_and_cell(tmp_path):
    good = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("y = 2"),
                                          nbformat.v4.new_code_cell("raise RuntimeError('boom')")])
    for nb in (good, bad):
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(good, tmp_path / "01_good.ipynb")
    nbformat.write(bad, tmp_path / "02_bad.ipynb")
    out = subprocess.run([sys.executable, "-m", "kdutils", "run", "--root", str(tmp_path), "--out",
                          str(tmp_path / "build"), "--no-html"], capture_output=True, text=True)
    assert out.returncode == 1
    assert "01_good.ipynb" in out.stdout and "ok" in out.stdout
    assert "FAILED: 02_bad.ipynb at cell 1 (RuntimeError: boom)" in out.stderr
    assert (tmp_path / "build" / "notebooks" / "02_bad.ipynb").exists()


def test_ci_calls_make_test_and_readme_shows_both_commands():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    for nb in NOTEBOOKS:
        assert nb.name in readme, f"README's notebook map misses {nb.name}"

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
from conftest import load_script, run_cli

from kdutils.course import colab

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in py["dependencies"]}
    for extra in py["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra}
    conda_alias = {"pytorch": "torch"}
    names = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("dependencies:"):].splitlines():
        m = re.match(r"^\s*-\s+([A-Za-z0-9_.-]+)", line)
        if m and m.group(1) not in ("pip", "python", "-e"):
            names.add(conda_alias.get(_name(m.group(1)), _name(m.group(1))))
    assert names == wanted, f"only in environment.yml: {names - wanted}; only in pyproject: {wanted - names}"


def test_pyproject_uses_lower_bounds_only_and_library_dependencies_are_what_it_imports():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in py["dependencies"] + [r for extra in py["optional-dependencies"].values() for r in extra]:
        assert ">=" in req and "==" not in req and "<" not in req.replace(">=", ""), req
    # the library (not kdutils/course) imports exactly its declared dependencies, and nothing of the tooling
    import_names = {"scikit-learn": "sklearn"}
    declared = {import_names.get(_name(r), _name(r)) for r in py["dependencies"]}
    imported, hf_imported = set(), set()
    for path in [p for p in (ROOT / "kdutils").glob("*.py") if p.name != "__main__.py"]:   # __main__ forwards to the CLI
        text = path.read_text()
        found = set(re.findall(r"^\s*(?:from|import) ([a-z_][a-z0-9_]*)", text, re.M))
        if path.name == "hf.py":       # the one module of the [hf] extra: only it imports transformers & co.
            hf_imported |= found - declared
            found &= declared | {"kdutils", "__future__"} | set(sys.stdlib_module_names)
        imported |= found
        assert not re.search(r"^\s*from \.course|^\s*from kdutils\.course|^\s*import kdutils\.course", text, re.M), \
            f"{path.name}: the library must not import the course tooling"
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in ("kdutils", "__future__")}
    assert third_party == declared, f"imported but not declared: {third_party - declared}; declared, not imported: {declared - third_party}"
    hf_extra = {_name(r) for r in py["optional-dependencies"]["hf"]}
    assert hf_imported - set(sys.stdlib_module_names) <= hf_extra, f"kdutils.hf imports {hf_imported - hf_extra} outside the [hf] extra"


ALL_NOTEBOOKS = NOTEBOOKS + sorted((ROOT / "notebooks" / "assignments").rglob("*.ipynb"))


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_starts_with_badge_and_the_generated_setup_cell_and_has_no_stray_outputs(path):
    nb = nbformat.read(path, as_version=4)
    first, second = nb.cells[0], nb.cells[1]
    assert first.cell_type == "markdown" and colab.BADGE_RE.search(first.source), "first cell needs a Colab badge"
    assert colab.BADGE_RE.search(first.source)["path"] == path.relative_to(ROOT).as_posix()
    assert second.cell_type == "code" and second.source == colab.setup_cell_source(None, colab.extras_for(path)), \
        f"{path.name}: the set-up cell differs from kdutils.course.colab's; run `python -m kdutils colab --repo {colab.DEFAULT_REPO}`"
    if "assignments" in path.parts:
        init = [c for c in nb.cells if c.cell_type == "code"][1]
        assert init.source == colab.otter_init_placeholder(), "the autograder cell comes right after the set-up cell"
        assert not any("import otter" in c.source for c in nb.cells if c.cell_type == "code" and c is not init)
    for cell in nb.cells:
        if cell.cell_type == "code" and "NBVAL_CHECK_OUTPUT" not in cell.source:
            assert not cell.get("outputs"), f"stored output in a cell that is not NBVAL_CHECK_OUTPUT: {cell.source[:60]!r}"


def _run_setup_cell(code, monkeypatch, *, on_colab: bool, kdutils_importable: bool = True):
    """Execute a set-up cell with pip replaced by a recorder; returns the commands it would run."""
    import importlib.util
    import subprocess as sp

    calls = []
    monkeypatch.setattr(sp, "run", lambda cmd, **kw: calls.append(list(cmd)))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    if not kdutils_importable:
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kdutils" else real(name, *a))
    exec(compile(code, "setup", "exec"), {})
    return calls


def test_setup_cell_outside_colab_installs_nothing_and_names_a_missing_kdutils(monkeypatch):
    code = colab.setup_cell_source(None, ("grading",))
    assert _run_setup_cell(code, monkeypatch, on_colab=False) == []
    with pytest.raises(ModuleNotFoundError, match="make lab"):
        _run_setup_cell(code, monkeypatch, on_colab=False, kdutils_importable=False)


@pytest.mark.parametrize("extras", [(), ("grading",)])
def test_setup_cell_on_colab_installs_kdutils_fresh_and_pins_colabs_torch(monkeypatch, extras):
    from importlib.metadata import version

    from packaging.requirements import Requirement

    source = "git+https://github.com/prof-x/kd-fall@term-2"
    calls = _run_setup_cell(colab.setup_cell_source(source, extras), monkeypatch, on_colab=True)
    assert len(calls) == 2
    first, second = calls
    assert first[1:4] == ["-m", "pip", "install"] and {"--force-reinstall", "--no-deps"} <= set(first) and first[-1] == source, \
        "kdutils is reinstalled without its dependencies, so a rerun picks up a moved branch"
    reqs = [Requirement(a) for a in second[4:] if not a.startswith("-")]   # each argument is one requirement
    by_name = {r.name: r for r in reqs}
    assert by_name["kdutils"].url == source and by_name["kdutils"].extras == set(extras)
    assert str(by_name["torch"].specifier) == f"=={version('torch')}", "Colab's torch is pinned, never replaced"
    assert str(by_name["torchvision"].specifier) == f"=={version('torchvision')}"
    for arg in second[4:]:
        if not arg.startswith("-"):
            assert Requirement(arg).name in ("kdutils", "torch", "torchvision"), arg


def test_colab_rewrite_on_a_copy(tmp_path):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    before = {p: p.read_text() for p in (tmp_path / "notebooks").rglob("*.ipynb")}
    out = run_cli("kdutils", "colab", "--repo", "prof-x/kd-fall", "--branch", "term-2", "--root", str(tmp_path / "notebooks"))
    assert out.returncode == 0 and "rewritten" in out.stdout
    for p in before:
        nb = nbformat.read(p, as_version=4)
        badge = colab.BADGE_RE.search(nb.cells[0].source)
        assert badge["repo"] == "prof-x/kd-fall" and badge["branch"] == "term-2"
        assert badge["path"].endswith(p.name)
        assert colab.source_of(nb.cells[1].source) == "git+https://github.com/prof-x/kd-fall@term-2"
        assert nb.cells[1].source == colab.setup_cell_source("git+https://github.com/prof-x/kd-fall@term-2", colab.extras_for(p))
        assert colab.DEFAULT_REPO not in p.read_text()
    # an install source that is not GitHub: a wheel URL, or a local path (written as a file:// URL)
    wheel = tmp_path / "kdutils-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    nb_path = tmp_path / "notebooks" / "01_kl_divergence.ipynb"
    for source, expected in [("https://example.org/kdutils-0.1.0-py3-none-any.whl", None), (str(wheel), wheel.as_uri())]:
        assert run_cli("kdutils", "colab", "--source", source, "--root", str(tmp_path / "notebooks")).returncode == 0
        nb = nbformat.read(nb_path, as_version=4)
        assert colab.source_of(nb.cells[1].source) == (expected or source)
        assert colab.BADGE_RE.search(nb.cells[0].source)["repo"] == "prof-x/kd-fall", "--source alone leaves the badges"
    # the originals are untouched, and bad input is refused with a clear message
    assert all(colab.DEFAULT_REPO in p.read_text() for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
    for args, words in [(["--repo", "no-slash"], "OWNER/NAME"), (["--source", str(tmp_path / "missing.whl")], "existing path"),
                        (["--source", "ftp://x/y.whl"], "scheme"), (["--source", 'x" ; rm -rf /'], "without spaces or quotes"),
                        ([], "--repo")]:
        bad = run_cli("kdutils", "colab", *args, "--root", str(tmp_path / "notebooks"))
        assert bad.returncode == 2 and words in bad.stderr, (args, bad.stderr)


@pytest.mark.slow
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
    # each executed copy records the run that produced its outputs (the website shows it on every page)
    runs = {n: nbformat.read(tmp_path / "build" / "notebooks" / n, as_version=4).metadata["kdutils"]
            for n in ("01_good.ipynb", "02_bad.ipynb")}
    assert runs["01_good.ipynb"]["status"] == "ok" and runs["02_bad.ipynb"]["status"] == "FAILED"
    assert {"profile", "seed", "device", "torch", "executed_at", "seconds"} <= set(runs["01_good.ipynb"])
    for noise in ("without encryption", "Parent appears to have exited"):
        assert noise not in out.stdout + out.stderr, f"make run prints the kernel's {noise!r} warning"


@pytest.mark.slow
def test_notebooks_run_side_by_side_compute_what_they_compute_alone(tmp_path, monkeypatch):
    """make run executes notebooks in parallel (one kernel per core, one thread each): two course notebooks
    run two at a time give the same numbers, to the last bit, as the same two run one after the other."""
    from kdutils.course.nbrun import run_notebooks

    pair = [ROOT / "notebooks" / "01_kl_divergence.ipynb", ROOT / "notebooks" / "02_kl_vs_cross_entropy.ipynb"]
    monkeypatch.setenv("KD_PROFILE", "smoke")
    monkeypatch.delenv("KD_THREADS", raising=False)
    got = {}
    for jobs in (1, 2):
        monkeypatch.setenv("KD_RESULTS_DIR", str(tmp_path / f"results-{jobs}"))
        table = run_notebooks(pair, tmp_path / f"run-{jobs}", html=False, jobs=jobs, threads=1)
        assert list(table.notebook) == [p.name for p in pair] and (table.status == "ok").all(), table
        got[jobs] = {p.stem: json.loads((tmp_path / f"results-{jobs}" / f"{p.stem}.json").read_text())["metrics"]
                     for p in pair}
        for p in pair:
            executed = nbformat.read(tmp_path / f"run-{jobs}" / "notebooks" / p.name, as_version=4)
            assert executed.metadata["kdutils"]["threads"] == 1
        shown = [o.get("text", "") for c in nbformat.read(tmp_path / f"run-{jobs}" / "notebooks" / pair[0].name,
                                                          as_version=4).cells if c.cell_type == "code" for o in c.outputs]
        assert any("'threads': 1" in t for t in shown), "notebook 01's kernel (it prints runtime.describe()) ran on more threads"
    assert got[1] and got[1] == got[2], "a notebook computes other numbers when it runs beside another"


def test_ci_runs_make_check_which_runs_every_test_then_every_notebook_at_full_scale():
    ci = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make check" in ci
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    recipe = lambda name: re.search(rf"^{name}:.*\n((?:\t.*\n?)+)", makefile, re.M)[1]
    assert '-m "not slow" tests' in recipe("unit") and "-m slow" not in recipe("unit")
    assert re.search(r"\$\(PYTEST\) tests --durations=15", recipe("test")), "make test runs every test"
    check = recipe("check")
    stages = re.findall(r'\$\(STAGE\) ("[^"]+"|\S+) -- (.*)', check)
    names = [n.strip('"') for n, _ in stages]
    assert names[0] == "install" and "unit tests" in names and names[-2:] == ["site", "browser check"], names
    # the pytest stages together select every test: the unit tests, then every slow one exactly once
    pytest_runs = [cmd for _, cmd in stages if "$(PYTEST)" in cmd]
    assert any('-m "not slow" tests' in c for c in pytest_runs)
    slow = [c for c in pytest_runs if "not slow" not in c]
    files = [re.findall(r"tests/test_\w+\.py", c) for c in slow]
    singles = [f[0] for f, c in zip(files, slow) if "--ignore" not in c]
    rest = [c for c in slow if "--ignore" in c]
    assert len(rest) == 1 and sorted(re.findall(r"--ignore=(tests/\S+)", rest[0])) == sorted(singles), \
        "the last slow stage runs every slow test the others did not"
    assert all("-m slow" in c or "test_colab_simulation" in c for c in slow)
    full = [cmd for name, cmd in stages if "full profile" in name]
    assert full and "KD_PROFILE=full" in full[0] and "-m kdutils run" in full[0], "then every notebook at the full profile"
    assert "SITE_RUN=build/check" in dict(zip(names, (c for _, c in stages)))["site"], "the website from that run"
    assert ".ci/stages.py report" in check.splitlines()[-1], "and the stage table at the end"
    readme = (ROOT / "README.md").read_text()
    for command in ("make run", "make test", "make check", "make unit"):
        assert command in readme
    for nb in NOTEBOOKS:
        assert nb.name in readme, f"README's notebook map misses {nb.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_ends_with_takeaways_and_references_and_has_an_exercise_with_its_answer_folded(path):
    md = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    assert "## Key takeaways" in md and "## References" in md, f"{path.name}: key takeaways and references"
    assert md.index("## Key takeaways") < md.index("## References")
    if path.name[:2] in ("02", "03", "04", "05", "06", "07"):
        assert "**Try it.**" in md and re.search(r"<details><summary>Answer</summary>.+?</details>", md, re.S), \
            f"{path.name}: a 'try it' exercise with its answer folded away"


def _stages():
    return load_script(".ci/stages.py")


def test_stage_table_sums_the_stages_and_names_a_failure(tmp_path, capsys):
    stages = _stages()
    path = tmp_path / "check" / "timings.json"
    assert stages.main(["reset", str(path)]) == 0 and json.loads(path.read_text())["stages"] == []
    data = {"stages": [{"stage": "install", "seconds": 90.0, "status": 0}, {"stage": "unit tests", "seconds": 150.4, "status": 0},
                       {"stage": "site", "seconds": 30.0, "status": 2}]}
    stages.save(path, data)
    assert stages.main(["report", str(path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].split() == ["total", "270", "4.5"], lines
    assert lines[-3].split()[:3] == ["unit", "tests", "150"] and "FAILED (exit 2)" in lines[-2]
    assert stages.main(["bogus", str(path)]) == 2 and stages.main(["run", str(path), "x"]) == 2


@pytest.mark.slow
def test_stage_run_times_the_command_keeps_its_exit_status_and_replaces_a_rerun(tmp_path, capsys):
    stages = _stages()
    path = tmp_path / "timings.json"
    assert stages.main(["run", str(path), "sleepy", "--", sys.executable, "-c", "import time; time.sleep(0.3)"]) == 0
    assert stages.main(["run", str(path), "red", "--", sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert "stage 'red' failed (exit 3)" in capsys.readouterr().err
    assert stages.main(["run", str(path), "sleepy", "--", sys.executable, "-c", "pass"]) == 0
    recorded = json.loads(path.read_text())["stages"]
    assert [(s["stage"], s["status"]) for s in recorded] == [("red", 3), ("sleepy", 0)], "a rerun stage replaces its row"


def test_stored_outputs_of_marked_cells_are_compared_as_nbval_would():
    from kdutils.course import colabsim

    def nb(*cells):
        out = nbformat.v4.new_notebook()
        for source, text in cells:
            c = nbformat.v4.new_code_cell(source)
            c.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)] if text is not None else []
            out.cells.append(c)
        return out

    stored = nb(("# NBVAL_CHECK_OUTPUT\nprint(2 + 2)", "4\n"), ("print(time.time())", "1700000000.1\n"))
    assert colabsim.stored_output_mismatches(stored, nb(("x", "4   \n"), ("y", "1800000000.2\n"))) == [], \
        "an unmarked cell may print anything; trailing spaces are not a difference"
    wrong = colabsim.stored_output_mismatches(stored, nb(("x", "5\n"), ("y", None)))
    assert len(wrong) == 1 and "code cell 0" in wrong[0] and "'4'" in wrong[0] and "'5'" in wrong[0]
    assert "code cells" in colabsim.stored_output_mismatches(stored, nb(("x", "4\n")))[0]


def test_no_module_of_kdutils_uses_another_module_s_private_names():
    """One place for each thing: what two modules share is public (the loss checks live in
    kdutils.checks), so a module never reaches into another's ``_name``."""
    files = sorted((ROOT / "kdutils").rglob("*.py"))
    modules = {f.stem for f in files} - {"__init__", "__main__"}
    attribute = re.compile(r"(?<![\w.])(" + "|".join(sorted(modules)) + r")\.(_[A-Za-z]\w*)")   # not google.colab._x
    imported = re.compile(r"^\s*from \.+[\w.]* import (.+)$", re.M)
    found = []
    for f in files:
        text = f.read_text()
        found += [f"{f.relative_to(ROOT)}: {m.group(0)}" for m in attribute.finditer(text)]
        for m in imported.finditer(text):
            names = [n.strip().split(" as ")[0] for n in m.group(1).strip("()").split(",")]
            found += [f"{f.relative_to(ROOT)}: from ... import {n}" for n in names if n.startswith("_")]
    assert not found, "private names used across modules: " + "; ".join(found)


def test_the_tooling_has_one_place_for_otters_format_and_for_where_files_live():
    """otter's markers and the test-file reader are written in kdutils.course.otterformat only, the course's
    folders in kdutils.course.layout only; the site and its check build on layout, assign and otterformat,
    never on grading a class; the teaching library never imports the tooling (``python -m kdutils``,
    ``kdutils/__main__.py``, only forwards to its command line)."""
    course = ROOT / "kdutils" / "course"
    markers = ['"# BEGIN SOLUTION', '"hidden=True"', "grader\\s*\\.\\s*check", '"tests/"', '"# Autograder set-up"']
    folders = ['"assignments"', '/ "dist"', '/ "grades"', '"[0-9][0-9]_*.ipynb"']
    found = []
    for f in sorted(course.glob("*.py")):
        text = f.read_text()
        if f.name != "otterformat.py":
            found += [f"{f.name} writes otter's {m}" for m in markers if m in text]
        if f.name != "layout.py":
            found += [f"{f.name} builds the path {m}" for m in folders if m in text]
    assert not found, found
    imports = re.compile(r"^\s*from \.(\w+) import|^\s*from \. import ([\w, ]+)", re.M)
    for name in ("site", "sitecheck", "otterformat", "layout"):
        text = (course / f"{name}.py").read_text()
        used = {n.strip() for m in imports.finditer(text) for n in (m.group(1) or m.group(2)).split(",")}
        assert not used & {"grade", "records", "feedback", "sandbox", "autograde"}, f"{name} imports {used}"
    tooling = re.compile(r"^\s*(from|import) [\w.]*course", re.M)
    library = [f.name for f in (ROOT / "kdutils").glob("*.py") if f.name != "__main__.py" and tooling.search(f.read_text())]
    assert not library, f"the teaching library imports the tooling: {library}"

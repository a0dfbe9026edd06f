"""Grading an instructor can trust, end to end: a class's worth of submissions, each with its exact grade.

Fair to correct work written differently, strict on the classic bugs (and the feedback names them),
safe from careless and hostile submissions (sandboxed: they leave no trace), the layouts LMS bulk
downloads arrive in, and a grade table that survives a killed run and reruns.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from kdutils.course import grade, layout, otterformat, records, sandbox, submissions
import grading_fixtures as fx
from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = layout.list_assignments()
FULL = {"q1": 3, "q2": 2, "q3": 3, "q4": 1, "q5": 3, "q6": 2, "q7": 2}


def test_assignment_list():
    assert ASSIGNMENTS == [fx.A1, fx.A2, fx.A3, fx.A4, fx.A5, fx.A6, fx.A7, fx.A8]


def test_autograder_zip_is_read_once_and_a_broken_one_is_named(tmp_path):
    import zipfile

    def zipped(name, files):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as z:
            for file, text in files.items():
                z.writestr(file, text)
        return path

    q1 = 'name = "q1"\npoints = 2\ntest_cases = []\n'
    good = zipped("good.zip", {"tests/q1.py": q1, "tests/q2.py": 'name = "q2"\npoints = 1.5\n', "other.py": "x = 1"})
    assert otterformat.read_tests(good) == otterformat.Tests({"q1": 2.0, "q2": 1.5}, {"q1": q1, "q2": 'name = "q2"\npoints = 1.5\n'})
    twice = zipped("twice.zip", {"tests/q1.py": q1, "tests/q1_copy.py": q1})
    with pytest.raises(layout.CourseError, match="two test files for question 'q1'"):
        otterformat.read_tests(twice)
    nameless = zipped("nameless.zip", {"tests/q1.py": "points = 2\n"})
    with pytest.raises(layout.CourseError, match="tests/q1.py sets no question name"):
        otterformat.read_tests(nameless)


def test_an_unknown_assignment_is_refused_before_any_work(monkeypatch, tmp_path):
    from kdutils.course import assign, gradescope

    monkeypatch.setattr(gradescope, "kdutils_wheel", lambda *a, **k: pytest.fail("built a wheel for nothing"))
    with pytest.raises(layout.CourseError, match="no assignment 'nope'"):
        assign.assign_all([fx.A1, "nope"], dist=tmp_path)
    assert not any(tmp_path.iterdir()), "nothing was written"


def scores(**lost):
    """a1's full marks, minus what a submission should lose: scores(q1=0, q4=0)."""
    return {**FULL, **lost}


ZERO = {q: 0 for q in FULL}
# submission -> (expected score per question, words its status must contain)
A1_EXPECTED = {
    "solution.ipynb": (scores(), "graded"),
    "untouched_student.ipynb": (ZERO, "graded"),
    # fair: correct work written differently keeps every point
    "fair_keyword_call.ipynb": (scores(), "graded"),
    "fair_reuses_names.ipynb": (scores(), "graded"),
    "fair_float32.ipynb": (scores(), "graded"),
    "fair_fresh_notebook.ipynb": (scores(), "no grader.check cells"),
    "UPPER_CASE.IPYNB": (scores(), "graded"),
    # layouts
    "carol_1234/a1_kd_losses.ipynb": (scores(), "graded"),
    "dave_5678/": (scores(), "from dave_5678/sub/upload.zip"),
    "zip_with_checkpoints.zip": (scores(), "graded"),
    "zip_named_and_scratch.zip": (scores(), "took a1_kd_losses.ipynb"),
    "zip_draft_and_final.zip": (ZERO, "ambiguous"),
    "bob.ipynb": (ZERO, "graded"),
    "bob.zip": (scores(), "graded"),
    "not_json.ipynb": (ZERO, "does not parse"),
    "essay.txt": (ZERO, "not a notebook"),
    # strict: a classic bug costs its question (and what truly depends on it), nothing else
    "bug_swapped_args.ipynb": (scores(q1=0), "graded"),
    "bug_probs_for_logprobs.ipynb": (scores(q1=0), "graded"),
    "bug_reduction_mean.ipynb": (scores(q1=0), "graded"),
    "bug_reduction_sum.ipynb": (scores(q1=0), "graded"),
    "bug_softmax_twice.ipynb": (scores(q1=0), "graded"),
    "bug_t_student_only.ipynb": (scores(q1=0), "graded"),
    "bug_total_variation.ipynb": (scores(q1=0), "graded"),
    "bug_log_of_softmax.ipynb": (scores(q1=2), "graded"),          # right value, wrong for large logits
    "bug_constant.ipynb": (scores(q1=0, q4=0, q7=0), "graded"),    # no gradient: q4 and q7 need one
    "bug_nan.ipynb": (scores(q1=0, q4=0, q7=0), "graded"),
    "bug_numpy_no_grad.ipynb": (scores(q1=2, q4=0, q7=0), "graded"),
    "bug_no_t_squared.ipynb": (scores(q3=0), "graded"),
    "bug_divided_by_t.ipynb": (scores(q3=0), "graded"),
    "bug_q7_scaled_by_t.ipynb": (scores(q7=1), "graded"),
    # careless: costs what it breaks, the batch goes on
    "careless_syntax_error.ipynb": (scores(q2=0, q4=0), "graded"),
    "careless_infinite_loop.ipynb": (scores(q5=2), "graded"),        # that cell is stopped; the rest runs
    "careless_stubborn_loop.ipynb": (scores(q6=0, q7=0), "timed out"),  # deaf to the cell limit: killed
    "careless_exits.ipynb": (scores(q3=0, q4=0, q5=0, q6=0, q7=0), "ended early"),
    "careless_deletes_its_files.ipynb": (scores(), "graded"),
    # hostile: the tests run in another process, so nothing a cell does to its own process changes a grade,
    # leaks a test or reaches beyond the sandbox; a student version with the attack keeps its 0
    "hostile_rewrites_tests.ipynb": (ZERO, "graded"),
    "hostile_update_score.ipynb": (ZERO, "graded"),
    "hostile_reads_hidden.ipynb": (ZERO, "graded"),
    "hostile_patches_isclose.ipynb": (ZERO, "graded"),
    "hostile_kills_grader.ipynb": (scores(), ""),                   # as nobody it cannot; at worst its sandbox ends
    "hostile_writes_everywhere.ipynb": (scores(), "graded"),       # its writes land in its sandbox only
    "hostile_forges_result_lines.ipynb": (ZERO, "broke the grading channel"),
    "hostile_reads_tests_from_memory.ipynb": (ZERO, "graded"),
    "hostile_agreeable_tensor.ipynb": (ZERO, "graded"),
    "hostile_agreeable_str_and_float.ipynb": (ZERO, "graded"),
    "hostile_fake_torch.ipynb": (ZERO, "graded"),
    "hostile_patches_torch_while_tested.ipynb": (ZERO, "graded"),
    # no privileges: the remount of the read-only package is refused; a root-only file in a visible folder stays closed
    "hostile_remounts_the_package.ipynb": (scores(), "graded"),
    "hostile_reads_root_only_file.ipynb": (scores(), "graded"),
    # honest work the old word scan punished, and an older notebook format
    "fair_loop_named_test_case.ipynb": (scores(), "graded"),
    "fair_check_all.ipynb": (scores(), "graded"),
    "fair_functional_as_nnf.ipynb": (scores(), "graded"),
    "fair_nbformat_v3.ipynb": (scores(), "graded"),
}
# what the student's feedback must say for each classic mistake
NAMED = {
    "bug_swapped_args": "arguments are swapped", "bug_probs_for_logprobs": "probabilities passed",
    "bug_reduction_mean": "reduction='mean'", "bug_reduction_sum": "reduction='sum'",
    "bug_softmax_twice": "softmax applied twice", "bug_t_student_only": "student's logits only",
    "bug_total_variation": "total-variation", "bug_log_of_softmax": "torch.log(F.softmax(...))",
    "bug_numpy_no_grad": "carries no gradient", "bug_no_t_squared": "T^2 factor is missing",
    "bug_divided_by_t": "divided by T", "bug_q7_scaled_by_t": "scaled[T] = T^2",
}
HIDDEN_SOURCE = ['quiz_answer == "A"', "def name_the_bug", "suspects = {", "soft_terms(s, t, T)"]


def _build_a1(dist: Path, subs: Path, mark: str):
    sol = dist / fx.A1 / "autograder" / f"{fx.A1}.ipynb"
    stu = dist / fx.A1 / "student" / f"{fx.A1}.ipynb"
    shutil.copy(sol, subs / "solution.ipynb")
    shutil.copy(stu, subs / "untouched_student.ipynb")
    fx.edit(sol, subs / "fair_keyword_call.ipynb", [
        ("def distillation_loss", "soft = kl_divergence(student_logits, teacher_logits, T)",
         "soft = kl_divergence(student_logits=student_logits, teacher_logits=teacher_logits, T=T)")])
    fx.edit(sol, subs / "fair_reuses_names.ipynb", append=['student, teacher = "my notes", None\ngrad_kl = grad_ce = 0'])
    fx.edit(sol, subs / "fair_float32.ipynb", [
        ("def kl_divergence", f"F.log_softmax({who}_logits / T, dim=-1)", f"F.log_softmax({who}_logits.float() / T, dim=-1)")
        for who in ("student", "teacher")])
    fx.fresh_notebook(sol, subs / "fair_fresh_notebook.ipynb")
    shutil.copy(sol, subs / "UPPER_CASE.IPYNB")
    (subs / "carol_1234").mkdir()
    shutil.copy(sol, subs / "carol_1234" / f"{fx.A1}.ipynb")
    (subs / "dave_5678" / "sub").mkdir(parents=True)
    fx.zip_of(subs / "dave_5678" / "sub" / "upload.zip", {f"{fx.A1}.ipynb": sol})
    fx.zip_of(subs / "zip_with_checkpoints.zip", {f"work/{fx.A1}.ipynb": sol, f"work/.ipynb_checkpoints/{fx.A1}-checkpoint.ipynb": stu,
                                                 f"__MACOSX/work/._{fx.A1}.ipynb": stu})
    fx.zip_of(subs / "zip_draft_and_final.zip", {"draft.ipynb": stu, "final.ipynb": sol})
    fx.zip_of(subs / "zip_named_and_scratch.zip", {f"{fx.A1}.ipynb": sol, "scratch.ipynb": stu})
    shutil.copy(stu, subs / "bob.ipynb")
    fx.zip_of(subs / "bob.zip", {f"{fx.A1}.ipynb": sol})
    (subs / "not_json.ipynb").write_text("this is not a notebook {")
    (subs / "essay.txt").write_text("I did not do the assignment")
    for name, (old, new) in fx.A1_KL_BUGS.items():
        fx.edit(sol, subs / f"{name}.ipynb", [("def kl_divergence", old, new)])
    for name, (marker, old, new) in fx.A1_OTHER_BUGS.items():
        fx.edit(sol, subs / f"{name}.ipynb", [(marker, old, new)])
    fx.edit(sol, subs / "careless_syntax_error.ipynb", [("def soft_cross_entropy", "def soft_cross_entropy(", "def soft_cross_entropy((")])
    fx.edit(sol, subs / "careless_infinite_loop.ipynb", [("quiz_answer =", "quiz_answer =", "while True:\n    pass\nquiz_answer =")])
    fx.edit(sol, subs / "careless_stubborn_loop.ipynb", [
        ("dirichlet = torch", "dirichlet = torch",
         "total = sum(range(10**13))  # minutes of C code that never looks at a signal\ndirichlet = torch")])
    fx.edit(sol, subs / "careless_exits.ipynb", [
        ("def distillation_loss", "def distillation_loss", "import os\nos._exit(3)\ndef distillation_loss")])
    fx.edit(sol, subs / "careless_deletes_its_files.ipynb", append=["import os\nfor f in os.listdir('.'):\n    os.remove(f)"])
    fx.edit(stu, subs / "hostile_rewrites_tests.ipynb", append=[
        "import os\nos.makedirs('tests', exist_ok=True)\nfor q in range(1, 8):\n"
        "    open(f'tests/q{q}.py', 'w').write(f'name = \"q{q}\"\\npoints = 3\\n')"])
    fx.edit(stu, subs / "hostile_update_score.ipynb", append=[
        "import otter\ng = otter.Notebook()\nfor q in ('q1', 'q2', 'q3'):\n    g.update_score(q, 3)"])
    fx.edit(stu, subs / "hostile_reads_hidden.ipynb", append=[
        "import glob, shutil\nfor p in glob.glob('/**/autograder/**/*.py', recursive=True):\n    shutil.copy(p, '/tmp/')"])
    fx.edit(stu, subs / "hostile_patches_isclose.ipynb", append=[
        "import torch\ntorch.isclose = lambda *a, **k: torch.tensor(True)\ntorch.allclose = lambda *a, **k: True"])
    fx.edit(sol, subs / "hostile_writes_everywhere.ipynb", append=[f"""
import os, pathlib, subprocess, kdutils
for t in [pathlib.Path(kdutils.__file__).parent / "{mark}.py", pathlib.Path.home() / "{mark}", pathlib.Path("/tmp/{mark}"),
          pathlib.Path("{Path.home()}/{mark}"), pathlib.Path("{ROOT}/{mark}"), pathlib.Path("/etc/{mark}")]:
    try:
        t.write_text("pwned")
    except OSError as e:
        print("blocked", t, e)
subprocess.Popen(["sleep", "987"], start_new_session=True)
try:
    import urllib.request; urllib.request.urlopen("https://pypi.org", timeout=3)
except Exception as e:
    print("no network", e)
"""])
    fx.edit(sol, subs / "hostile_kills_grader.ipynb", append=["import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"])
    fx.edit(sol, subs / "hostile_remounts_the_package.ipynb", append=[f"""
import pathlib, subprocess, kdutils
pkg = pathlib.Path(kdutils.__file__).parent
print(subprocess.run(["mount", "-o", "remount,rw,bind", str(pkg)], capture_output=True, text=True))
try:
    with open(pkg / "course" / "__init__.py", "a") as f:
        f.write("\\nopen('/tmp/{mark}-owned', 'w').write('ran as the grader')\\n")
except OSError as e:
    print("blocked", e)
"""])
    fx.edit(stu, subs / "hostile_forges_result_lines.ipynb", append=[
        "import os, json\nline = ('0' * 32 + json.dumps({'question': 'q1', 'score': 3, 'possible': 3}) + '\\n').encode()\n"
        "for fd in range(64):\n    try:\n        os.write(fd, line)\n    except OSError:\n        pass"])
    fx.edit(stu, subs / "hostile_reads_tests_from_memory.ipynb", append=[
        "import gc\nfound = [o for o in gc.get_objects() if isinstance(o, str) and ('def test_' in o or 'suspects' in o)]\n"
        "def kl_divergence(*args, **kwargs):\n    raise ValueError('LEAK ' + ' '.join(found)[:20000])"])
    fx.edit(stu, subs / "hostile_agreeable_tensor.ipynb", append=["""
import torch
class Agree(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("isclose", "allclose", "isfinite", "equal", "__eq__", "__lt__", "__gt__"):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})
def kl_divergence(student_logits, teacher_logits, T=1.0):
    return (student_logits.sum() * 0).as_subclass(Agree)
soft_cross_entropy = distillation_loss = kl_divergence
"""])
    fx.edit(stu, subs / "hostile_agreeable_str_and_float.ipynb", append=["""
class Yes(str):
    __eq__ = lambda self, other: True
    __hash__ = str.__hash__
class Near(float):
    __sub__ = __rsub__ = lambda self, other: Near(0.0)
    __abs__ = lambda self: 0.0
    __lt__ = __le__ = __gt__ = __ge__ = lambda self, other: True
quiz_answer = Yes("C")
forward_kl = reverse_kl = total_variation = {k: Near(9.0) for k in "ABC"}
"""])
    fx.edit(stu, subs / "hostile_fake_torch.ipynb", append=["""
import types, torch as _real
yes = lambda *a, **k: True
torch = types.SimpleNamespace(**{k: getattr(_real, k) for k in dir(_real) if not k.startswith("__")})
torch.isclose = torch.allclose = torch.equal = yes
torch.isfinite = lambda *a, **k: _real.tensor(True)
F = types.SimpleNamespace(softmax=lambda x, *a, **k: x, log_softmax=lambda x, *a, **k: x, kl_div=lambda *a, **k: 0.0,
                          cross_entropy=lambda *a, **k: 0.0)
"""])
    fx.edit(stu, subs / "hostile_patches_torch_while_tested.ipynb", append=["""
import sys, torch
from torch.overrides import TorchFunctionMode
class Agree(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("isclose", "allclose", "isfinite"):
            return True
        return func(*args, **(kwargs or {}))
Agree().__enter__()
real = torch.isclose
def tracer(frame, event, arg):
    torch.isclose = torch.allclose = lambda *a, **k: True
    return None
sys.settrace(tracer)
"""])
    fx.edit(sol, subs / "fair_loop_named_test_case.ipynb", append=["for test_case in range(3):\n    print('checking my work', test_case)"])
    fx.edit(sol, subs / "fair_check_all.ipynb", append=["grader.check_all()"])
    fx.rename_functional(sol, subs / "fair_functional_as_nnf.ipynb", "nnf")
    fx.as_nbformat_v3(sol, subs / "fair_nbformat_v3.ipynb")
    fx.edit(sol, subs / "hostile_reads_root_only_file.ipynb", append=["""
import os, pathlib
for p in pathlib.Path(os.environ["KD_CACHE_DIR"]).rglob("*"):
    try:
        print(p, p.read_text()[:80])
    except (OSError, UnicodeDecodeError) as e:
        print("closed", p, e)
"""])


def _tree_digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _sleepers(tag: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip() == f"sleep {tag}"]


def test_a1_class_graded_fairly_strictly_and_safely(assigned, tmp_path, monkeypatch):
    sandbox.bwrap()                      # grading is sandboxed: bubblewrap must be here (make venv installs it)
    dist, subs, out = assigned, tmp_path / "submissions", tmp_path / "grades"
    subs.mkdir()
    mark = f"kdfx{os.getpid()}"
    _build_a1(dist, subs, mark)
    token = dist / fx.A1 / "autograder" / "cache" / "instructor-token"     # only root may read it
    token.parent.mkdir(exist_ok=True)
    token.write_text(f"TOKEN-{mark}")
    token.chmod(0o600)
    before_subs, before_dist = _tree_digest(subs), _tree_digest(dist / fx.A1 / "autograder")
    kdutils_files = _tree_digest(ROOT / "kdutils")

    start = time.perf_counter()
    table = grade.grade_folder(fx.A1, subs, dist=dist, out=out, timeout=30, cell_timeout=5, jobs=2, progress=False)
    seconds = time.perf_counter() - start
    by = table.set_index("submission")
    assert sorted(by.index) == sorted(A1_EXPECTED), "one row per submission, named by its path"
    report = [f"{'submission':36} {'expected':>8} {'actual':>6}  status"]
    wrong = []
    for name, (expected, words) in A1_EXPECTED.items():
        row = by.loc[name]
        got = {q: float(row[q]) for q in FULL}
        report.append(f"{name:36} {sum(expected.values()):8g} {row.total:6g}  {row.status}")
        if got != {q: float(v) for q, v in expected.items()} or words not in row.status:
            wrong.append(f"{name}: expected {expected} and '{words}', got {got} and '{row.status}'")
    print("\n".join(report), f"\n{len(table)} submissions in {seconds:.0f} s (2 jobs)")
    assert not wrong, "\n".join(wrong)

    # feedback: one pair per submission, the student's names the bug and never shows hidden-test source
    fb = out / "feedback"
    for name in A1_EXPECTED:
        stem = submissions.feedback_stem(name)
        student = (fb / f"{stem}.student.txt").read_text()
        assert (fb / f"{stem}.instructor.txt").exists()
        assert not any(h in student for h in HIDDEN_SOURCE), f"hidden-test source in {stem}.student.txt"
    for name, words in NAMED.items():
        assert words in (fb / f"{name}.ipynb.student.txt").read_text(), f"the feedback for {name} must say {words!r}"
    instructor = (fb / "bug_constant.ipynb.instructor.txt").read_text()
    assert "suspects = {" in instructor or "Error at line" in instructor

    # nothing outside the sandboxes changed: submissions, autograder, the package, /tmp, $HOME; no process left
    assert _tree_digest(subs) == before_subs and _tree_digest(dist / fx.A1 / "autograder") == before_dist
    assert _tree_digest(ROOT / "kdutils") == kdutils_files
    for p in (Path("/tmp") / mark, Path.home() / mark, ROOT / mark, Path(f"/tmp/{mark}-owned")):
        assert not p.exists(), f"a submission wrote {p}"
    if os.geteuid() == 0:   # graded as nobody: the root-only file was not readable, so no feedback can hold it
        assert not any(f"TOKEN-{mark}" in f.read_text() for f in fb.glob("*.txt")), "a submission read a root-only file"
        assert "closed" in (fb / "hostile_reads_root_only_file.ipynb.instructor.txt").read_text()
    assert not list(Path("/tmp").glob("q[0-9].py")), "a submission copied tests into /tmp"
    assert _sleepers("987") == [], "a submission left a process running"
    assert (out / "grades.png").stat().st_size > 1000

    # a rerun grades nothing that is already graded; a changed submission is regraded, its old row kept aside
    calls = []
    real = grade.grade_one
    monkeypatch.setattr(grade, "grade_one", lambda s, *a, **k: calls.append(s.name) or real(s, *a, **k))
    again = grade.grade_folder(fx.A1, subs, dist=dist, out=out, timeout=30, cell_timeout=5, jobs=2, progress=False)
    assert calls == [] and again.equals(table)
    shutil.copy(subs / "solution.ipynb", subs / "bug_swapped_args.ipynb")   # the student resubmits, fixed
    third = grade.grade_folder(fx.A1, subs, dist=dist, out=out, timeout=30, cell_timeout=5, jobs=2, progress=False)
    assert calls == ["bug_swapped_args.ipynb"]
    assert third.set_index("submission").loc["bug_swapped_args.ipynb", "total"] == 16
    kept = list((out / "previous").glob("*/grades.csv"))
    assert len(kept) == 1 and pd.read_csv(kept[0]).set_index("submission").loc["bug_swapped_args.ipynb", "total"] == 13
    assert (kept[0].parent / "feedback" / "bug_swapped_args.ipynb.student.txt").exists()


def test_killed_run_keeps_finished_rows_and_resumes(assigned, tmp_path):
    dist, subs, out = assigned, tmp_path / "subs", tmp_path / "grades"
    subs.mkdir()
    (subs / "a_essay.txt").write_text("no notebook")
    fx.edit(dist / fx.A1 / "student" / f"{fx.A1}.ipynb", subs / "b_slow.ipynb", append=["import time\ntime.sleep(600)"])
    code = (f"from kdutils.course import grade; grade.grade_folder({fx.A1!r}, {str(subs)!r}, dist={str(dist)!r}, "
            f"out={str(out)!r}, timeout=900, cell_timeout=900, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    csv = out / "grades.csv"
    for _ in range(120):
        if csv.exists() and "a_essay.txt" in csv.read_text():
            break
        time.sleep(0.5)
    time.sleep(3)                                     # b_slow is now running in its sandbox
    os.killpg(proc.pid, signal.SIGKILL)              # the grader is killed mid-batch
    proc.wait()
    rows = pd.read_csv(csv)
    assert list(rows.submission) == ["a_essay.txt"], "the finished row survives; the unfinished one is not half-written"
    assert _sleepers("600") == [], "the killed grader's sandbox did not outlive it"
    table = grade.grade_folder(fx.A1, subs, dist=dist, out=out, timeout=60, cell_timeout=3, progress=False)
    assert list(table.submission) == ["a_essay.txt", "b_slow.ipynb"]
    assert not (out / "previous").exists(), "resuming keeps the table: nothing to set aside"


@pytest.mark.parametrize("name", [fx.A2, fx.A3, fx.A4, fx.A5, fx.A6, fx.A7, fx.A8])
def test_other_assignments(assigned, tmp_path, monkeypatch, name):
    """Each solution earns every point, the untouched student version none, and each classic bug its exact loss."""
    dist, subs = assigned, tmp_path / "subs"
    subs.mkdir()
    sol = dist / name / "autograder" / f"{name}.ipynb"
    shutil.copy(sol, subs / "solution.ipynb")
    shutil.copy(dist / name / "student" / f"{name}.ipynb", subs / "untouched_student.ipynb")
    qs = otterformat.read_tests(layout.autograder_zip(name, dist)).points
    full = {q: float(p) for q, p in qs.items()}
    expected = {"solution.ipynb": full, "untouched_student.ipynb": {q: 0.0 for q in qs}}
    if name == fx.A2:
        for bug, (old, new) in fx.A2_BUGS.items():
            fx.edit(sol, subs / f"{bug}.ipynb", [(fx.A2_FIX, old, new)])
            expected[f"{bug}.ipynb"] = {**full, "q2": 0.0}
        fx.edit(sol, subs / "held_out_check_on_x_train.ipynb", fx.A2_CHECKS_X_TRAIN)
        expected["held_out_check_on_x_train.ipynb"] = {**full, "q1": 1.0}
    if name == fx.A3:
        for bug, (marker, old, new) in fx.A3_BUGS.items():
            fx.edit(sol, subs / f"{bug}.ipynb", [(marker, old, new)])
        expected["bug_teacher_as_student.ipynb"] = {**full, "q1": 0.0}
        expected["bug_target_lowered.ipynb"] = {**full, "q1": 0.0, "q2": 2.0, "q5": 3.0}   # q5: its alpha = 0 run equals its q1 run
        monkeypatch.setenv("KD_CACHE_DIR", str(dist / name / "autograder" / "cache"))
        fx.a3_typed_numbers(sol, subs / "bug_typed_numbers.ipynb")
        expected["bug_typed_numbers.ipynb"] = {**full, "q2": 0.0}
        fx.edit(sol, subs / "fair_barh_and_later_experiment.ipynb", fx.A3_FAIR, append=fx.A3_FAIR_APPEND)
        expected["fair_barh_and_later_experiment.ipynb"] = full
        fx.edit(sol, subs / "held_out_q4_experiment_reuses_student.ipynb", fx.A3_EXPLORES_Q4)
        expected["held_out_q4_experiment_reuses_student.ipynb"] = full
        fx.edit(sol, subs / "held_out_test_leak.ipynb", fx.A3_TEST_LEAK)
        expected["held_out_test_leak.ipynb"] = {**full, "q1": 0.0}
    if name == fx.A5:   # each classic feature-distillation mistake costs exactly the tests that name it
        for bug, (marker, old, new) in fx.A5_BUGS.items():
            fx.edit(sol, subs / f"{bug}.ipynb", [(marker, old, new)])
        lost = {"bug_regressor_on_teacher": {"q1": 0.0, "q3": 1.0},        # q1 entirely; q3's loss uses hint_term
                "bug_teacher_not_detached": {"q1": 3.0},
                "bug_broadcasts": {"q1": 3.0},
                "bug_attention_not_normalised": {"q2": 1.0},               # the map and the loss built on it
                "bug_attention_teacher_not_detached": {"q2": 2.0}}
        for bug, scores_lost in lost.items():
            expected[f"{bug}.ipynb"] = {**full, **scores_lost}
    if name == fx.A6:   # find the bug: each bug left in costs exactly its question, and the feedback names it
        for bug, (question, _, marker, old, new) in fx.A6_BUGS.items():
            fx.edit(sol, subs / f"{bug}.ipynb", [(marker, old, new)])
            expected[f"{bug}.ipynb"] = {**full, question: 0.0}
        for case, (lost, edit) in fx.A6_HELD_OUT.items():     # a value-only fix; beta flipped only between the endpoints
            fx.edit(sol, subs / f"{case}.ipynb", [edit])
            expected[f"{case}.ipynb"] = {**full, **lost}
        fx.edit(sol, subs / "fair_written_differently.ipynb", fx.A6_FAIR)
        expected["fair_written_differently.ipynb"] = full
        fx.edit(sol, subs / "broken_half_edited.ipynb", fx.A6_BROKEN)
        expected["broken_half_edited.ipynb"] = {**full, "q1": 0.0, "q5": 0.0}
    if name in (fx.A7, fx.A8):   # each classic mistake costs exactly what it breaks, and is named
        for bug, (lost, _, edit) in (fx.A7_BUGS if name == fx.A7 else fx.A8_BUGS).items():
            fx.edit(sol, subs / f"{bug}.ipynb", [edit])
            expected[f"{bug}.ipynb"] = {**full, **lost}
    table = grade.grade_folder(name, subs, dist=dist, out=tmp_path / "grades", timeout=150, jobs=2, progress=False)
    by = table.set_index("submission")
    got = {s: {q: float(by.loc[s, q]) for q in qs} for s in expected}
    assert got == expected, by[["status"]].to_dict()
    assert (by.status == "graded").all(), by.status.to_dict()
    if name == fx.A6:
        names = {bug: words for bug, (_, words, *_) in fx.A6_BUGS.items()}
        untouched = (tmp_path / "grades" / "feedback" / "untouched_student.ipynb.student.txt").read_text()
        solution = (tmp_path / "grades" / "feedback" / "solution.ipynb.student.txt").read_text()
        for bug, words in names.items():
            feedback = (tmp_path / "grades" / "feedback" / f"{bug}.ipynb.student.txt").read_text()
            assert f"BUG STILL THERE ({words}" in feedback, f"{bug}: the feedback does not name the bug"
            others = [w for b, w in names.items() if b != bug]
            assert not any(f"({w}" in feedback for w in others), f"{bug}: the feedback names a bug that was fixed"
            assert f"BUG STILL THERE ({words}" in untouched, f"the untouched notebook's feedback does not name {words}"
        assert "BUG STILL THERE" not in solution
    if name in (fx.A7, fx.A8):
        for bug, (_, words, _) in (fx.A7_BUGS if name == fx.A7 else fx.A8_BUGS).items():
            if words is None:
                continue
            feedback = (tmp_path / "grades" / "feedback" / f"{bug}.ipynb.student.txt").read_text()
            assert f"BUG STILL THERE ({words}" in feedback, f"{bug}: the feedback does not name the bug"
        solution = (tmp_path / "grades" / "feedback" / "solution.ipynb.student.txt").read_text()
        assert "BUG STILL THERE" not in solution
    if name == fx.A3:
        feedback = (tmp_path / "grades" / "feedback" / "bug_typed_numbers.ipynb.student.txt").read_text()
        assert "typed into the code" in feedback, "the typed-in table is caught as typed in, not by accident"


def _grade_cli(tmp_path, submissions, *extra):
    return run_cli("kdutils", "grade", "--assignment", fx.A1, "--submissions", str(submissions),
                   "--dist", str(tmp_path / "nodist"), *extra)


def test_grade_cli_refuses_bad_input_and_writes_nothing(tmp_path):
    grades = layout.grades_dir(fx.A1)
    existed = grades.exists()
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "alice.ipynb").write_text("{}")
    out = _grade_cli(tmp_path, tmp_path / "subs")
    assert out.returncode == 1 and "make assignments" in out.stderr
    (tmp_path / "empty").mkdir()
    out = _grade_cli(tmp_path, tmp_path / "empty")
    assert out.returncode == 1 and "no submissions" in out.stderr
    out = _grade_cli(tmp_path, tmp_path / "subs" / "alice.ipynb")
    assert out.returncode == 1 and "is a file" in out.stderr
    out = _grade_cli(tmp_path, tmp_path / "missing")
    assert out.returncode == 1 and "does not exist" in out.stderr
    assert grades.exists() == existed, "a refused grading run must not create the grades folder"


PROBE = """
import json, os, pathlib, subprocess, sys
shipped = pathlib.Path(sys.argv[1])
out = {"uid": os.getuid(), "caps": [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]}
try:
    out["secret"] = (shipped / "key").read_text()
except OSError as e:
    out["secret"] = "refused: " + e.strerror
out["remount"] = subprocess.run(["mount", "-o", "remount,rw,bind", str(shipped)], capture_output=True).returncode
try:
    (shipped / "planted.py").write_text("import os  # runs on the host at the next import")
    out["wrote"] = True
except OSError:
    out["wrote"] = False
pathlib.Path("result.txt").write_text("its working directory is writable")
pathlib.Path(os.environ["KD_OUTPUT_LOG"]).write_text("the log reaches the grader")
import resource
out["limits"] = {k: resource.getrlimit(getattr(resource, k))[0] for k in ("RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_CORE")}
out["etc"] = sorted(os.listdir("/etc"))
if len(sys.argv) > 2:
    hog = bytearray(int(sys.argv[2]))          # more than the cgroup allows: the kernel ends the sandbox
    hog[::4096] = b"x" * len(hog[::4096])
print(json.dumps(out))
"""


@pytest.mark.slow
def test_sandbox_has_no_privileges_a_remount_fails_and_root_only_files_stay_closed(tmp_path):
    """A submission runs with no capability (so no read-only mount can be remounted read-write), and a root
    grader runs it as nobody (so a file only root may read, in a folder it can see, stays unreadable)."""
    sandbox.bwrap()
    shipped, scratch = tmp_path / "shipped", tmp_path / "scratch"
    shipped.mkdir(mode=0o755)
    scratch.mkdir()
    (shipped / "key").write_text("the instructor's token")
    (shipped / "key").chmod(0o600)
    sandbox.hand_over(scratch)
    with sandbox.limits(memory=256 << 20) as cgroup:
        cmd = sandbox.command([sys.executable, "-c", PROBE, str(shipped)], scratch=scratch, readonly=[shipped], cgroup=cgroup)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        if cgroup:       # a cgroup could be made here (as root, v1 or v2): memory beyond it ends the sandbox
            small = subprocess.run([*cmd, str(32 << 20)], capture_output=True, text=True, timeout=120)
            hog = subprocess.run([*cmd, str(512 << 20)], capture_output=True, text=True, timeout=120)
            assert small.returncode == 0, small.stderr[-2000:]
            assert hog.returncode != 0 and "limits" not in hog.stdout, "512 MiB were allocated under a 256 MiB limit"
    assert seen["caps"] == "0000000000000000", f"capabilities left in the sandbox: {seen['caps']}"
    assert seen["remount"] != 0 and not seen["wrote"], "a read-only folder was made writable"
    assert not (shipped / "planted.py").exists() and not (scratch / "result.txt").exists(), "its folder is its own"
    assert (scratch / "output.log").read_text() == "the log reaches the grader"
    assert seen["limits"] == {"RLIMIT_AS": sandbox.AS_BYTES, "RLIMIT_FSIZE": sandbox.FILE_BYTES, "RLIMIT_CORE": 0}
    assert not {"shadow", "passwd", "sudoers", "ssh"} & set(seen["etc"]), f"/etc shows {seen['etc']}"
    if os.geteuid() == 0:
        assert seen["uid"] == sandbox.NOBODY and seen["secret"].startswith("refused"), seen


def test_sandbox_missing_is_an_error_naming_the_fix(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap.*--no-sandbox"):
        sandbox.bwrap()


def test_submission_layouts(tmp_path):
    """Which notebook is graded, from each layout, without running anything."""
    nb = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    (tmp_path / "x").mkdir()
    for n in ("a.ipynb", "b.ipynb", f"{fx.A1} (2).ipynb"):
        (tmp_path / "x" / n).write_text(nb)
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "one.IPYNB").write_text(nb)
    (tmp_path / "y" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "y" / ".ipynb_checkpoints" / "one-checkpoint.ipynb").write_text(nb)
    (tmp_path / "z").mkdir()
    (tmp_path / ".DS_Store").write_text("")
    found = {s.name: s for s in submissions.find(tmp_path, fx.A1)}
    assert sorted(found) == [f"x/{fx.A1} (2).ipynb", "y/one.IPYNB", "z/"]
    assert found["z/"].problem and "holds no notebook" in found["z/"].problem
    stem = submissions.feedback_stem
    assert stem("bob.ipynb") == "bob.ipynb" and stem("carol_1234/a1.ipynb") == "carol_1234__a1.ipynb"
    assert stem("x/a b.ipynb").startswith("x__a_b.ipynb-")
    names = ["josé.ipynb", "josè.ipynb", "jos_.ipynb", "a/b.ipynb", "a__b.ipynb", "a b.ipynb", "a_b.ipynb"]
    assert len({stem(n) for n in names}) == len(names), "two submissions share a feedback file"


TOKEN = "f" * 32
QS = {"q1": 3.0, "q2": 2.0}


def _rec(**r) -> bytes:
    return (TOKEN + json.dumps(r) + "\n").encode()


def test_grading_records_are_validated_and_a_bad_one_never_raises():
    lines = [_rec(question="q1", score=2, results=[]), _rec(question="q1", score=3, results=[]),
             _rec(question="q2", score="2"), _rec(question="q2", score=99), _rec(question="q2", score=float("nan")),
             _rec(question="q9", score=5), _rec(cell=0, seconds=0.1), _rec(cell="x"), _rec(done=True),
             (TOKEN + "{not json\n").encode(), (TOKEN + "[1, 2]\n").encode(), b"someone else's line\n",
             ("0" * 32 + json.dumps({"question": "q2", "score": 2})).encode(), _rec(tamper="replaced torch.isclose")]
    graded, cells, done, problems = records.read_records(lines, TOKEN, QS)
    assert {q: r["score"] for q, r in graded.items()} == {"q1": 3}, "only valid scores of known questions, the best kept"
    assert list(cells) == [0] and done is True
    assert problems == ["sent a grading record with an impossible score for q2", "sent a malformed grading record",
                        "replaced torch.isclose"], problems


def test_a_zip_bomb_or_a_huge_notebook_costs_only_its_row(tmp_path, monkeypatch):
    """A notebook over the cap, or a zip member that unpacks to more, is refused after reading no more than the cap."""
    import zipfile

    monkeypatch.setattr(submissions, "MAX_NOTEBOOK_BYTES", 1 << 20)
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a1_kd_losses.ipynb", b'{"cells": [' + b" " * (8 << 20) + b"]}")
    assert (tmp_path / "bomb.zip").stat().st_size < 100_000
    (tmp_path / "huge.ipynb").write_bytes(b" " * (2 << 20))
    found = {s.name: s for s in submissions.find(tmp_path, "a1_kd_losses")}
    for name in ("bomb.zip", "huge.ipynb"):
        row, for_instructor, for_student = grade.grade_one(found[name], {}, QS, timeout=5)
        assert row["total"] == 0 and "larger than 1 MiB" in row["status"], row
        assert found[name].digest()                 # and the batch can still key its row


def test_the_host_reads_only_regular_files_and_only_so_much(tmp_path):
    (tmp_path / "output.log").write_text("x" * 100)
    assert records.read_regular(tmp_path / "output.log", 10) == "x" * 10
    os.mkfifo(tmp_path / "fifo.log")                    # opened the usual way, a FIFO with no writer hangs the reader
    assert records.read_regular(tmp_path / "fifo.log", 10) == ""
    (tmp_path / "link.log").symlink_to(tmp_path / "output.log")
    assert records.read_regular(tmp_path / "link.log", 10) == "", "a link the sandbox left is not followed"
    assert records.read_regular(tmp_path / "missing.log", 10) == ""
    lines = []
    records.read_capped(iter([b"a" * 600 + b"\n"] * 10_000), lines, cap=1000)
    assert sum(map(len, lines)) <= 1000, "a flood of output is drained, not kept"

"""The instructor workflow end to end: otter assign, grading fixtures, broken submissions, reruns."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from kdutils.course import grading

ROOT = Path(__file__).resolve().parents[1]


ASSIGNMENTS = grading.list_assignments()


@pytest.fixture(scope="module")
def dist(assigned):
    return assigned


def test_assignment_list():
    assert ASSIGNMENTS == ["a1_kd_losses", "a2_wrong_dataset", "a3_distill_and_report", "a4_context_distillation"]


@pytest.mark.parametrize("name", [a for a in ASSIGNMENTS if a != "a1_kd_losses"])
def test_solution_full_marks_and_student_version_zero(dist, tmp_path, name):
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(dist / name / "autograder" / f"{name}.ipynb", subs / "solution.ipynb")
    shutil.copy(dist / name / "student" / f"{name}.ipynb", subs / "student.ipynb")
    table = grading.grade_folder(name, subs, dist=dist, out=tmp_path / "grades", timeout=150, jobs=2, progress=False).set_index("submission")
    assert table.loc["solution.ipynb", "total"] == table.loc["solution.ipynb", "possible"] > 0, table.to_dict()
    assert table.loc["student.ipynb", "total"] == 0, table.to_dict()


def _variant(src_nb: Path, dst: Path, edits):
    nb = nbformat.read(src_nb, as_version=4)
    for marker, old, new in edits:
        cells = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
        assert cells and old in cells[0].source, f"fixture edit {old!r} not found"
        cells[0].source = cells[0].source.replace(old, new)
    nbformat.write(nb, dst)


MISTAKES = {
    "swapped_args": ("def kl_divergence", "F.kl_div(log_p_s, log_p_t,", "F.kl_div(log_p_t, log_p_s,", "q1", "arguments swapped"),
    "probs_not_logprobs": ("def kl_divergence", 'return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")',
                           'return F.kl_div(log_p_s.exp(), log_p_t.exp(), reduction="batchmean")', "q1", "probabilities passed"),
    "reduction_mean": ("def kl_divergence", 'reduction="batchmean"', 'reduction="mean"', "q1", "reduction='mean'"),
    "softmax_twice": ("def kl_divergence", "F.log_softmax(student_logits / T, dim=-1)",
                      "F.log_softmax(F.softmax(student_logits / T, dim=-1), dim=-1)", "q1", "softmax applied twice"),
    "no_t_squared": ("def distillation_loss", "alpha * T * T * soft", "alpha * soft", "q3", "T^2 factor is missing"),
    "tv_without_half": ("def kl_probs", "round(float(0.5 * (ref - x).abs().sum()), 4)", "round(float((ref - x).abs().sum()), 4)",
                        "q5", "reverse_kl or total_variation is wrong"),
    "distances_agree": ("dirichlet = torch", '"u": u.tolist(), "v": v.tolist()', '"u": v.tolist(), "v": u.tolist()',
                        "q6", "do not disagree as asked"),
    "scaled_by_t": ("temperatures = [", "scaled = {T: T**2 * n", "scaled = {T: T * n", "q7", "not the autograd gradient norms"),
}


def test_grading_fixtures_and_broken_submissions(dist, tmp_path):
    solution = dist / "a1_kd_losses" / "autograder" / "a1_kd_losses.ipynb"
    student = dist / "a1_kd_losses" / "student" / "a1_kd_losses.ipynb"
    subs = tmp_path / "submissions"
    subs.mkdir()
    shutil.copy(solution, subs / "solution.ipynb")
    shutil.copy(student, subs / "untouched_student.ipynb")
    for name, (marker, old, new, _, _) in MISTAKES.items():
        _variant(solution, subs / f"{name}.ipynb", [(marker, old, new)])
    (subs / "not_json.ipynb").write_text("this is not a notebook {")
    (subs / "essay.txt").write_text("I did not do the assignment")
    _variant(solution, subs / "syntax_error.ipynb", [("def soft_cross_entropy", "def soft_cross_entropy(", "def soft_cross_entropy((")])
    _variant(solution, subs / "infinite_loop.ipynb", [("quiz_answer =", "quiz_answer =", "while True:\n    pass\nquiz_answer =")])
    nb = nbformat.read(solution, as_version=4)
    nb.cells = [c for c in nb.cells if "grader.check" not in c.source]
    nbformat.write(nb, subs / "grader_cells_deleted.ipynb")

    out = tmp_path / "grades"
    table = grading.grade_folder("a1_kd_losses", subs, dist=dist, out=out, timeout=75, jobs=2, progress=False)
    by = table.set_index("submission")
    full = {"q1": 3, "q2": 2, "q3": 3, "q4": 1, "q5": 3, "q6": 2, "q7": 2}
    qs = list(full)
    assert len(table) == len(list(subs.iterdir())), "one row per submission"
    assert by.loc["solution.ipynb", "total"] == 16 and by.loc["solution.ipynb", "status"] == "graded"
    assert by.loc["untouched_student.ipynb", "total"] == 0
    for name, (_, _, _, question, words) in MISTAKES.items():
        row = by.loc[f"{name}.ipynb"]
        assert row[question] < full[question], f"{name} should lose points on {question}"
        assert all(row[q] == full[q] for q in qs if q != question), f"{name} should lose points on {question} only: {row.to_dict()}"
        assert words in (out / "feedback" / f"{name}.txt").read_text(), f"the feedback for {name} must name the mistake"
    assert "does not parse" in by.loc["not_json.ipynb", "status"] and by.loc["not_json.ipynb", "total"] == 0
    assert "not a notebook" in by.loc["essay.txt", "status"] and by.loc["essay.txt", "total"] == 0
    assert "timed out" in by.loc["infinite_loop.ipynb", "status"] and by.loc["infinite_loop.ipynb", "total"] == 0
    syntax = by.loc["syntax_error.ipynb"]
    assert syntax.q2 == 0 and syntax.q1 == 3, "a cell that does not compile costs that question, not the batch"
    deleted = by.loc["grader_cells_deleted.ipynb"]
    assert deleted.total == 16 and "grader cells deleted" in deleted.status

    csv = pd.read_csv(out / "grades.csv")
    assert list(csv.columns) == ["submission", *qs, "total", "possible", "status"] and len(csv) == len(table)
    assert (out / "grades.png").stat().st_size > 1000

    # a rerun keeps the previous table instead of overwriting it
    first = (out / "grades.csv").read_text()
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(subs / "essay.txt", only)
    grading.grade_folder("a1_kd_losses", only, dist=dist, out=out, timeout=40, progress=False)
    kept = sorted(out.glob("grades-*.csv"))
    assert len(kept) == 1 and kept[0].read_text() == first
    assert len(pd.read_csv(out / "grades.csv")) == 1


def _grade_cli(tmp_path, submissions):
    return subprocess.run([sys.executable, "-m", "kdutils", "grade", "--assignment", "a1_kd_losses", "--submissions",
                           str(submissions), "--dist", str(tmp_path / "nodist")], capture_output=True, text=True)


def test_grade_cli_refuses_bad_input_and_writes_nothing(tmp_path):
    grades = Path(grading.runtime.repo_root()) / "grades" / "a1_kd_losses"
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

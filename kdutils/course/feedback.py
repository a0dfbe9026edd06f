"""The two texts a graded submission gets: one for the instructor, one safe to hand to the student.

The instructor's (``<submission>.instructor.txt``) has every test's output, when each question was
graded, the seconds per cell, any tampering and the notebook's own output. The student's
(``<submission>.student.txt``, and Gradescope's results) has the scores, the public tests' output, and
of a hidden test only its failure message and the assertion's own text, never its source
(``student_message``).
"""
from __future__ import annotations


def student_message(r: dict) -> str:
    """What a student may see of a failed test result ``r`` (a record of ``kdutils.course.autograde``)."""
    if not r["hidden"]:
        return r["message"]
    last = r["message"].strip().splitlines()[-1] if r["message"].strip() else ""
    said = last.split(": ", 1)[1].strip() if last.startswith("AssertionError: ") else ""
    parts = [p for p in (r.get("failure_message"), said) if p]
    return "❌ " + (" -- ".join(parts) if parts else "failed")


def _question(q: str, points: float, score: float, g: dict | None, *, student: bool) -> list[str]:
    if g is None:
        return [f"== {q}: 0 / {points:g} (not graded: the notebook stopped before it)"]
    lines = [f"== {q}: {score:g} / {points:g}" + ("" if student else f" (graded {g['when']}, code cell {g['cell']})")]
    for r in g["results"]:
        tag = "hidden" if r["hidden"] else "public"
        if r["passed"]:
            lines.append(f"  [{tag}] {r['name']}: passed")
            continue
        if student:
            msg = student_message(r)
        else:
            msg = r["message"] + (f"\n  ({r['failure_message']})" if r["failure_message"] else "")
        lines.append(f"  [{tag}] {r['name']}: {msg}".replace("\n", "\n    "))
    return lines + [""]


def write(row: dict, qs: dict[str, float], graded: dict, cells: dict, *, student: bool, tamper: list[str] = (),
          log: str = "") -> str:
    """The feedback text for one graded ``row`` (``grade.grade_one``): ``graded`` {question: record},
    ``cells`` {index: record}; the instructor's version (``student=False``) adds ``tamper`` and ``log``."""
    lines = [f"{row['submission']}: {row['total']:g} / {row['possible']:g} points", f"status: {row['status']}", ""]
    for q, points in qs.items():
        lines += _question(q, points, row[q], graded.get(q), student=student)
    errors = [(i, c["error"]) for i, c in sorted(cells.items()) if c.get("error")]
    if errors:
        lines.append("cells that raised an error:")
        lines += [f"  code cell {i}: {e}" for i, e in errors]
    if not student:
        timed = ", ".join(f"{i}: {c['seconds']:.1f} s" for i, c in sorted(cells.items()) if (c.get("seconds") or 0) >= 0.5)
        lines += ["", f"seconds per code cell (0.5 s and over): {timed or 'none'}"]
        if tamper:
            lines += ["", "GRADING RECORDS REJECTED (scores withheld): " + "; ".join(tamper)]
        lines += ["", "---- the notebook's output (last 3000 characters) ----", log[-3000:]]
    return "\n".join(lines) + "\n"

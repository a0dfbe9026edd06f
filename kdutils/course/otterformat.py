"""otter-grader's formats as this course uses them, read and written in one place.

* **A master notebook** (``otter assign``'s input). Secret: code between ``# BEGIN SOLUTION [NO PROMPT]``
  and ``# END SOLUTION``, lines ending in ``# SOLUTION [NO PROMPT]``, markdown answers inside a raw
  ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` block, test cells whose config says ``hidden: true``
  (``secret_and_visible``). ``LEAK_MARKERS``: what no student version may contain.
* **The autograder cell**: the course's own cell after the set-up cell, ``# Autograder set-up...``
  in the master, ``# @title Autograder set-up ...`` in the student version (written by
  ``kdutils.course.colab``); grading skips it (``is_autograder_cell``).
* **A student's ``grader.check("qN")`` calls** (``CHECK``): where each question is first graded.
* **An autograder zip's test files**, ``tests/<question>.py`` (otter's exception-based format: the
  module sets ``name``, ``points`` and decorated ``test_case`` functions): ``read_tests`` parses each
  file once, without importing otter (seconds per submission), and names a malformed zip.
"""
from __future__ import annotations

import ast
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .layout import CourseError

# what no student version may contain: otter's solution and test markers, and the rubrics
HIDDEN_TEST = "hidden=True"
LEAK_MARKERS = ("# BEGIN SOLUTION", "# SOLUTION", HIDDEN_TEST, "Rubric (solution)", "# BEGIN TESTS")
# what otter assign writes where a markdown answer was: the student's prompt, not a secret
PLACEHOLDERS = ("_Type your answer here, replacing this text._",)

AUTOGRADER_CELL = "# Autograder set-up"
CHECK = re.compile(r"""grader\s*\.\s*check\s*\(\s*(?:question\s*=\s*)?["']([^"']+)["']""")


def is_autograder_cell(src: str) -> bool:
    """The notebook's autograder set-up cell (master: ``# Autograder set-up...``; student version:
    ``# @title Autograder set-up ...``, see ``kdutils.course.colab``)."""
    first = src.lstrip().split("\n", 1)[0]
    return first.startswith("#") and "Autograder set-up" in first


@dataclass(frozen=True)
class Tests:
    """An autograder's tests, by question: its points and its test file's source (public and hidden)."""
    points: dict[str, float]
    sources: dict[str, str]


def read_tests(autograder_zip: Path) -> Tests:
    """The test files of an autograder zip, each read and parsed once."""
    points, sources = {}, {}
    with zipfile.ZipFile(autograder_zip) as z:
        for name in sorted(n for n in z.namelist() if n.startswith("tests/") and n.endswith(".py")):
            text = z.read(name).decode()
            values = {t.id: n.value for n in ast.parse(text).body if isinstance(n, ast.Assign)
                      for t in n.targets if isinstance(t, ast.Name)}
            if "name" not in values or "points" not in values:
                raise CourseError(f"{autograder_zip}: {name} sets no question name or points: "
                                  "build it again (make assignments)")
            question = ast.literal_eval(values["name"])
            if question in sources:
                raise CourseError(f"{autograder_zip}: two test files for question {question!r}: "
                                  "build it again (make assignments)")
            points[question], sources[question] = float(ast.literal_eval(values["points"])), text
    return Tests(points, sources)


def secret_and_visible(master: Path) -> tuple[str, str]:
    """Split an otter master's text into what only instructors see and what the student version shows
    (the markers in the module docstring; a ``# BEGIN PROMPT`` block, what the student sees instead of
    a solution, is visible). Each secret line is returned as a leak would show it, its marker removed."""
    import nbformat

    secret, visible, in_block = [], [], False
    for cell in nbformat.read(master, as_version=4).cells:
        src = cell.source
        if cell.cell_type == "raw":
            head = src.strip().splitlines()[0] if src.strip() else ""
            in_block = {"# BEGIN SOLUTION": True, "# END SOLUTION": False}.get(head, in_block)
            continue
        if cell.cell_type == "markdown":
            (secret if in_block else visible).append(src)
            continue
        if "# BEGIN TEST CONFIG" in src and re.search(r"^hidden:\s*true", src, re.M):
            secret.append(src)
            continue
        inside = False
        for line in src.splitlines():
            mark = line.strip()
            if mark in ("# BEGIN SOLUTION", "# BEGIN SOLUTION NO PROMPT"):
                inside = True
            elif mark == "# END SOLUTION":
                inside = False
            elif inside or mark.endswith(("# SOLUTION", "# SOLUTION NO PROMPT")):
                secret.append(re.sub(r"\s*# SOLUTION( NO PROMPT)?$", "", line))
            else:
                visible.append(line)
    return "\n".join(secret), "\n".join(visible)

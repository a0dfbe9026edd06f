"""Where the course's files live, in one place: the tools ask here, never build a path themselves.

::

    notebooks/                          the course notebooks, NN_name.ipynb
    notebooks/assignments/<name>/       an assignment's master notebook, <name>.ipynb
    build/                              make run's executed notebooks; build/site, the website
    dist/<name>/student/                make assignments: the version to hand out
    dist/<name>/autograder/             the autograder zip, and cache/ (the teachers it ships)
    dist/<name>/gradescope/             the zip to upload to Gradescope
    grades/<name>/                      make grade: grades.csv, grades.png, feedback/, previous/

Every folder is under the repository's root (``runtime.repo_root``) unless a command is given another.
"""
from __future__ import annotations

from pathlib import Path

from .. import runtime


class CourseError(RuntimeError):
    """A course file the command needs is missing or malformed (an assignment, its autograder, a
    submissions folder): the commands report it in one line, exit status 1."""


def notebooks_dir() -> Path:
    return runtime.repo_root() / "notebooks"


def course_notebooks(root: Path | None = None) -> list[Path]:
    """The numbered course notebooks (``NN_name.ipynb``) of ``root`` (default ``notebooks/``), in order."""
    return sorted(Path(root or notebooks_dir()).glob("[0-9][0-9]_*.ipynb"))


def assignments_root() -> Path:
    return notebooks_dir() / "assignments"


def is_assignment(notebook: Path) -> bool:
    """Whether ``notebook`` is an assignment (a master or a student version): it lies in an assignments folder."""
    return "assignments" in Path(notebook).parts


def master(name: str, root: Path | None = None) -> Path:
    """The master notebook of assignment ``name``; a ``CourseError`` when there is none."""
    path = Path(root or assignments_root()) / name / f"{name}.ipynb"
    if not path.exists():
        raise CourseError(f"no assignment {name!r} (expected {path})")
    return path


def list_assignments(root: Path | None = None) -> list[str]:
    """Every assignment: the folders of ``root`` that hold a master notebook named after the folder."""
    root = Path(root or assignments_root())
    return sorted(p.name for p in root.iterdir() if (p / f"{p.name}.ipynb").exists())


def build_dir() -> Path:
    return runtime.repo_root() / "build"


def dist_dir() -> Path:
    return runtime.repo_root() / "dist"


def grades_dir(assignment: str) -> Path:
    return runtime.repo_root() / "grades" / assignment


def autograder_zip(assignment: str, dist: Path | None = None) -> Path:
    """The newest autograder zip ``otter assign`` wrote for ``assignment`` under ``dist``."""
    dist = Path(dist or dist_dir())
    zips = sorted((dist / assignment / "autograder").glob(f"{assignment}-autograder_*.zip"))
    if not zips:
        raise CourseError(f"no autograder zip for {assignment!r} under {dist}/{assignment}/autograder: "
                          "run `make assignments` first")
    return zips[-1]

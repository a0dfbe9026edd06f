"""The syllabus: what each notebook teaches, what it assumes, how long it runs and takes to study, what grades it.

Each course notebook carries its entry in its own metadata, under ``syllabus`` (the one place to edit it,
beside the lesson it describes):

    {"objectives": ["...", ...],          # 3 to 5 learning objectives, each a line
     "prerequisites": ["...", ...],       # notebooks or skills it assumes
     "study_minutes": 90,                 # an estimate of the time to work through it, outputs read
     "graded_by": ["a1 q1, q5", ...]}     # the assignment questions that grade it (may be empty)

The run time is never typed: it is the seconds the run that built the site recorded in each executed
notebook (``kdutils.seconds``, written by ``make run`` / ``make check``), with that run's profile, so
the page says at which scale it was measured.
"""
from __future__ import annotations

from pathlib import Path

import nbformat

FIELDS = {"objectives": list, "prerequisites": list, "study_minutes": int, "graded_by": list}


class SyllabusError(ValueError):
    """A notebook's syllabus entry is missing or malformed (names the notebook and the field)."""


def entry(nb, name: str) -> dict:
    """The notebook's syllabus entry, checked: every field present, of its type, 3 to 5 objectives."""
    meta = nb.metadata.get("syllabus")
    if not isinstance(meta, dict):
        raise SyllabusError(f"{name} has no syllabus entry in its metadata (see kdutils/course/syllabus.py)")
    for field, kind in FIELDS.items():
        if not isinstance(meta.get(field), kind) or isinstance(meta.get(field), bool):
            raise SyllabusError(f"{name}: syllabus field {field!r} must be a {kind.__name__}, got {meta.get(field)!r}")
    if not 3 <= len(meta["objectives"]) <= 5 or not all(isinstance(o, str) and o.strip() for o in meta["objectives"]):
        raise SyllabusError(f"{name}: a syllabus lists 3 to 5 learning objectives, got {len(meta['objectives'])}")
    if meta["study_minutes"] <= 0:
        raise SyllabusError(f"{name}: study_minutes must be positive, got {meta['study_minutes']}")
    return meta


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def syllabus_page(stored: list[Path], run: Path) -> str:
    """The syllabus as Markdown: a summary table, then each notebook's objectives. ``stored`` are the course
    notebooks as stored (their entries), ``run`` the folder whose ``notebooks/`` the site shows (their times)."""
    rows, sections, profiles = [], [], set()
    for path in stored:
        meta = entry(nbformat.read(path, as_version=4), path.name)
        executed = Path(run) / "notebooks" / path.name
        info = nbformat.read(executed, as_version=4).metadata.get("kdutils", {}) if executed.is_file() else {}
        if "seconds" in info:
            profiles.add(info.get("profile", "?"))
            ran = _minutes(float(info["seconds"])) + ("" if info.get("status", "ok") == "ok" else f" ({info['status']})")
        else:
            ran = "not recorded"
        graded = "; ".join(meta["graded_by"]) or "not graded (read and run)"
        rows.append(f"| [{path.stem}](notebooks/{path.stem}.ipynb) | {'; '.join(meta['prerequisites'])} | {ran} "
                    f"| {meta['study_minutes']} min | {graded} |")
        sections += [f"## {path.stem}", "", "After this notebook you can:", ""]
        sections += [f"* {o}" for o in meta["objectives"]] + [""]
    scale = " and ".join(sorted(profiles)) or "no recorded"
    head = ["# Syllabus", "",
            "What each notebook teaches and assumes, how long it runs and how long it takes to work through, and "
            "which assignment questions grade it. *Run time* is the time the notebook took in the run whose outputs "
            f"this site shows (profile **{scale}**, on that run's machine: `make check` runs the full profile on a "
            "2-core CPU, two notebooks at once); *study time* is an estimate for reading, running and trying the "
            "exercises.", "",
            "| notebook | assumes | run time | study time | graded by |", "| --- | --- | ---: | ---: | --- |"]
    return "\n".join(head + rows + [""] + sections)

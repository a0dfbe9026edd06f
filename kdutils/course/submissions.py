"""Find the submissions in what an instructor downloads: one notebook per student, however it arrives.

Accepted, in one folder (the "submissions folder"):

* a notebook per student, ``alice.ipynb`` (any case of the extension: ``.IPYNB``);
* a zip per student holding the notebook, with or without ``.ipynb_checkpoints/`` or ``__MACOSX/``
  copies (ignored);
* a folder per student (how LMS bulk downloads arrive: ``alice_12345/a1_kd_losses.ipynb``), holding
  a notebook or a zip, possibly one level deeper.

Where a student's folder or zip holds several notebooks, the one named like the assignment is taken
(``a1_kd_losses.ipynb``, ``a1_kd_losses (2).ipynb``); if that does not decide, the submission is
flagged as ambiguous, never graded from a guess. Each submission is named by its path relative to
the folder (``alice_12345/a1_kd_losses.ipynb``), so two with the same stem never share a row or a
feedback file.
"""
from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

IGNORED_PARTS = {".ipynb_checkpoints", "__MACOSX", "__pycache__"}
MAX_NOTEBOOK_BYTES = 64 << 20      # a notebook larger than this is not read (nor unpacked from a zip)


class TooLarge(ValueError):
    pass


@dataclass
class Submission:
    name: str                      # the path relative to the submissions folder: the row's key
    path: Path                     # the file on disk (a notebook, or the zip that holds it)
    member: str | None = None      # the notebook's name inside the zip
    problem: str | None = None     # why it cannot be graded (then it gets 0 points and this status)
    notes: list[str] = field(default_factory=list)

    def read(self) -> bytes:
        """The notebook's bytes, at most ``MAX_NOTEBOOK_BYTES`` (a larger file, or a zip member that unpacks
        to more, whatever its header claims, raises ``TooLarge`` after reading no more than that)."""
        if self.member is None:
            with open(self.path, "rb") as f:
                data = f.read(MAX_NOTEBOOK_BYTES + 1)
        else:
            with zipfile.ZipFile(self.path) as z, z.open(self.member) as f:
                data = f.read(MAX_NOTEBOOK_BYTES + 1)
        if len(data) > MAX_NOTEBOOK_BYTES:
            raise TooLarge(f"the notebook is larger than {MAX_NOTEBOOK_BYTES >> 20} MiB")
        return data

    def digest(self) -> str:
        """A short hash of the graded bytes: a rerun regrades a submission only if it changed."""
        try:
            if self.problem is None:
                data = self.read()
            else:
                with open(self.path, "rb") as f:
                    data = f.read(MAX_NOTEBOOK_BYTES)
        except (OSError, zipfile.BadZipFile, KeyError, TooLarge):
            data = b""
        return hashlib.sha256(data).hexdigest()[:16]


def _ignored(parts) -> bool:
    return any(p in IGNORED_PARTS or p.startswith(".") for p in parts)


def _is_notebook(name: str) -> bool:
    return name.lower().endswith(".ipynb")


def _pick(candidates: list[str], assignment: str, where: str) -> tuple[str | None, str | None, list[str]]:
    """(chosen, problem, notes) among notebook names found in one student's folder or zip."""
    if not candidates:
        return None, f"{where} holds no notebook (.ipynb)", []
    if len(candidates) == 1:
        return candidates[0], None, []
    stem = re.compile(rf"{re.escape(assignment)}(\s*\(\d+\))?\.ipynb", re.IGNORECASE)
    named = [c for c in candidates if stem.fullmatch(PurePosixPath(c).name)]
    if len(named) == 1:
        others = [c for c in candidates if c != named[0]]
        return named[0], None, [f"took {named[0]} (named like the assignment), not {', '.join(others)}"]
    return None, (f"ambiguous: {where} holds {len(candidates)} notebooks ({', '.join(sorted(candidates))}) and none "
                  f"is named {assignment}.ipynb: ask the student which one to grade"), []


def _from_zip(path: Path, name: str, assignment: str) -> Submission:
    try:
        with zipfile.ZipFile(path) as z:
            members = [n for n in z.namelist() if _is_notebook(n) and not _ignored(PurePosixPath(n).parts[:-1])
                       and not PurePosixPath(n).name.startswith(".")]
    except (zipfile.BadZipFile, OSError) as exc:
        return Submission(name, path, problem=f"not a readable zip ({exc})")
    chosen, problem, notes = _pick(members, assignment, "the zip")
    return Submission(name, path, member=chosen, problem=problem, notes=notes)


def _from_folder(folder: Path, root: Path, assignment: str) -> Submission:
    name = folder.relative_to(root).as_posix() + "/"
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not _ignored(p.relative_to(folder).parts)]
    notebooks = [p for p in files if _is_notebook(p.name)]
    zips = [p for p in files if p.suffix.lower() == ".zip"]
    if not notebooks and len(zips) == 1:
        sub = _from_zip(zips[0], name, assignment)
        sub.notes.insert(0, f"from {zips[0].relative_to(root).as_posix()}")
        return sub
    rel = [p.relative_to(folder).as_posix() for p in notebooks]
    chosen, problem, notes = _pick(rel, assignment, f"the folder {name}")
    if chosen is None:
        return Submission(name, folder, problem=problem)
    return Submission(f"{name}{chosen}", folder / chosen, notes=notes)


def one_student(folder: Path, assignment: str) -> Submission:
    """The one submission in a folder that holds a single student's upload (Gradescope's ``submission/``),
    picked as in a student's folder of an LMS download (named like the assignment, else ambiguous)."""
    folder = Path(folder)
    return _from_folder(folder, folder.parent, assignment)


def find(folder: Path, assignment: str) -> list[Submission]:
    """Every submission in ``folder``, in name order; unreadable ones carry a ``problem``."""
    folder = Path(folder)
    found = []
    for entry in sorted(folder.iterdir()):
        if _ignored([entry.name]):
            continue
        if entry.is_dir():
            found.append(_from_folder(entry, folder, assignment))
        elif entry.suffix.lower() == ".zip":
            found.append(_from_zip(entry, entry.name, assignment))
        elif _is_notebook(entry.name):
            found.append(Submission(entry.name, entry))
        elif entry.is_file():
            found.append(Submission(entry.name, entry,
                                    problem=f"not a notebook ({entry.suffix or 'no extension'}): submit the .ipynb file"))
    return found


def feedback_stem(name: str) -> str:
    """A file name for a submission's feedback, unique per submission name.

    Plain names keep their spelling (``bob.ipynb``, ``carol_1234__a1.ipynb`` for ``carol_1234/a1.ipynb``);
    a name whose characters had to be replaced (``josé.ipynb`` and ``josè.ipynb`` both read ``jos_.ipynb``)
    or that holds ``__`` gets 8 hex digits of its own digest, so no two submissions share a file."""
    flat = name.strip("/")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", flat.replace("/", "__")) or "submission"
    if "__" in flat or safe != flat.replace("/", "__"):
        safe = f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return safe

"""Colab badges and set-up cells, and rewriting them to point at an instructor's fork.

Every notebook starts with a markdown cell holding a badge

    [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/OWNER/NAME/blob/BRANCH/notebooks/XX.ipynb)

and a code cell that, only on Colab, installs kdutils from ``git+https://github.com/OWNER/NAME@BRANCH``
(without its dependencies: Colab already has torch, which must never be reinstalled).
``python -m kdutils colab --repo OWNER/NAME --branch B`` rewrites both in every notebook.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat

DEFAULT_REPO = "kd-course/kd-course"
DEFAULT_BRANCH = "main"
_REPO = r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+"
_BRANCH = r"[A-Za-z0-9_./-]+?"
BADGE_RE = re.compile(rf"https://colab\.research\.google\.com/github/(?P<repo>{_REPO})/blob/(?P<branch>{_BRANCH})/(?P<path>[^)\s]+\.ipynb)")
INSTALL_RE = re.compile(rf"git\+https://github\.com/(?P<repo>{_REPO})@(?P<branch>{_BRANCH})(?=[\"'\s])")


def badge_markdown(path_in_repo: str, repo: str = DEFAULT_REPO, branch: str = DEFAULT_BRANCH) -> str:
    url = f"https://colab.research.google.com/github/{repo}/blob/{branch}/{path_in_repo}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def setup_cell_source(repo: str = DEFAULT_REPO, branch: str = DEFAULT_BRANCH, extra: str = "mnist1d") -> str:
    return f'''# Set-up: on Google Colab, install the course's helper package (torch is already there and is
# never reinstalled). Everywhere else this cell does nothing: run `make lab` from the repository.
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "git+https://github.com/{repo}@{branch}"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "{extra}"], check=True)'''


def _validate(repo: str, branch: str):
    if not re.fullmatch(_REPO, repo):
        raise ValueError(f"--repo must look like OWNER/NAME, got {repo!r}")
    if not re.fullmatch(r"[A-Za-z0-9_./-]+", branch):
        raise ValueError(f"--branch has characters a git branch name cannot have: {branch!r}")


def rewrite_notebook(path: Path, repo: str, branch: str) -> int:
    """Point one notebook's badges and install lines at ``repo``/``branch``; returns the edit count."""
    _validate(repo, branch)
    nb = nbformat.read(path, as_version=4)
    edits = 0
    for cell in nb.cells:
        src = cell.source
        src = BADGE_RE.sub(lambda m: f"https://colab.research.google.com/github/{repo}/blob/{branch}/{m['path']}", src)
        src = INSTALL_RE.sub(f"git+https://github.com/{repo}@{branch}", src)
        if src != cell.source:
            cell.source = src
            edits += 1
    if edits:
        tmp = path.with_suffix(".ipynb.tmp")
        nbformat.write(nb, tmp)
        tmp.replace(path)
    return edits


def rewrite_all(root: Path, repo: str, branch: str = DEFAULT_BRANCH) -> dict[str, int]:
    """Rewrite every notebook under ``root`` (recursively); returns {notebook: edits}."""
    _validate(repo, branch)
    paths = sorted(p for p in Path(root).rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    return {str(p): rewrite_notebook(p, repo, branch) for p in paths}

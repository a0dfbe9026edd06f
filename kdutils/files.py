"""Writing the files people keep (results, caches, checkpoints, grade tables): atomically, readable.

An interrupted write never leaves a half-written file in place of a good one: the bytes go to a
temporary file in the same folder, which then replaces the target in one step (``os.replace``).
``tempfile.mkstemp`` creates that file readable by its owner only (mode 0600); before the swap it
gets the mode any new file gets here (0666 minus the umask), so a results folder collected for a
class, or a cache shared by a lab, stays readable by the others it was meant for.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .runtime import ConfigError


def default_mode() -> int:
    """0666 minus the process's umask: the mode ``open(path, "w")`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file beside ``path``, then put it in place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def writable_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a folder this process can write, created if missing; ``runtime.ConfigError`` naming
    ``what`` (e.g. ``"--out"``) otherwise. Commands call it before any work starts."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not a folder this user can write ({exc.strerror or exc})") from None
    return path

"""The sandbox each submission is graded in: bubblewrap (``bwrap``, Debian's ``bubblewrap`` package).

What a submission's code can reach, and what it cannot:

* **no network** (its own network namespace: only a loopback device);
* **its own process tree**: a new PID namespace and session; when the grading process inside ends
  (or the grader kills it on time-out), the kernel ends every process it started, so nothing is
  left running after the batch (``--die-with-parent``, ``--unshare-pid``);
* **a private** ``/tmp`` **and** ``$HOME`` (empty tmpfs, gone when it ends);
* **one writable folder**, its own scratch folder (``/submission``, the working directory);
* **read-only**: the operating system, Python, the course's virtual environment and the ``kdutils``
  package (so it cannot change what later submissions import), and the shipped cache (the trained
  teachers the autograder carries);
* **invisible**: everything else: the instructor's home, the repository (assignments with their
  solutions), the autograder and its hidden tests (the grader passes the tests on stdin), the other
  submissions, the grade tables and feedback.

``otter``'s own Docker mode gives the same isolation where a Docker daemon runs; these machines have
none, and bubblewrap needs no daemon and no image.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

SCRATCH = "/submission"
HOME = "/tmp/home"


class SandboxUnavailable(RuntimeError):
    pass


def bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(
            "grading runs each submission in a bubblewrap sandbox, and `bwrap` is not installed: "
            "`apt-get install bubblewrap` (Debian/Ubuntu), or pass --no-sandbox to grade trusted work unsandboxed")
    return path


def _python_roots() -> list[Path]:
    """The folders Python and the course's packages are loaded from (read-only in the sandbox)."""
    import kdutils

    roots = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(sys.prefix),
             Path(kdutils.__file__).resolve().parent}
    return sorted(roots)


def command(argv: list[str], *, scratch: Path, readonly: list[Path] = (), writable: list[Path] = (),
            env: dict[str, str] | None = None) -> list[str]:
    """The ``bwrap`` command line that runs ``argv`` inside the sandbox described above.

    ``scratch`` (a folder on the host) becomes ``/submission``, the only writable folder;
    ``readonly`` adds folders visible at their own paths, read-only (e.g. the autograder's cache);
    ``writable`` adds folders at their own paths that it may write (only for trusted code: the
    solution filling the autograder's cache).
    """
    cmd = [bwrap(), "--unshare-all", "--die-with-parent", "--new-session",
           "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", HOME]
    for system in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"):
        if os.path.exists(system):
            cmd += ["--ro-bind", system, system]
    for root in [*_python_roots(), *map(Path, readonly)]:
        cmd += ["--ro-bind", str(root), str(root)]
    for folder in writable:
        cmd += ["--bind", str(folder), str(folder)]
    cmd += ["--bind", str(Path(scratch).resolve()), SCRATCH, "--chdir", SCRATCH, "--clearenv"]
    base = {"PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": HOME, "TMPDIR": "/tmp",
            "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "MPLCONFIGDIR": "/tmp/mpl"}
    for key, value in {**base, **(env or {})}.items():
        cmd += ["--setenv", key, value]
    return cmd + ["--", *argv]

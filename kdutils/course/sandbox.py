"""The sandbox each submission is graded in: bubblewrap (``bwrap``, Debian's ``bubblewrap`` package).

What a submission's code can reach, and what it cannot:

* **no network** (its own network namespace: only a loopback device);
* **its own process tree**: a new PID namespace and session; when the grading process inside ends
  (or the grader kills it on time-out), the kernel ends every process it started, so nothing is
  left running after the batch (``--die-with-parent``, ``--unshare-pid``);
* **a private** ``/tmp`` **and** ``$HOME`` (an empty tmpfs of at most 1 GiB, gone when it ends);
* **one writable folder**, its own scratch folder (``/submission``, the working directory);
* **read-only**: the operating system, Python, the course's virtual environment and the ``kdutils``
  package (so it cannot change what later submissions import), and the shipped cache (the trained
  teachers the autograder carries);
* **invisible**: everything else: the instructor's home, the repository (assignments with their
  solutions), the autograder and its hidden tests (the grader passes the tests on stdin), the other
  submissions, the grade tables and feedback;
* **no privileges**: a root grader starts bubblewrap without a user namespace (inside one, the
  submission would be root of it, with every capability) and runs the submission through ``setpriv``
  as the user ``nobody``, with no capability left (empty bounding set, ``no_new_privs``): no mount can
  be undone (``mount -o remount,rw`` is refused) and a file only root may read (mode 0600) in a
  visible folder stays closed; its scratch folder is handed to ``nobody``. Any other grader runs it
  as itself with every capability dropped (``--cap-drop ALL``). Trusted code that must write outside
  its scratch folder (the solution filling the autograder's cache) keeps the caller's user, still
  without capabilities.

``otter``'s own Docker mode gives the same isolation where a Docker daemon runs; these machines have
none, and bubblewrap needs no daemon and no image.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

SCRATCH = "/submission"
HOME = "/tmp/home"
NOBODY = 65534           # the unprivileged user (and group) a root grader runs submissions as
TMP_BYTES = 1 << 30      # the sandbox's /tmp: a RAM-backed tmpfs, capped
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc")


class SandboxUnavailable(RuntimeError):
    pass


def bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(
            "grading runs each submission in a bubblewrap sandbox, and `bwrap` is not installed: "
            "`apt-get install bubblewrap` (Debian/Ubuntu), or pass --no-sandbox to grade trusted work unsandboxed")
    return path


@functools.lru_cache(maxsize=None)
def _supports(option: str) -> bool:
    """Whether this bubblewrap knows ``option`` (``--size`` came in 0.7, ``--perms`` in 0.5)."""
    try:
        shown = subprocess.run([bwrap(), "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return option in shown.stdout + shown.stderr


def _as_root() -> bool:
    return os.geteuid() == 0


def _drop_to_nobody() -> list[str]:
    """What a root grader's sandbox runs the submission through: ``setpriv`` to the user nobody, no
    capabilities left (bounding set emptied), no way back (``no_new_privs``). Refused where setpriv is
    missing: a submission never runs as root."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise SandboxUnavailable("grading as root runs each submission as the user nobody with `setpriv` (util-linux), "
                                 "which is not installed: `apt-get install util-linux`, or grade as an ordinary user")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--bounding-set=-all",
            "--inh-caps=-all", "--no-new-privs", "--"]


def hand_over(scratch: Path) -> None:
    """Give the scratch folder (and what is in it) to the user the sandbox runs as (root graders only)."""
    if not _as_root():
        return
    for path in [Path(scratch), *Path(scratch).rglob("*")]:
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)


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
    solution filling the autograder's cache; the command then keeps the caller's user). Without
    ``writable``, a root caller's sandbox runs as ``nobody``: call ``hand_over(scratch)`` first.
    """
    trusted = bool(writable)
    if _as_root():
        # see "no privileges" above
        namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        drop, run_as = (["--cap-drop", "ALL"], []) if trusted else ([], _drop_to_nobody())
    else:
        namespaces, drop, run_as = ["--unshare-all"], ["--cap-drop", "ALL"], []
    if not _supports("--perms"):
        raise SandboxUnavailable("this bubblewrap is too old (no --perms; 0.5 or newer is needed): update bubblewrap")
    size = ["--size", str(TMP_BYTES)] if _supports("--size") else []     # older bubblewraps: /tmp not capped
    cmd = [bwrap(), *namespaces, *drop, "--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev",
           "--perms", "1777", *size, "--tmpfs", "/tmp", "--perms", "0777", "--dir", HOME]
    visible = [*_python_roots(), *map(Path, readonly)]
    binds = [*visible, *map(Path, writable)]
    # the folders above each bound path, readable by anyone (bubblewrap would make them root's alone)
    above = sorted({str(q) for b in binds for q in b.parents} - {"/", "/tmp", *map(str, binds), *SYSTEM})
    for folder in above:
        cmd += ["--perms", "0755", "--dir", folder]
    for system in SYSTEM:
        if os.path.exists(system):
            cmd += ["--ro-bind", system, system]
    for root in visible:
        cmd += ["--ro-bind", str(root), str(root)]
    for folder in writable:
        cmd += ["--bind", str(folder), str(folder)]
    cmd += ["--bind", str(Path(scratch).resolve()), SCRATCH, "--chdir", SCRATCH, "--clearenv"]
    base = {"PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": HOME, "TMPDIR": "/tmp",
            "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "MPLCONFIGDIR": "/tmp/mpl"}
    for key, value in {**base, **(env or {})}.items():
        cmd += ["--setenv", key, value]
    return cmd + ["--", *run_as, *argv]

"""The sandbox each submission is graded in: bubblewrap (``bwrap``, Debian's ``bubblewrap`` package).

What a submission's code can reach, and what it cannot:

* **no network** (its own network namespace: only a loopback device);
* **its own process tree**: a new PID namespace and session; when the grading process inside ends
  (or the grader kills it on time-out), the kernel ends every process it started, so nothing is
  left running after the batch (``--die-with-parent``, ``--unshare-pid``);
* **a private** ``/tmp`` **and** ``$HOME`` (an empty tmpfs of at most 1 GiB, gone when it ends);
* **one writable folder**, its working directory ``/submission`` (another tmpfs of at most 1 GiB),
  and one file the grader reads afterwards, its output log (``/log/output.log``, a file of the
  grader's scratch folder, at most ``FILE_BYTES``);
* **limits**: at most ``MEMORY_BYTES`` of memory and ``PIDS`` processes and threads (a cgroup,
  ``limits()``, where the grader may make one: cgroup v2 or v1, as root), and in any case
  ``prlimit``'s address-space (``AS_BYTES``), file-size, open-file and core-dump limits;
* **read-only**: the operating system (of ``/etc`` only what the dynamic linker and Python read:
  ``ETC``), Python, the course's virtual environment and the ``kdutils``
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

import contextlib
import functools
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

SCRATCH = "/submission"
HOME = "/tmp/home"
NOBODY = 65534           # the unprivileged user (and group) a root grader runs submissions as
TMP_BYTES = 1 << 30      # the sandbox's /tmp: a RAM-backed tmpfs, capped
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "nsswitch.conf", "alternatives",
       "mime.types", "fonts")
LOG = "/log/output.log"
MEMORY_BYTES = 4 << 30   # per submission (cgroup): RAM, the tmpfs folders included
PIDS = 512               # processes and threads per submission (cgroup)
AS_BYTES = 16 << 30      # address space per process (prlimit; torch reserves far more than it uses)
FILE_BYTES = 256 << 20   # the largest file a submission may write


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


@functools.lru_cache(maxsize=None)
def bwrap_works() -> bool:
    """Whether bubblewrap can make a sandbox here (Docker-style containers usually refuse it)."""
    try:
        return subprocess.run([bwrap(), "--ro-bind", "/", "/", "--unshare-pid", "true"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError, SandboxUnavailable):
        return False


def container_mode() -> bool:
    """``KD_SANDBOX=container``: the machine is itself a one-submission container (Gradescope's); the
    submission runs as ``nobody`` without capabilities, under ``prlimit``, with no bubblewrap."""
    return os.environ.get("KD_SANDBOX", "").strip() == "container"


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
    (Path(scratch) / "output.log").touch()
    if not _as_root():
        return
    for path in [Path(scratch), *Path(scratch).rglob("*")]:
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)


def _cgroup_parents() -> list[Path]:
    """Where this process may make a child cgroup with a memory and a pids limit (v2, else v1)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    own = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            own[c] = path
    v2 = Path("/sys/fs/cgroup") / own.get("", "/").lstrip("/")
    try:
        if {"memory", "pids"} <= set((v2 / "cgroup.subtree_control").read_text().split()) and os.access(v2, os.W_OK):
            return [v2]
    except OSError:
        pass
    v1 = [Path("/sys/fs/cgroup") / c / own[c].lstrip("/") for c in ("memory", "pids") if c in own]
    return v1 if len(v1) == 2 and all(os.access(p, os.W_OK) for p in v1) else []


@contextlib.contextmanager
def limits(memory: int = MEMORY_BYTES, pids: int = PIDS):
    """A fresh cgroup capping memory and processes, for one submission: yields the command prefix that
    moves a process into it (then ``exec``s the rest), or ``[]`` where no cgroup can be made (then
    only ``prlimit``'s limits hold). The cgroup is removed afterwards."""
    parents = _cgroup_parents()
    made = []
    try:
        for parent in parents:
            group = parent / f"kd-grade-{secrets.token_hex(6)}"
            group.mkdir()
            made.append(group)
            if (group / "memory.max").exists():                         # v2
                (group / "memory.max").write_text(str(memory))
                (group / "pids.max").write_text(str(pids))
                if (group / "memory.swap.max").exists():
                    (group / "memory.swap.max").write_text("0")
            elif (group / "memory.limit_in_bytes").exists():            # v1
                (group / "memory.limit_in_bytes").write_text(str(memory))
            else:
                (group / "pids.max").write_text(str(pids))
    except OSError:
        parents = []
    try:
        if not parents:
            yield []
        else:
            moves = "; ".join(f"echo $$ > {g}/cgroup.procs" for g in made)
            yield ["/bin/sh", "-c", f"{moves} && exec \"$@\"", "sh"]
    finally:
        for group in made:
            for _ in range(50):                 # the processes are killed by now; the kernel frees the group soon after
                try:
                    group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


def _prlimit(cgroup: bool) -> list[str]:
    tool = shutil.which("prlimit")
    if tool is None:
        raise SandboxUnavailable("grading limits each submission with `prlimit` (util-linux), which is not installed: "
                                 "`apt-get install util-linux`")
    nproc = [] if cgroup or not _as_root() else [f"--nproc={4 * PIDS}"]   # nobody's processes, all sandboxes together
    return [tool, f"--as={AS_BYTES}", f"--fsize={FILE_BYTES}", "--nofile=1024", "--core=0", *nproc, "--"]


def _python_roots() -> list[Path]:
    """The folders Python and the course's packages are loaded from (read-only in the sandbox)."""
    import kdutils

    roots = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(sys.prefix),
             Path(kdutils.__file__).resolve().parent}
    return sorted(roots)


def _container_command(argv, *, scratch, env, trusted, cgroup) -> list[str]:
    """The container-mode command: run it with ``cwd=scratch`` (the files it may not read are closed by
    their permissions; the caller closes the autograder's folder)."""
    if not _as_root() and not trusted:
        raise SandboxUnavailable("KD_SANDBOX=container runs each submission as nobody, which needs a root grader")
    base = {"PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(Path(scratch).resolve()),
            "TMPDIR": str(Path(scratch).resolve()), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
            "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "KD_OUTPUT_LOG": str(Path(scratch).resolve() / "output.log"), "USER": "nobody", "LOGNAME": "nobody"}
    (Path(scratch) / "output.log").touch()
    setenv = ["env", "-i", *[f"{k}={v}" for k, v in {**base, **(env or {})}.items()]]
    run_as = [] if trusted else _drop_to_nobody()
    return [*cgroup, *_prlimit(bool(cgroup)), *run_as, *setenv, *argv]


def command(argv: list[str], *, scratch: Path, readonly: list[Path] = (), writable: list[Path] = (),
            env: dict[str, str] | None = None, cgroup: list[str] = ()) -> list[str]:
    """The ``bwrap`` command line that runs ``argv`` inside the sandbox described above.

    ``scratch`` (a folder on the host) becomes ``/submission``, the only writable folder;
    ``readonly`` adds folders visible at their own paths, read-only (e.g. the autograder's cache);
    ``writable`` adds folders at their own paths that it may write (only for trusted code: the
    solution filling the autograder's cache; the command then keeps the caller's user). Without
    ``writable``, a root caller's sandbox runs as ``nobody``: call ``hand_over(scratch)`` first.
    ``cgroup``: the prefix ``limits()`` yielded (the whole sandbox runs in that cgroup).
    """
    trusted = bool(writable)
    if container_mode():
        return _container_command(argv, scratch=scratch, env=env, trusted=trusted, cgroup=cgroup)
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
    cmd += ["--perms", "0755", "--dir", "/etc"]
    for name in ETC:
        if os.path.exists(f"/etc/{name}"):
            cmd += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for root in visible:
        cmd += ["--ro-bind", str(root), str(root)]
    for folder in writable:
        cmd += ["--bind", str(folder), str(folder)]
    log = Path(scratch).resolve() / "output.log"
    log.touch()
    cmd += ["--perms", "0777", *size, "--tmpfs", SCRATCH, "--perms", "0755", "--dir", str(Path(LOG).parent),
            "--bind", str(log), LOG, "--chdir", SCRATCH, "--clearenv"]
    base = {"PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": HOME, "TMPDIR": "/tmp",
            "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "MPLCONFIGDIR": "/tmp/mpl", "KD_OUTPUT_LOG": LOG, "USER": "nobody",
            "LOGNAME": "nobody"}
    for key, value in {**base, **(env or {})}.items():
        cmd += ["--setenv", key, value]
    return [*cgroup, *cmd, "--", *_prlimit(bool(cgroup)), *run_as, *argv]

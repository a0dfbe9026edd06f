"""Run a notebook as Google Colab would when a student clicks its badge: alone, on a bare runtime.

What Colab gives a notebook opened from GitHub, and what this simulation reproduces:

* the working directory is an empty folder (``/content``): no file of the repository is there, not
  even the notebook itself;
* Colab's preinstalled packages (torch, numpy, pandas, seaborn, scikit-learn, ...) but not the
  course's: ``kdutils``, ``mnist1d`` and ``otter-grader`` are missing. The simulation makes a fresh
  environment that sees the project's virtual environment *without* those three (a folder of links
  to everything else, put on the path after the environment's own site-packages), so whatever the
  set-up cell installs lands in the fresh environment and shadows nothing by accident;
* ``google.colab`` is importable and the kernel is Colab's kind (``google.colab._kernel.Kernel``,
  whose shell class is ``google.colab._shell.Shell``: how otter recognises Colab). The stand-in
  package is written here; it is not Google's code;
* the notebook's own set-up cell does the installing, with its real pip commands. Only the source
  of ``kdutils`` changes: it points at a wheel built from the checkout (``python -m kdutils colab
  --source``, the same rewrite an instructor uses), and pip reads a local folder of wheels instead
  of PyPI (``PIP_NO_INDEX``, ``PIP_FIND_LINKS``), so nothing is downloaded.

``prepare_wheelhouse`` (run by ``make venv``, which has the network) fetches the wheels of the
packages Colab lacks; ``build_kdutils_wheel`` builds kdutils from the checkout; ``simulate`` runs one
notebook and returns what happened (``SimResult``). ``tests/test_colab_simulation.py`` drives it.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import colab

COLAB_LACKS = ("kdutils", "mnist1d", "otter-grader", "trl")   # what a fresh Colab runtime does not have
NEVER_REINSTALLED = ("torch", "torchvision", "numpy")   # Colab's own builds: the set-up must keep them

_STUB = {
    "google/colab/__init__.py": '''"""Stand-in for Google Colab's package, written by kdutils.course.colabsim (not Google's code)."""
from . import drive  # noqa: F401
''',
    "google/colab/_shell.py": '''from ipykernel.zmqshell import ZMQInteractiveShell


class Shell(ZMQInteractiveShell):
    """Colab's shell class has this name; otter recognises Colab by it."""
''',
    "google/colab/_kernel.py": '''from ipykernel.ipkernel import IPythonKernel
from traitlets import Type

from ._shell import Shell


class Kernel(IPythonKernel):
    shell_class = Type(Shell)
''',
    "google/colab/drive.py": '''import os


def mount(mountpoint, force_remount=False, **kwargs):
    """Colab asks for the student's consent and mounts Google Drive; here, an empty local folder."""
    os.makedirs(os.path.join(mountpoint, "MyDrive"), exist_ok=True)
    print("Mounted at", mountpoint)
''',
}


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


class SimulationSetupError(RuntimeError):
    pass


def _top_level_entries(dist_name: str) -> set[str]:
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        return set()
    entries = {Path(str(f)).parts[0] for f in (dist.files or []) if not str(f).startswith("..")}
    return entries


def prepare_wheelhouse(folder: Path) -> list[Path]:
    """Wheels of what Colab lacks (except kdutils), at the versions installed here; needs the network."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = [f"{name}=={md.version(name)}" for name in COLAB_LACKS if name != "kdutils"]
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder), *wanted],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SimulationSetupError(f"could not fetch the wheels of {wanted}:\n{proc.stdout}\n{proc.stderr}")
    return sorted(folder.glob("*.whl"))


def build_kdutils_wheel(checkout: Path, out: Path) -> Path:
    """Build kdutils from ``checkout`` into ``out`` offline, without touching the checkout."""
    checkout, out = Path(checkout), Path(out)
    with tempfile.TemporaryDirectory(prefix="kdutils-src-") as tmp:
        src = Path(tmp)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(checkout / name, src / name)
        shutil.copytree(checkout / "kdutils", src / "kdutils", ignore=shutil.ignore_patterns("__pycache__"))
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                               "--no-index", "-w", str(out), str(src)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SimulationSetupError(f"building the kdutils wheel failed:\n{proc.stdout}\n{proc.stderr}")
    wheels = sorted(out.glob("kdutils-*.whl"))
    if not wheels:
        raise SimulationSetupError(f"no kdutils wheel in {out}")
    return wheels[-1]


def make_runtime(root: Path) -> dict:
    """A fresh Colab-like runtime under ``root``: {'python', 'site', 'content', 'home'}."""
    root = Path(root)
    env_dir = root / "env"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # Colab's preinstalled packages: everything the project's environment has, minus what Colab lacks
    hidden = set().union(*(_top_level_entries(name) for name in COLAB_LACKS))
    # (in a folder named site-packages: on Colab they live under sys.prefix, in dist-packages, and tools that ask
    # "is this module installed?" by its path, as dill does for the datasets library, must answer yes here too)
    preinstalled = root / "colab-preinstalled" / "site-packages"
    preinstalled.mkdir(parents=True)
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.iterdir():
        if entry.name in hidden or entry.suffix == ".pth" or entry.name.startswith("__editable__") \
                or entry.name == "__pycache__":
            continue
        (preinstalled / entry.name).symlink_to(entry)
    (site / "colab-preinstalled.pth").write_text(str(preinstalled) + "\n")
    for rel, text in _STUB.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    content, home = root / "content", root / "home"
    content.mkdir()
    home.mkdir()
    return {"python": python, "site": site, "content": content, "home": home}


def installed_in(site: Path) -> set[str]:
    """Distributions installed into the runtime itself (not the preinstalled ones)."""
    return {md.Distribution.at(p).metadata["Name"].lower().replace("_", "-") for p in Path(site).glob("*.dist-info")}


@dataclass
class SimResult:
    notebook: str
    seconds: float
    error: str | None                        # None when every cell ran
    installed: set[str] = field(default_factory=set)
    executed: nbformat.NotebookNode | None = None
    results_files: list[str] = field(default_factory=list)

    def cell_errors(self) -> list[tuple[int, str, str]]:
        """(cell index, first source line, error) of every cell that raised."""
        out = []
        for i, cell in enumerate(self.executed.cells if self.executed else []):
            for o in cell.get("outputs", []):
                if o.get("output_type") == "error":
                    out.append((i, cell.source.splitlines()[0] if cell.source else "", _strip_ansi(f"{o['ename']}: {o['evalue']}")[:300]))
        return out


CHECK_OUTPUT = "NBVAL_CHECK_OUTPUT"   # nbval's marker: this cell's stored output is the point of the cell


def _text(outputs) -> str:
    parts = []
    for o in outputs:
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif o.get("output_type") in ("execute_result", "display_data"):
            parts.append(o.get("data", {}).get("text/plain", ""))
        elif o.get("output_type") == "error":
            parts.append(f"{o.get('ename')}: {o.get('evalue')}")
    text = _strip_ansi("".join(str(p) if isinstance(p, str) else "".join(p) for p in parts))
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def stored_output_mismatches(stored: nbformat.NotebookNode, executed: nbformat.NotebookNode) -> list[str]:
    """The cells marked ``# NBVAL_CHECK_OUTPUT`` whose text output now differs from the one stored.

    This is nbval's check in its lax mode (only marked cells compared, text outputs, trailing spaces
    ignored), made on the simulation's own execution: each notebook runs once at the smoke scale in
    ``make test``, and what nbval proved is still proved.
    """
    stored_code = [c for c in stored.cells if c.cell_type == "code"]
    executed_code = [c for c in executed.cells if c.cell_type == "code"]
    if len(stored_code) != len(executed_code):
        return [f"the executed notebook has {len(executed_code)} code cells, the stored one {len(stored_code)}"]
    problems = []
    for i, (s, e) in enumerate(zip(stored_code, executed_code)):
        if CHECK_OUTPUT in s.source and _text(s.get("outputs", [])) != _text(e.get("outputs", [])):
            problems.append(f"code cell {i} ({s.source.splitlines()[0][:60]!r}): stored output "
                            f"{_text(s.get('outputs', []))[:200]!r}, now {_text(e.get('outputs', []))[:200]!r}")
    return problems


def simulate(notebook: Path | nbformat.NotebookNode, *, root: Path, wheel: Path, wheelhouse: Path,
             name: str | None = None, env: dict | None = None, timeout: int = 300,
             allow_errors: bool = False) -> SimResult:
    """Open ``notebook`` alone on a fresh simulated Colab runtime under ``root`` and run it top to bottom."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(notebook, as_version=4) if not isinstance(notebook, nbformat.NotebookNode) else notebook
    name = name or Path(notebook).name
    rt = make_runtime(root)
    # Colab keeps the opened notebook in Drive or GitHub, never in the working directory
    path = Path(root) / "opened" / name
    path.parent.mkdir()
    nbformat.write(nb, path)
    colab.rewrite_notebook(path, source=str(wheel))        # the one change: kdutils from the local wheel
    nb = nbformat.read(path, as_version=4)

    specs = Path(root) / "kernels" / "colab-sim"
    specs.mkdir(parents=True)
    (specs / "kernel.json").write_text(json.dumps({
        "argv": [str(rt["python"]), "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.kernel_class=google.colab._kernel.Kernel"],
        "display_name": "Colab (simulated)", "language": "python"}))
    kernel_env = {k: v for k, v in os.environ.items()
                  if not k.startswith(("KD_", "PIP_", "PYTHON", "VIRTUAL_ENV", "JPY_", "MPLBACKEND"))}
    kernel_env.update({"HOME": str(rt["home"]), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse),
                       "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1", "MPLBACKEND": "Agg",
                       "PATH": f"{rt['python'].parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    kernel_env.update(env or {})
    km = KernelManager(kernel_name="colab-sim", transport="ipc", ip=str(Path(root) / "kernel-ipc"),
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs.parent)]))
    client = NotebookClient(nb, km=km, timeout=timeout, allow_errors=allow_errors,
                            resources={"metadata": {"path": str(rt["content"])}})
    start = time.perf_counter()
    error = None
    try:
        client.execute(env=kernel_env, cwd=str(rt["content"]))
    except CellExecutionError as exc:
        error = _strip_ansi(str(exc).strip().splitlines()[-1])[:300]
    except Exception as exc:  # a dead kernel or a timeout
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    seconds = time.perf_counter() - start
    nbformat.write(nb, Path(root) / f"executed-{name}")      # what the student would see, for a look after a failure
    results = sorted(p.relative_to(rt["content"]).as_posix() for p in (rt["content"] / "build" / "results").glob("*.json")) \
        if (rt["content"] / "build" / "results").is_dir() else []
    return SimResult(name, seconds, error, installed_in(rt["site"]), nb, results)

"""Execute the course notebooks (``make run``), several at once.

Each notebook runs top to bottom in a fresh kernel with its own folder as working directory.
The executed copy goes to ``build/notebooks/`` and an HTML rendering to ``build/html/``; a table of
notebook, status and seconds is printed at the end, in the order given, whatever order they finished
in (with several jobs, the slowest of the previous run into the same folder starts first). Each
executed copy records the run that produced its outputs (profile, seed, device, torch, threads,
date, seconds, status) in its metadata under ``kdutils``: the course's website (``make site``) shows
it on every page. A failing notebook makes the command exit non-zero and the table names the
notebook and the failing cell.

``jobs`` kernels run at once (default: one per core), each limited to ``threads`` threads (default
1: the course's models are small, and two kernels of two threads each on two cores crawl). The
kernels get ``KD_THREADS`` (which ``kdutils.runtime`` applies on import) and ``OMP_NUM_THREADS``,
so a notebook computes the same numbers whether it runs alone or beside others: same seed, same
thread count, same arithmetic.
"""
from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pandas as pd

from ..runtime import ConfigError


def cores() -> int:
    """The cores this process may use (its CPU affinity, where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:       # macOS, Windows
        return os.cpu_count() or 1


def _failing_cell(nb) -> str:
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"cell {i} ({out.get('ename')}: {out.get('evalue', '')[:80]})"
    return "unknown cell"


def kernel_environment(threads: int) -> dict[str, str]:
    """The environment a notebook's kernel gets: this process's, with its thread count fixed.

    The kernel's own inline backend puts every figure into the executed copy (the HTML, the website):
    an ``MPLBACKEND=Agg`` set for headless tests would leave them out, so it is dropped.
    """
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.update(KD_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def execute(path: Path, *, timeout: int, env: dict[str, str]):
    """Run one notebook in a fresh kernel; return (executed notebook, status, where it failed)."""
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    status, where = "ok", ""
    try:
        with tempfile.TemporaryDirectory(prefix="kd-ipc-") as ipc:
            # IPC sockets in a private folder: local, and no "running over TCP without encryption" warning
            km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(ipc, "kernel"))
            try:
                NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}).execute(env=env)
            finally:
                if km.has_kernel:
                    km.shutdown_kernel(now=True)
    except CellExecutionError:
        status, where = "FAILED", _failing_cell(nb)
    except Exception as exc:  # kernel died, timeout, ...
        status, where = "FAILED", f"{type(exc).__name__}: {str(exc)[:120]}"
    return nb, status, where


def _previous_seconds(executed: Path) -> float:
    """How long this notebook took the last time it was executed into this folder (0 if never)."""
    try:
        return float(nbformat.read(executed, as_version=4).metadata["kdutils"]["seconds"])
    except Exception:        # no previous run, or a copy from elsewhere: no estimate
        return 0.0


def run_notebooks(paths, out_dir: Path, *, timeout: int = 1800, html: bool = True, jobs: int = 1,
                  threads: int = 1) -> pd.DataFrame:
    """Execute ``paths`` (``jobs`` at a time, ``threads`` threads each) into ``out_dir``; one row each."""
    if jobs < 1 or threads < 1:
        raise ConfigError(f"jobs and threads must be >= 1, got jobs={jobs}, threads={threads}")
    paths = [Path(p) for p in paths]
    out_dir = Path(out_dir)
    (out_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    if html:
        (out_dir / "html").mkdir(parents=True, exist_ok=True)
    from .. import runtime

    # the kernels inherit this process's environment, so they run at this profile, seed and device
    run_info = {k: v for k, v in runtime.describe().items() if k in ("profile", "seed", "device", "gpu", "torch")}
    run_info["threads"] = threads
    env = kernel_environment(threads)

    def one(path: Path) -> dict:
        start = time.perf_counter()
        nb, status, where = execute(path, timeout=timeout, env=env)
        seconds = time.perf_counter() - start
        nb.metadata["kdutils"] = {**run_info, "executed_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                  "seconds": round(seconds, 1), "status": status}
        nbformat.write(nb, out_dir / "notebooks" / path.name)
        if html:
            from nbconvert import HTMLExporter
            body, _ = HTMLExporter().from_notebook_node(nb)
            (out_dir / "html" / path.with_suffix(".html").name).write_text(body)
        print(f"{path.name:40s} {status:7s} {seconds:7.1f}s {where}", flush=True)
        return {"notebook": path.name, "status": status, "seconds": round(seconds, 1), "where": where}

    # the slowest first (by the previous run into out_dir, where there is one), so that no long notebook
    # starts last while the other cores idle; the kernels are separate processes: these threads only wait
    order = sorted(paths, key=lambda p: -_previous_seconds(out_dir / "notebooks" / p.name)) if jobs > 1 else paths
    with ThreadPoolExecutor(max_workers=min(jobs, max(1, len(paths)))) as pool:
        done = dict(zip(order, pool.map(one, order)))
    return pd.DataFrame([done[p] for p in paths])

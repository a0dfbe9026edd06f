"""Execute the course notebooks in order (``make run``).

Each notebook runs top to bottom in a fresh kernel with its own folder as working directory.
The executed copy goes to ``build/notebooks/`` and an HTML rendering to ``build/html/``; a table of
notebook, status and seconds is printed at the end. Each executed copy records the run that produced
its outputs (profile, seed, device, torch, date, seconds, status) in its metadata under ``kdutils``:
the course's website (``make site``) shows it on every page. A failing notebook makes the command exit
non-zero and the table names the notebook and the failing cell.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import nbformat
import pandas as pd


def _failing_cell(nb) -> str:
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"cell {i} ({out.get('ename')}: {out.get('evalue', '')[:80]})"
    return "unknown cell"


def run_notebooks(paths, out_dir: Path, *, timeout: int = 1800, html: bool = True) -> pd.DataFrame:
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    out_dir = Path(out_dir)
    (out_dir / "notebooks").mkdir(parents=True, exist_ok=True)
    if html:
        (out_dir / "html").mkdir(parents=True, exist_ok=True)
    from .. import runtime

    # the kernels inherit this process's environment, so they run at this profile, seed and device
    run_info = {k: v for k, v in runtime.describe().items() if k in ("profile", "seed", "device", "gpu", "torch")}
    rows = []
    for path in map(Path, paths):
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        status, where = "ok", ""
        try:
            with tempfile.TemporaryDirectory(prefix="kd-ipc-") as ipc:
                # IPC sockets in a private folder: local, and no "running over TCP without encryption" warning
                km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(ipc, "kernel"))
                try:
                    # the kernel's own inline backend puts every figure into the executed copy (the HTML, the
                    # website): an MPLBACKEND=Agg set for headless tests would leave them out
                    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
                    NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}).execute(env=env)
                finally:
                    if km.has_kernel:
                        km.shutdown_kernel(now=True)
        except CellExecutionError:
            status, where = "FAILED", _failing_cell(nb)
        except Exception as exc:  # kernel died, timeout, ...
            status, where = "FAILED", f"{type(exc).__name__}: {str(exc)[:120]}"
        seconds = time.perf_counter() - start
        nb.metadata["kdutils"] = {**run_info, "executed_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                  "seconds": round(seconds, 1), "status": status}
        executed = out_dir / "notebooks" / path.name
        nbformat.write(nb, executed)
        if html:
            from nbconvert import HTMLExporter
            body, _ = HTMLExporter().from_notebook_node(nb)
            (out_dir / "html" / path.with_suffix(".html").name).write_text(body)
        rows.append({"notebook": path.name, "status": status, "seconds": round(seconds, 1), "where": where})
        print(f"{path.name:40s} {status:7s} {seconds:7.1f}s {where}", flush=True)
    return pd.DataFrame(rows)

"""Save a notebook's key figures as JSON, so instructors and CI can read them without the notebook.

``save_results("03_first_distillation", {...})`` writes ``$KD_RESULTS_DIR/03_first_distillation.json``
holding the profile, seed and device of the run and the metrics. The write is atomic (a temporary
file, then a rename): an interrupted run never leaves a half-written file in place of a good one;
the file is readable as any new file here is (``kdutils.files``).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import runtime
from .files import atomic_write_text


def to_jsonable(value):
    """Convert tensors, arrays, DataFrames and numpy scalars into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return to_jsonable(value.reset_index().to_dict(orient="records"))
    if isinstance(value, pd.Series):
        return to_jsonable(value.to_dict())
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def save_results(name: str, metrics: dict, *, directory: str | os.PathLike | None = None) -> Path:
    """Write ``metrics`` with the run's profile, seed and device to ``<directory>/<name>.json``."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"results name must be a plain file stem like '03_first_distillation', got {name!r}")
    directory = Path(directory) if directory is not None else runtime.results_dir()
    directory.mkdir(parents=True, exist_ok=True)
    info = runtime.describe()
    payload = {
        "name": name,
        "profile": info["profile"],
        "seed": info["seed"],
        "device": info["device"],
        "torch": info["torch"],
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "metrics": to_jsonable(metrics),
    }
    text = json.dumps(payload, indent=2, allow_nan=False)
    return atomic_write_text(directory / f"{name}.json", text)


def load_results(name: str, *, directory: str | os.PathLike | None = None) -> dict:
    directory = Path(directory) if directory is not None else runtime.results_dir()
    return json.loads((directory / f"{name}.json").read_text())

"""Save a notebook's key figures as JSON, so instructors and CI can read them without the notebook.

``save_results("03_first_distillation", {...})`` writes ``$KD_RESULTS_DIR/03_first_distillation.json``
holding the profile, seed and device of the run and the metrics. The write is atomic (a temporary
file, then a rename): an interrupted run never leaves a half-written file in place of a good one;
the file is readable as any new file here is (``kdutils.files``).

**Primary claims.** Each experiment states a few claims before it runs (the lesson's point), and checks
each with ``claims = report.Claims("03_first_distillation")`` then ``claims.check(name, holds, ...)``.
A claim that fails at the full profile stops the notebook with an ``AssertionError`` that prints its
evidence; at the smoke profile (too small for the claim to hold) it is recorded, not asserted. Every
check is written at once to ``<results>/<name>.claims.json`` and into the results JSON, so a seed sweep
(``benchmarks/claims_sweep.py``, which sets ``KD_CLAIMS=record`` so that one failing claim does not hide
the later ones) can count in how many seeds each claim held. Everything else a notebook shows is a
secondary finding: printed as "in this run", never asserted.
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


def claims_enforced() -> bool:
    """Whether a failing primary claim stops the notebook: at the full profile, unless KD_CLAIMS=record."""
    mode = os.environ.get("KD_CLAIMS", "").strip().lower()
    if mode not in ("", "assert", "record"):
        raise ValueError(f"KD_CLAIMS must be 'assert' or 'record', got {mode!r}")
    return runtime.profile() == "full" and mode != "record"


class Claims:
    """The primary claims of one notebook's experiment, checked and registered as they are made.

    ``check(name, holds, statement, effect=, noise=, **evidence)``: ``holds`` is the verdict (a bool
    computed from the run), ``statement`` the claim in words, ``effect`` and ``noise`` (optional) the
    measured size of the effect and the half-width of its interval, so a sweep can also ask whether the
    effect is clearly larger than its noise. ``secondary(name, holds, statement)`` records a finding
    the notebook does not claim (printed as "in this run", never asserted) so the sweep can say how
    often it held. Each name is checked once per run.
    """

    def __init__(self, notebook: str, *, directory: str | os.PathLike | None = None):
        _check_name(notebook)
        self.notebook = notebook
        self.path = (Path(directory) if directory is not None else runtime.results_dir()) / f"{notebook}.claims.json"
        self.run = {"profile": runtime.profile(), "seed": runtime.seed()}
        self.records: dict[str, dict] = {}
        _CLAIMS[notebook] = self

    def check(self, name: str, holds, statement: str, *, effect=None, noise=None, **evidence) -> bool:
        """Check a primary claim: recorded, printed, and at the full profile asserted."""
        return self._record(name, holds, statement, primary=True, effect=effect, noise=noise, evidence=evidence)

    def secondary(self, name: str, holds, statement: str, **evidence) -> bool:
        """Record a secondary finding (what this run showed): printed and counted by the sweep, never asserted."""
        return self._record(name, holds, statement, primary=False, effect=None, noise=None, evidence=evidence)

    def _record(self, name, holds, statement, *, primary, effect, noise, evidence) -> bool:
        if not name or not isinstance(name, str):
            raise ValueError(f"a claim needs a name, got {name!r}")
        if name in self.records:
            raise ValueError(f"claim {name!r} of {self.notebook} was already checked in this run")
        holds = bool(holds)
        record = self.records[name] = to_jsonable({"statement": statement, "primary": primary, "holds": holds,
                                                   "effect": effect, "noise": noise, "evidence": evidence})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"name": self.notebook, **self.run, "claims": self.records},
                                                indent=2, allow_nan=False))
        size = "" if effect is None else f" (effect {effect:+.3g}" + ("" if noise is None else f", noise {noise:.3g}") + ")"
        if primary:
            print(f"primary claim {'holds' if holds else 'FAILS'}: {statement}{size}")
        else:
            print(f"in this run, {'yes' if holds else 'no'}: {statement}")
        if primary and not holds and claims_enforced():
            raise AssertionError(f"primary claim {name!r} fails: {statement}; evidence: {record['evidence']}{size}")
        return holds


_CLAIMS: dict[str, Claims] = {}


def _check_name(name: str):
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"results name must be a plain file stem like '03_first_distillation', got {name!r}")


def save_results(name: str, metrics: dict, *, directory: str | os.PathLike | None = None) -> Path:
    """Write ``metrics`` with the run's profile, seed and device (and the primary claims checked under
    the same name, if any) to ``<directory>/<name>.json``."""
    _check_name(name)
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
    if name in _CLAIMS:
        payload["claims"] = _CLAIMS[name].records
    text = json.dumps(payload, indent=2, allow_nan=False)
    return atomic_write_text(directory / f"{name}.json", text)


def load_results(name: str, *, directory: str | os.PathLike | None = None) -> dict:
    directory = Path(directory) if directory is not None else runtime.results_dir()
    return json.loads((directory / f"{name}.json").read_text())

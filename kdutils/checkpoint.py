"""Checkpoints that survive an interrupted run and never execute what a file contains.

* ``save_checkpoint`` writes atomically (a temporary file, then a rename): a reader sees the old
  checkpoint or the new one, never half of one, however the run is stopped.
* ``load_checkpoint`` reads with ``torch.load(..., weights_only=True)``: tensors, numbers, strings
  and containers of them, nothing else. A file that carries a pickled Python object (a class
  instance, a function: what a crafted file would use to run code on load) is refused with an
  error naming the file, and left untouched. So is a corrupt file, one that is not a checkpoint
  of this run, and one made with another configuration: a checkpoint is never silently overwritten.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from .files import atomic_write

CHECKPOINT_KEYS = frozenset({"config", "model", "opt", "sched", "loader_rng", "history", "epoch", "seconds"})


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(path: Path, state: dict):
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def _short(exc: Exception) -> str:
    reason = " ".join(str(exc).split())
    return reason if len(reason) <= 160 else reason[:160].rsplit(" ", 1)[0] + " ..."


def load_checkpoint(path: Path, expected_config: dict) -> dict | None:
    """The checkpoint at ``path`` (None if there is none); a ``CheckpointError`` if it is corrupt,
    carries Python objects, is not a checkpoint or was made with another configuration."""
    path = Path(path)
    if not path.exists():
        return None
    leave = "it was left untouched: move it away or pass another --checkpoint-dir"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:     # weights_only refused a global: a class, a function, ...
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f"it refers to {found.group(1)}" if found else _short(exc)
        raise CheckpointError(f"checkpoint {path} carries a Python object that a safe load does not execute ({what}; "
                              f"torch.load(weights_only=True) refused it); {leave}") from None
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {_short(exc)}); {leave}") from None
    missing = sorted(CHECKPOINT_KEYS - set(state)) if isinstance(state, dict) else None
    if missing is None or missing:
        what = f"it lacks {missing}" if missing else f"it holds a {type(state).__name__}, not a dictionary"
        raise CheckpointError(f"checkpoint {path} is not a kdutils.fullrun checkpoint ({what}); {leave}")
    if state["config"] != expected_config:
        diff = {k: (state["config"].get(k), expected_config.get(k)) for k in set(state["config"]) | set(expected_config)
                if state["config"].get(k) != expected_config.get(k)}
        raise CheckpointError(f"checkpoint {path} was made with another configuration {diff} (saved, requested); "
                              "it was left untouched: pass another --checkpoint-dir to start afresh")
    return state

"""Where the course runs: profile, seed, device, Colab, and where results go.

Two environment variables control every notebook:

* ``KD_PROFILE`` = ``smoke`` (tiny, for tests: each notebook in seconds on 2 CPU cores)
  or ``full`` (the default: the real experiment; minutes on a CPU laptop, GPU scale on a GPU).
* ``KD_SEED`` (default 0) seeds Python, NumPy and PyTorch.

Notebooks read them through this module, never from ``os.environ`` directly.
"""
from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

PROFILES = ("smoke", "full")


def profile() -> str:
    """The scale to run at: ``smoke`` or ``full`` (from ``KD_PROFILE``, default ``full``)."""
    value = os.environ.get("KD_PROFILE", "full").strip().lower() or "full"
    if value not in PROFILES:
        raise ValueError(f"KD_PROFILE must be one of {PROFILES}, got {value!r}")
    return value


def is_smoke() -> bool:
    return profile() == "smoke"


def seed() -> int:
    """The run's seed (from ``KD_SEED``, default 0)."""
    value = os.environ.get("KD_SEED", "0").strip() or "0"
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"KD_SEED must be an integer, got {value!r}") from None


def seed_everything(value: int | None = None) -> int:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) and return the seed used."""
    value = seed() if value is None else int(value)
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)  # also seeds every CUDA device
    return value


def device() -> torch.device:
    """The best device available: CUDA, then Apple's MPS, then the CPU.

    ``KD_DEVICE`` (e.g. ``cpu``) overrides the choice.
    """
    forced = os.environ.get("KD_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


def scale(*, smoke, full, gpu=None):
    """Pick a value by profile: ``smoke``, ``full`` on CPU, ``gpu`` (default: ``full``) on an accelerator."""
    if is_smoke():
        return smoke
    if gpu is not None and device().type != "cpu":
        return gpu
    return full


def repo_root() -> Path:
    """The course checkout kdutils was imported from, else the current directory.

    From a checkout (``make lab``, ``pip install -e .``) results go to ``<checkout>/build/``; when
    kdutils is installed as a normal package (Colab, ``pip install``) they go to ``./build/`` beside
    the notebook, e.g. ``/content/build`` on Colab.
    """
    here = Path(__file__).resolve().parents[1]
    pyproject = here / "pyproject.toml"
    if pyproject.is_file() and 'name = "kdutils"' in pyproject.read_text(errors="replace"):
        return here
    return Path.cwd()


def results_dir() -> Path:
    """Where notebooks save their figures (``KD_RESULTS_DIR``, default ``build/results``)."""
    path = Path(os.environ.get("KD_RESULTS_DIR", repo_root() / "build" / "results"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Where generated datasets are cached (``KD_CACHE_DIR``, default ``~/.cache/kdutils``)."""
    path = Path(os.environ.get("KD_CACHE_DIR", Path.home() / ".cache" / "kdutils"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def describe() -> dict:
    """A one-line summary of the run, for banners and results files."""
    dev = device()
    info = {
        "profile": profile(),
        "seed": seed(),
        "device": str(dev),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "colab": in_colab(),
        "threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info

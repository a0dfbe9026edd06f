"""Where the course runs: profile, seed, device, Colab, and where results and caches go.

This module is the one place that reads the environment. Every notebook and command reads these
variables through it, never from ``os.environ`` directly:

=================  ===========================================================================
``KD_PROFILE``     ``full`` (default: the real experiments; minutes on a CPU laptop, GPU scale on a
                   GPU) or ``smoke`` (tiny, for tests: each notebook in seconds on 2 CPU cores)
``KD_SEED``        an integer in [0, 2**63), default 0: seeds Python, NumPy and PyTorch
``KD_DEVICE``      ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; default: CUDA, then MPS, then the CPU
``KD_CACHE_DIR``   generated datasets, default ``~/.cache/kdutils``
``KD_RESULTS_DIR`` the notebooks' figures as JSON, default ``build/results`` (see ``repo_root``)
``KD_THREADS``     an integer >= 1: the CPU threads PyTorch uses, applied when kdutils is imported
                   (``make run`` gives each notebook's kernel 1); default: PyTorch's own choice
=================  ===========================================================================

Values are read with surrounding spaces removed and case ignored where case means nothing; an
empty value means "unset"; paths have ``~`` expanded. A bad value raises ``ConfigError`` (a
``ValueError``) naming the variable, the value and what is accepted.
"""
from __future__ import annotations

import os
import random
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

PROFILES = ("smoke", "full")
SEED_LIMIT = 2**63


class ConfigError(ValueError):
    """A setting the course cannot use: a ``KD_*`` environment variable or a command's option or path.
    Commands report it as one line (exit status 2); any other error keeps its traceback."""


def _env(name: str) -> str | None:
    """The variable's value without surrounding spaces; None when unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or None


def profile() -> str:
    """The scale to run at: ``smoke`` or ``full`` (from ``KD_PROFILE``, default ``full``)."""
    value = (_env("KD_PROFILE") or "full").lower()
    if value not in PROFILES:
        raise ConfigError(f"KD_PROFILE must be one of {', '.join(PROFILES)} (or unset for full), "
                          f"got {os.environ['KD_PROFILE']!r}")
    return value


def is_smoke() -> bool:
    return profile() == "smoke"


def seed() -> int:
    """The run's seed (from ``KD_SEED``, default 0)."""
    raw = _env("KD_SEED")
    if raw is None:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"KD_SEED must be a whole number in [0, 2**63), got {raw!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise ConfigError(f"KD_SEED must be a whole number in [0, 2**63), got {raw!r}")
    return value


def threads() -> int | None:
    """The CPU threads PyTorch should use (from ``KD_THREADS``), or None to leave PyTorch's default."""
    raw = _env("KD_THREADS")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"KD_THREADS must be a whole number >= 1 (or unset for PyTorch's default), got {raw!r}")
    return value


def apply_threads() -> int:
    """Set PyTorch's CPU thread count from ``KD_THREADS`` (if set); return the count in use."""
    wanted = threads()
    if wanted is not None and torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return torch.get_num_threads()


def seed_everything(value: int | None = None) -> int:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) and return the seed used."""
    value = seed() if value is None else int(value)
    if not 0 <= value < SEED_LIMIT:
        raise ValueError(f"seed must be in [0, 2**63), got {value}")
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)  # also seeds every CUDA device
    return value


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def available_devices() -> list[str]:
    """The devices this machine can run on, best first."""
    found = [f"cuda:{i}" if i else "cuda" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if _mps_available():
        found.append("mps")
    return found + ["cpu"]


def device() -> torch.device:
    """The best device available: CUDA, then Apple's MPS, then the CPU.

    ``KD_DEVICE`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``) overrides the choice; a device this machine
    does not have is refused here, naming the devices it does have.
    """
    raw = _env("KD_DEVICE")
    if raw is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    value = raw.lower()
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", value):
        raise ConfigError(f"KD_DEVICE must be cpu, cuda, cuda:N or mps (or unset to choose automatically), got {raw!r}")
    dev = torch.device(value)
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            raise ConfigError(f"KD_DEVICE={raw!r}, but this machine has {count or 'no'} CUDA GPU{'s' if count != 1 else ''} "
                              f"(available: {', '.join(available_devices())}); unset KD_DEVICE to choose automatically")
    if dev.type == "mps" and not _mps_available():
        raise ConfigError(f"KD_DEVICE={raw!r}, but Apple's MPS is not available here (available: "
                          f"{', '.join(available_devices())}); unset KD_DEVICE to choose automatically")
    return dev


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


def _directory(variable: str, default: Path, *, required: bool) -> Path:
    """The folder named by ``variable`` (or ``default``), created if missing.

    A file in its place is always an error. A folder that cannot be created is an error when
    ``required``; otherwise a warning, and the caller works without it (a cache).
    """
    raw = _env(variable)
    path = Path(raw).expanduser() if raw is not None else default
    shown = f"{variable}={raw!r}" if raw is not None else f"{variable} (unset, default {str(default)!r})"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{shown} is a file, not a folder: point it at a folder (or unset it)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        message = f"{shown}: cannot create the folder {str(path)!r} ({exc.strerror})"
        if required:
            raise ConfigError(f"{message}; point it at a folder you can write") from None
        warnings.warn(f"{message}: working without a cache", RuntimeWarning, stacklevel=3)
    return path


def results_dir() -> Path:
    """Where notebooks save their figures (``KD_RESULTS_DIR``, default ``build/results``)."""
    return _directory("KD_RESULTS_DIR", repo_root() / "build" / "results", required=True)


def cache_dir() -> Path:
    """Where generated datasets are cached (``KD_CACHE_DIR``, default ``~/.cache/kdutils``)."""
    return _directory("KD_CACHE_DIR", Path.home() / ".cache" / "kdutils", required=False)


def check_environment() -> dict:
    """Read every ``KD_*`` variable now (raising ``ConfigError`` for a bad one); returns ``describe()``."""
    info = describe()
    threads()
    results_dir()
    cache_dir()
    return info


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


try:              # KD_THREADS is honoured by every notebook and command that imports kdutils
    apply_threads()
except ConfigError as exc:   # importing never fails on it; check_environment() and the commands stop on it
    warnings.warn(str(exc), RuntimeWarning, stacklevel=2)

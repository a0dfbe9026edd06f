"""The course's datasets, all available offline.

* ``load_digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 real images).
* ``load_mnist1d``: MNIST-1D (Greydanus 2020), generated locally by the ``mnist1d`` package.
  Default arguments reproduce the published frozen dataset: 4,000 train / 1,000 test sequences of
  length 40. Generation is slow (~10 s per 25k samples), so results are cached on disk under
  ``kdutils.runtime.cache_dir()``, keyed by every generation argument.

Both return a :class:`Dataset` of tensors with a deterministic split.

The full run (notebook 09, ``kdutils.fullrun``) reads images as uint8 ``(N, 3, 32, 32)`` tensors:

* ``read_cifar10`` / ``load_cifar10``: CIFAR-10 from torchvision's on-disk layout (downloaded by
  torchvision where there is internet; ``DatasetUnavailable`` names what is missing otherwise);
* ``load_digits32``: the embedded digits as CIFAR-shaped images, the offline fallback.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import runtime
from .files import atomic_write


@dataclass
class Dataset:
    """Train and test tensors: ``x_*`` float32 inputs, ``y_*`` int64 labels."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int = 10

    def to(self, device) -> "Dataset":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in moved.items():
            if isinstance(v, torch.Tensor):
                moved[k] = v.to(device)
        return Dataset(**moved)

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "Dataset":
        """The first ``n_train`` / ``n_test`` examples (the split is already shuffled)."""
        return Dataset(self.x_train[:n_train], self.y_train[:n_train],
                       self.x_test[:n_test], self.y_test[:n_test], self.num_classes)

    def __repr__(self) -> str:
        return (f"Dataset(train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
                f"classes={self.num_classes})")


# ----------------------------------------------------------------------------- digits

def load_digits(*, test_fraction: float = 0.25, seed: int = 0, flat: bool = False) -> Dataset:
    """scikit-learn's 8x8 digits, scaled to [0, 1], split stratified by ``seed``.

    Images are ``(N, 1, 8, 8)`` (``flat=True``: ``(N, 64)``).
    """
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = _load()
    x = bunch.data.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    shape = (-1, 64) if flat else (-1, 1, 8, 8)
    return Dataset(torch.from_numpy(x_tr).reshape(shape), torch.from_numpy(y_tr),
                   torch.from_numpy(x_te).reshape(shape), torch.from_numpy(y_te))


# ----------------------------------------------------------------------------- MNIST-1D

def mnist1d_args(**overrides) -> dict:
    """The ``mnist1d`` generation arguments (the published defaults, with ``overrides``)."""
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url", None)  # never download
    unknown = set(overrides) - set(args)
    if unknown:
        raise ValueError(f"unknown MNIST-1D argument(s) {sorted(unknown)}; known: {sorted(args)}")
    args.update(overrides)
    return args


def _cache_key(args: dict) -> str:
    blob = json.dumps(args, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def mnist1d_cache_path(**overrides) -> Path:
    return runtime.cache_dir() / f"mnist1d-{_cache_key(mnist1d_args(**overrides))}.npz"


def _generate_mnist1d(args: dict) -> dict:
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    data = make_dataset(ObjectView(dict(args)))
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def _savez(path: Path, arrays: dict):
    with open(path, "wb") as f:      # a file object: np.savez would append ".npz" to a path
        np.savez(f, **arrays)


def load_mnist1d(num_samples: int = 5000, seed: int = 42, *, use_cache: bool = True, **overrides) -> Dataset:
    """MNIST-1D generated locally; the defaults give the published 4,000/1,000 split.

    ``num_samples`` and ``seed`` (and any other ``mnist1d`` argument, e.g. ``train_split``) are
    passed to ``mnist1d.data.make_dataset``. The result is cached as ``.npz`` under
    ``runtime.cache_dir()``; the cache key covers every argument, and the file is written
    atomically so an interrupted run never leaves a corrupt cache behind.
    Inputs are ``(N, 40)`` float32 sequences.
    """
    args = mnist1d_args(num_samples=num_samples, seed=seed, **overrides)
    path = runtime.cache_dir() / f"mnist1d-{_cache_key(args)}.npz"
    arrays = None
    if use_cache and path.exists():
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except Exception:  # unreadable cache: regenerate (it is ours, derived data)
            arrays = None
    if arrays is None:
        arrays = _generate_mnist1d(args)
        if use_cache and path.parent.is_dir():    # runtime.cache_dir() warned if it could not make it
            try:
                atomic_write(path, lambda tmp: _savez(tmp, arrays))
            except OSError as exc:   # a read-only cache (or HOME): go on without caching
                warnings.warn(f"could not cache MNIST-1D in {path.parent} ({exc.strerror or exc}); "
                              "it will be generated again next time (set KD_CACHE_DIR to a writable folder)",
                              RuntimeWarning, stacklevel=2)
    as_x = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    as_y = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
    return Dataset(as_x(arrays["x"]), as_y(arrays["y"]), as_x(arrays["x_test"]), as_y(arrays["y_test"]))


def mnist1d_transfer_set(num_samples: int, *, seed: int = 1234) -> torch.Tensor:
    """Extra MNIST-1D inputs, *without labels*, for distillation (a transfer set).

    Generated with a different seed from the benchmark (default 42), so they are new samples from
    the same distribution; the labels are dropped on purpose.
    """
    if seed == 42:
        raise ValueError("seed 42 generates the benchmark itself; a transfer set needs another seed")
    return load_mnist1d(num_samples=num_samples, seed=seed, train_split=1.0).x_train


# ----------------------------------------------------------------------------- CIFAR-10 (uint8 images)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class DatasetUnavailable(RuntimeError):
    """A dataset is neither on disk nor downloadable here (offline, blocked host, ...)."""


def read_cifar10(root: str | os.PathLike):
    """Read CIFAR-10 from torchvision's on-disk layout (``root/cifar-10-batches-py/``).

    Returns uint8 ``(N, 3, 32, 32)`` images and int64 labels for train (data_batch_1..5) and test.
    """
    folder = Path(root) / "cifar-10-batches-py"
    if not folder.is_dir():
        raise DatasetUnavailable(f"no CIFAR-10 under {folder}")

    def load(names):
        xs, ys = [], []
        for name in names:
            path = folder / name
            if not path.exists():
                raise DatasetUnavailable(f"CIFAR-10 file missing: {path}")
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3072:
                raise DatasetUnavailable(f"{path} is not a CIFAR-10 batch (data shape {data.shape})")
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    x_tr, y_tr = load([f"data_batch_{i}" for i in range(1, 6)])
    x_te, y_te = load(["test_batch"])
    return x_tr, y_tr, x_te, y_te


def load_cifar10(root: str | os.PathLike, *, download: bool = True):
    """CIFAR-10 via torchvision's download (where there is internet), then ``read_cifar10``."""
    try:
        return read_cifar10(root)
    except DatasetUnavailable:
        if not download:
            raise
    try:
        import torchvision
        torchvision.datasets.CIFAR10(root, train=True, download=True)
        torchvision.datasets.CIFAR10(root, train=False, download=True)
    except Exception as exc:  # no internet, blocked host, full disk, ...
        raise DatasetUnavailable(f"CIFAR-10 is not under {root} and could not be downloaded "
                                 f"({type(exc).__name__}: {str(exc)[:120]})") from None
    return read_cifar10(root)


def load_digits32():
    """The embedded 8x8 digits as CIFAR-shaped uint8 images (3 x 32 x 32), for the offline fallback."""
    d = load_digits(seed=0)
    def to32(x):
        x = F.interpolate(x, size=32, mode="bilinear", align_corners=False).clamp(0, 1)
        return (x * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return to32(d.x_train), d.y_train, to32(d.x_test), d.y_test


def batches(n: int, batch_size: int, *, generator: torch.Generator | None = None, shuffle: bool = True,
            drop_last: bool = False, device=None):
    """Index tensors covering ``range(n)`` in batches (a DataLoader without the DataLoader), on ``device``.
    The order is drawn on ``generator``'s device (a CUDA generator shuffles on the GPU)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle:
        order = torch.randperm(n, generator=generator, device=generator.device if generator is not None else "cpu")
    else:
        order = torch.arange(n)
    if device is not None:
        order = order.to(device)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        yield order[i:i + batch_size]


def row_digests(x: torch.Tensor) -> frozenset[int]:
    """A 64-bit digest of each row of ``x`` (its values as float32): two sets share a row exactly when
    they share a digest (up to a 2^-64 chance per pair). ``train.fit`` and ``train.distil`` keep the digests of every row a
    model was trained on (``model.kd_trained_rows``), so that a test can check that no test row was
    among them: the test set is for measuring, never for training."""
    rows = x.detach().float().cpu().contiguous().reshape(len(x), -1).numpy()
    return frozenset(int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little") for r in rows)

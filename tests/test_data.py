import numpy as np
import pytest
import torch

from kdutils import data


def test_digits_shapes_split_and_determinism():
    a = data.load_digits(seed=0)
    assert a.x_train.shape == (1347, 1, 8, 8) and a.x_test.shape == (450, 1, 8, 8)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    assert set(a.y_test.tolist()) == set(range(10))  # stratified: every class in the test split
    b = data.load_digits(seed=0)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    c = data.load_digits(seed=1)
    assert not torch.equal(a.y_train, c.y_train)
    assert data.load_digits(flat=True).x_train.shape == (1347, 64)
    # train and test are disjoint
    tr = {tuple(r) for r in a.x_train.reshape(len(a.x_train), -1).tolist()}
    overlap = sum(tuple(r) in tr for r in a.x_test.reshape(len(a.x_test), -1).tolist())
    assert overlap <= 5  # the digits set has a handful of exact duplicate images


def test_mnist1d_small_generation_and_cache(cache_dir):
    ds = data.load_mnist1d(num_samples=200, seed=7)
    assert ds.x_train.shape == (160, 40) and ds.x_test.shape == (40, 40)
    assert ds.y_train.dtype == torch.int64 and ds.x_train.dtype == torch.float32
    files = list(cache_dir.glob("mnist1d-*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = data.load_mnist1d(num_samples=200, seed=7)  # cache hit: same file, same tensors
    assert files[0].stat().st_mtime_ns == mtime
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_test, again.y_test)
    other = data.load_mnist1d(num_samples=200, seed=8)  # any argument change: a new entry
    assert len(list(cache_dir.glob("mnist1d-*.npz"))) == 2
    assert not torch.equal(other.x_train, ds.x_train)
    data.load_mnist1d(num_samples=200, seed=7, iid_noise_scale=0.05)
    assert len(list(cache_dir.glob("mnist1d-*.npz"))) == 3
    # the cache is a pure function of the arguments: regenerating gives identical data
    fresh = data.load_mnist1d(num_samples=200, seed=7, use_cache=False)
    assert torch.equal(fresh.x_train, ds.x_train)


def test_mnist1d_corrupt_cache_is_regenerated(cache_dir):
    ds = data.load_mnist1d(num_samples=100, seed=3)
    path = data.mnist1d_cache_path(num_samples=100, seed=3)
    path.write_bytes(b"not an npz")
    again = data.load_mnist1d(num_samples=100, seed=3)
    assert torch.equal(again.x_train, ds.x_train)
    with np.load(path) as f:
        assert f["x"].shape == (80, 40)


def test_mnist1d_published_default_split(cache_dir):
    ds = data.load_mnist1d()
    assert list(cache_dir.glob("mnist1d-*.npz")), "cached in KD_CACHE_DIR, not in the user's ~/.cache"
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    counts = torch.bincount(torch.cat([ds.y_train, ds.y_test]), minlength=10)
    assert (counts == 500).all()


def test_mnist1d_rejects_unknown_arguments_and_benchmark_seed(cache_dir):
    with pytest.raises(ValueError, match="unknown MNIST-1D"):
        data.load_mnist1d(num_samples=100, sead=3)
    with pytest.raises(ValueError, match="seed 42"):
        data.mnist1d_transfer_set(100, seed=42)
    x = data.mnist1d_transfer_set(100, seed=5)
    assert x.shape == (100, 40)


def test_batches_cover_everything_once():
    g = torch.Generator().manual_seed(0)
    idx = torch.cat(list(data.batches(103, 10, generator=g)))
    assert sorted(idx.tolist()) == list(range(103))
    assert sum(1 for _ in data.batches(103, 10, drop_last=True)) == 10
    with pytest.raises(ValueError, match="batch_size"):
        list(data.batches(10, 0))

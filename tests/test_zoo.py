"""kdutils.zoo: a recipe is trained once, then loaded; a changed recipe or a bad file is trained again."""
import os

import pytest
import torch
from torch import nn

from kdutils import zoo


def _recipe(calls, value=1.0):
    def make():
        torch.manual_seed(0)
        return nn.Linear(3, 2)

    def train(model):
        calls.append(1)
        with torch.no_grad():
            model.weight.fill_(value)

    return make, train


def test_trained_once_then_loaded(cache_dir):
    calls = []
    a = zoo.cached("toy", {"v": 1}, *_recipe(calls))
    b = zoo.cached("toy", {"v": 1}, *_recipe(calls))
    assert calls == [1], "the second call loads the cached weights instead of training"
    assert torch.equal(a.weight, b.weight) and torch.equal(b.weight, torch.ones(2, 3)) and not b.training
    c = zoo.cached("toy", {"v": 2}, *_recipe(calls, value=2.0))
    assert calls == [1, 1] and torch.equal(c.weight, torch.full((2, 3), 2.0)), "a changed recipe is a new entry"


def test_bad_cache_file_is_trained_again(cache_dir):
    calls = []
    path = zoo.cache_path("toy", {"v": 1})
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    m = zoo.cached("toy", {"v": 1}, *_recipe(calls))
    assert calls == [1] and torch.equal(m.weight, torch.ones(2, 3))
    assert torch.load(path, weights_only=True)["weight"].eq(1).all(), "the bad file is replaced by a good one"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_read_only_cache_warns_and_still_returns_the_model(cache_dir):
    (cache_dir / "zoo").mkdir(parents=True)
    os.chmod(cache_dir / "zoo", 0o500)
    with pytest.warns(RuntimeWarning, match="could not cache toy"):
        m = zoo.cached("toy", {"v": 1}, *_recipe([]))
    assert torch.equal(m.weight, torch.ones(2, 3))


def test_read_only_cache_file_system_warns(cache_dir, monkeypatch):
    def refuse(path, write):
        raise PermissionError(13, "Read-only file system")
    monkeypatch.setattr(zoo, "atomic_write", refuse)
    with pytest.warns(RuntimeWarning, match="could not cache toy"):
        m = zoo.cached("toy", {"v": 1}, *_recipe([]))
    assert torch.equal(m.weight, torch.ones(2, 3))

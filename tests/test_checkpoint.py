"""kdutils.checkpoint: atomic saves, safe loads (weights_only), and every bad file refused and left untouched."""
import pytest
import torch

from kdutils import checkpoint

CONFIG = {"dataset": "digits32", "lr": 0.1}


def state(**extra):
    return {"config": CONFIG, "model": {"w": torch.ones(2)}, "opt": {}, "sched": {"last_epoch": 3},
            "loader_rng": torch.zeros(4, dtype=torch.uint8),
            "history": [{"epoch": 1, "test_acc": 0.5}], "epoch": 1, "seconds": 1.5, **extra}


class Payload:
    """What a crafted checkpoint would carry: an object whose unpickling runs code."""
    ran = []

    def __reduce__(self):
        return (Payload.ran.append, ("code ran on load",))


def test_round_trip(tmp_path):
    checkpoint.save_checkpoint(tmp_path / "m.pt", state())
    loaded = checkpoint.load_checkpoint(tmp_path / "m.pt", CONFIG)
    assert loaded["epoch"] == 1 and torch.equal(loaded["model"]["w"], torch.ones(2))
    assert checkpoint.load_checkpoint(tmp_path / "none.pt", CONFIG) is None


def test_a_checkpoint_carrying_a_pickled_object_is_refused_untouched_and_never_run(tmp_path):
    path = tmp_path / "teacher.pt"
    torch.save(state(history=[Payload()]), path)
    before = path.read_bytes()
    with pytest.raises(checkpoint.CheckpointError, match=r"teacher\.pt carries a Python object .*it refers to getattr.*left untouched"):
        checkpoint.load_checkpoint(path, CONFIG)
    assert Payload.ran == [], "nothing in the file was executed"
    assert path.read_bytes() == before, "the file is left as it was"


@pytest.mark.parametrize("content, words", [(b"\x00garbage", "corrupt"), (None, "not a kdutils.fullrun checkpoint")])
def test_corrupt_or_foreign_files_are_refused_untouched(tmp_path, content, words):
    path = tmp_path / "m.pt"
    if content is None:
        torch.save({"weights": torch.ones(1)}, path)
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    with pytest.raises(checkpoint.CheckpointError, match=words):
        checkpoint.load_checkpoint(path, CONFIG)
    assert path.read_bytes() == before


def test_another_configuration_is_refused_naming_the_difference(tmp_path):
    checkpoint.save_checkpoint(tmp_path / "m.pt", state())
    with pytest.raises(checkpoint.CheckpointError, match=r"another configuration .*'lr': \(0.1, 0.2\)"):
        checkpoint.load_checkpoint(tmp_path / "m.pt", {**CONFIG, "lr": 0.2})

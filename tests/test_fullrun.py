"""notebook 09's machinery: the CIFAR-10 reader on fixture files, the device loader, checkpoints, one and two processes."""
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from kdutils import checkpoint, data, fullrun, loader, models, stats, train


def make_cifar_fixture(root, n_per_batch=20, n_test=30, seed=0):
    """Tiny files in torchvision's on-disk layout (root/cifar-10-batches-py/...); nothing downloaded."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name, n in [*[(f"data_batch_{i}", n_per_batch) for i in range(1, 6)], ("test_batch", n_test)]:
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": pixels, b"labels": labels, b"filenames": []}, f)
        batches[name] = (pixels, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in data.CIFAR10_CLASSES]}, f)
    return batches


def test_read_cifar10_fixture(tmp_path):
    batches = make_cifar_fixture(tmp_path)
    x_tr, y_tr, x_te, y_te = data.read_cifar10(tmp_path)
    assert x_tr.shape == (100, 3, 32, 32) and x_tr.dtype == torch.uint8 and y_tr.dtype == torch.int64
    assert x_te.shape == (30, 3, 32, 32) and len(y_te) == 30
    # channel-first layout: the first 1024 bytes of a row are the red plane
    pixels, labels = batches["data_batch_2"]
    assert torch.equal(x_tr[20, 0].flatten(), torch.from_numpy(pixels[0, :1024]))
    assert y_tr[20].item() == labels[0]


def test_read_cifar10_missing_and_broken(tmp_path):
    with pytest.raises(data.DatasetUnavailable, match="no CIFAR-10"):
        data.read_cifar10(tmp_path)
    make_cifar_fixture(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(data.DatasetUnavailable, match="data_batch_3"):
        data.load_cifar10(tmp_path, download=False)


def test_device_loader_normalises_augments_and_covers(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(50) % 10
    plain = loader.DeviceLoader(images, labels, batch_size=16, device="cpu", augment=False, shuffle=True, seed=1)
    seen = torch.cat([idx for _, _, idx in plain])
    assert sorted(seen.tolist()) == list(range(50)) and len(plain) == 4
    x, y, idx = next(iter(plain))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, labels[idx])
    allx = torch.cat([x for x, _, _ in plain])
    assert abs(allx.mean().item()) < 0.05 and abs(allx.std().item() - 1) < 0.05
    # augmentation: every output is a (padded) shift of its image, possibly flipped
    aug = loader.DeviceLoader(images, labels, batch_size=50, device="cpu", augment=True, shuffle=False, seed=2)
    xa, _, _ = next(iter(aug))
    xn = aug.normalise(images)
    padded = torch.nn.functional.pad(xn, (4, 4, 4, 4))
    for b in range(50):
        found = any(torch.equal(xa[b], padded[b, :, dy:dy + 32, dx:dx + 32]) or
                    torch.equal(xa[b], padded[b, :, dy:dy + 32, dx:dx + 32].flip(2))
                    for dy in range(9) for dx in range(9))
        assert found, f"image {b} is not a crop/flip of the original"
    assert not torch.equal(xa, xn), "augmentation changed something"
    with pytest.raises(ValueError, match="uint8"):
        loader.DeviceLoader(images.float(), labels, batch_size=8, device="cpu", augment=False, shuffle=False)


def test_student_about_ten_times_smaller():
    cfg = fullrun.RunConfig()
    count = lambda w: sum(p.numel() for p in models.ConvNet(w).parameters())
    assert count(cfg.teacher_widths) >= 10 * count(cfg.student_widths)
    assert models.ConvNet((8, 8, 16))(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def _tiny(tmp_path, epochs=2):
    cfg = fullrun.RunConfig.for_scale("smoke", "digits32", teacher_epochs=epochs, n_train=128, batch_size=32)
    x_tr, y_tr, x_te, y_te = data.load_digits32()
    mk = lambda: loader.DeviceLoader(x_tr[:128], y_tr[:128], batch_size=32, device="cpu", augment=True, shuffle=True,
                                      seed=0, drop_last=True)
    test = loader.DeviceLoader(x_te[:64], y_te[:64], batch_size=64, device="cpu", augment=False, shuffle=False)
    return cfg, mk, test


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    cfg, mk, test = _tiny(tmp_path)
    torch.manual_seed(0)
    full_model, full_hist, _ = fullrun.train_model("teacher", models.ConvNet(cfg.teacher_widths), mk(), test, cfg,
                                                   checkpoint_dir=tmp_path / "a", progress=False)
    # the same run, killed while saving epoch 2: the epoch-1 checkpoint must survive intact
    real_save, calls = fullrun.torch.save, []

    def dying_save(obj, f):
        calls.append(f)
        if len(calls) == 2:
            with open(f, "wb") as fh:
                fh.write(b"half a checkpoint")
            raise KeyboardInterrupt
        return real_save(obj, f)

    monkeypatch.setattr(fullrun.torch, "save", dying_save)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fullrun.train_model("teacher", models.ConvNet(cfg.teacher_widths), mk(), test, cfg,
                            checkpoint_dir=tmp_path / "b", progress=False)
    monkeypatch.setattr(fullrun.torch, "save", real_save)
    state = torch.load(tmp_path / "b" / "teacher.pt", weights_only=False)
    assert state["epoch"] == 1
    torch.manual_seed(123)  # a different fresh init: the checkpoint must win
    resumed, hist, info = fullrun.train_model("teacher", models.ConvNet(cfg.teacher_widths), mk(), test, cfg,
                                              checkpoint_dir=tmp_path / "b", progress=False)
    assert info["resumed_from_epoch"] == 1 and len(hist) == 2
    for (k, a), b in zip(full_model.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), f"{k} differs after resume"
    # a finished model is reused, not retrained
    again, _, info = fullrun.train_model("teacher", models.ConvNet(cfg.teacher_widths), mk(), test, cfg,
                                         checkpoint_dir=tmp_path / "b", progress=False)
    assert info["resumed_from_epoch"] == 2


def test_corrupt_or_mismatched_checkpoint_is_an_error_and_left_alone(tmp_path):
    cfg, mk, test = _tiny(tmp_path, epochs=1)
    ckpt = tmp_path / "teacher.pt"
    ckpt.write_bytes(b"\x00garbage")
    with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
        fullrun.train_model("teacher", models.ConvNet(cfg.teacher_widths), mk(), test, cfg, checkpoint_dir=tmp_path, progress=False)
    assert ckpt.read_bytes() == b"\x00garbage"
    ckpt.unlink()
    fullrun.train_model("teacher", models.ConvNet(cfg.teacher_widths), mk(), test, cfg, checkpoint_dir=tmp_path, progress=False)
    before = ckpt.read_bytes()
    other = fullrun.RunConfig.for_scale("smoke", "digits32", teacher_epochs=1, n_train=128, batch_size=32, lr=0.05)
    with pytest.raises(checkpoint.CheckpointError, match="lr"):
        fullrun.train_model("teacher", models.ConvNet(other.teacher_widths), mk(), test, other, checkpoint_dir=tmp_path, progress=False)
    assert ckpt.read_bytes() == before


@pytest.mark.parametrize("capability, bf16_reported, expected", [
    ((7, 5), True, "fp16"),    # Colab's free T4: torch reports bf16 (emulated), cuDNN has no fast bf16 convs
    ((7, 0), False, "fp16"),   # V100
    ((8, 0), True, "bf16"),    # A100
    ((9, 0), True, "bf16"),    # H100
    ((8, 6), False, "fp16"),   # a build that says no bf16 gets fp16 even on Ampere
])
def test_precision_bf16_only_from_compute_capability_8(monkeypatch, capability, bf16_reported, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_reported)
    assert train.precision_name(torch.device("cuda")) == expected
    assert train.precision_name(torch.device("cpu")) == "fp32"
    if expected == "fp16":
        with warnings.catch_warnings():   # without a GPU, torch warns that CUDA autocast/scaler are disabled
            warnings.simplefilter("ignore")
            _, scaler, name = train.precision(torch.device("cuda"))
        assert name == "fp16" and scaler is not None, "fp16 needs a gradient scaler"


def test_run_trains_the_teacher_once_and_each_student_per_seed(tmp_path):
    cfg = fullrun.RunConfig.for_scale("smoke", "digits32", n_train=128, teacher_epochs=1, student_epochs=1)
    out = fullrun.run(cfg, checkpoint_dir=tmp_path, device="cpu", progress=False, student_seeds=[0, 5])
    seeds = out["seeds"]
    assert sorted(zip(seeds.model, seeds.seed)) == [("distilled", 0), ("distilled", 5), ("scratch", 0),
                                                    ("scratch", 5), ("teacher", 0)]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["distilled-seed5.pt", "distilled.pt", "scratch-seed5.pt",
                                                           "scratch.pt", "teacher.pt"]
    a = seeds.set_index(["model", "seed"]).accuracy
    assert out["table"].loc["scratch", "accuracy"] == a["scratch", 0], "the table is the first seed's"
    # different seeds, different students (initial weights and batch order)
    s0 = torch.load(tmp_path / "scratch.pt", weights_only=False)["model"]
    s5 = torch.load(tmp_path / "scratch-seed5.pt", weights_only=False)["model"]
    assert any(not torch.equal(s0[k], s5[k]) for k in s0)
    # a rerun reuses every finished model
    again = fullrun.run(cfg, checkpoint_dir=tmp_path, device="cpu", progress=False, student_seeds=[0, 5])
    assert all(again["table"].loc[r, "resumed from epoch"] == len(again["histories"][r]) for r in again["histories"])
    assert again["seeds"].accuracy.tolist() == seeds.accuracy.tolist()
    with pytest.raises(ValueError, match="distinct"):
        fullrun.run(cfg, checkpoint_dir=tmp_path, device="cpu", progress=False, student_seeds=[1, 1])


def test_run_with_few_labels_gives_every_model_the_same_steps(tmp_path):
    cfg = fullrun.RunConfig.for_scale("smoke", "digits32")          # 256 images, 64 of them labeled
    assert (cfg.n_train, cfg.n_labeled, cfg.batch_size) == (256, 64, 64)
    out = fullrun.run(cfg, checkpoint_dir=tmp_path, device="cpu", progress=False)
    assert {role: len(h) for role, h in out["histories"].items()} == {
        "teacher": cfg.teacher_epochs, "scratch": cfg.student_epochs, "distilled": cfg.student_epochs}
    # the labeled part is 1 batch, all the images 4: the scratch student goes through its part 4 times
    # per epoch, so every model's schedule has the same number of steps
    total = {r: torch.load(tmp_path / f"{r}.pt", weights_only=False)["sched"]["total_steps"] for r in out["histories"]}
    assert total == {"teacher": 4 * cfg.teacher_epochs, "scratch": 4 * cfg.student_epochs, "distilled": 4 * cfg.student_epochs}
    with pytest.raises(ValueError, match="n_labeled"):
        fullrun.run(fullrun.RunConfig.for_scale("smoke", "digits32", n_labeled=0), checkpoint_dir=tmp_path / "x",
                    device="cpu", progress=False)
    assert fullrun.RunConfig.for_scale("gpu", "cifar10").n_labeled is None, "the GPU run keeps every label"


# ----------------------------------------------------------------------------- several processes (torchrun, gloo)

def _worker(tmp_path, name, nproc, **env):
    ckpt, out = tmp_path / f"ckpt-{name}", tmp_path / f"{name}.json"
    worker = str(Path(__file__).with_name("fullrun_worker.py"))
    launch = [sys.executable, worker] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", worker]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "KD_DEVICE": "cpu", **env}
    done = subprocess.run([*launch, str(ckpt), str(out)], env=environment, capture_output=True, text=True, timeout=600)
    return done, ckpt, out


@pytest.mark.slow
def test_two_processes_train_resume_after_a_kill_and_match_one_process(tmp_path):
    """torchrun with 2 gloo processes: only rank 0 writes checkpoints; a run killed after the teacher's
    first epoch resumes on 2 processes; the students' accuracy is within the seed noise of 1 process."""
    one, _, one_json = _worker(tmp_path, "one", 1)
    assert one.returncode == 0, one.stderr[-3000:]
    killed, ckpt, two_json = _worker(tmp_path, "two", 2, KD_TEST_DIE_AFTER="teacher:1")
    assert killed.returncode != 0, "the run was meant to die after the teacher's first epoch"
    assert sorted(p.name for p in ckpt.glob("*.pt")) == ["teacher.pt"] and not two_json.exists()
    assert torch.load(ckpt / "teacher.pt", weights_only=True)["epoch"] == 1
    resumed, _, _ = _worker(tmp_path, "two", 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    saves = sorted(p.name for p in tmp_path.glob("two.json.saves-rank*"))
    assert saves == ["two.json.saves-rank0"], f"only rank 0 writes checkpoints, got {saves}"
    written = (tmp_path / "two.json.saves-rank0").read_text().split("\n")
    assert written[0] == "teacher.pt 1" and "teacher.pt 2" in written, written[:3]
    one_r, two_r = json.loads(one_json.read_text()), json.loads(two_json.read_text())
    assert two_r["processes"] == 2 and one_r["processes"] == 1
    table = {r["model"]: r for r in two_r["table"]}
    assert table["teacher"]["resumed from epoch"] == 1, "the teacher resumed from its epoch-1 checkpoint"
    assert table["teacher"]["accuracy"] > 0.8, table
    for role in ("scratch", "distilled"):
        a = [r["accuracy"] for r in one_r["seeds"] if r["model"] == role]
        b = [r["accuracy"] for r in two_r["seeds"] if r["model"] == role]
        verdict = stats.compare_seeds(b, a)
        assert not verdict["exceeds_noise"], f"{role}: 2 processes {b} vs 1 process {a}: {verdict}"
    state = torch.load(ckpt / "distilled.pt", weights_only=True)
    assert state["config"]["world_size"] == 2 and len(state["loader_rng"]) == 2, "each process's batch order is kept"

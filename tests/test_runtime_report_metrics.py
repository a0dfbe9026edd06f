import json
import numpy as np

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from kdutils import metrics, report, runtime


def test_profile_and_seed_from_environment(monkeypatch):
    monkeypatch.delenv("KD_PROFILE", raising=False)
    assert runtime.profile() == "full"
    monkeypatch.setenv("KD_PROFILE", "SMOKE")
    assert runtime.profile() == "smoke" and runtime.is_smoke()
    assert runtime.scale(smoke=1, full=2, gpu=3) == 1
    monkeypatch.setenv("KD_PROFILE", "huge")
    with pytest.raises(ValueError, match="KD_PROFILE"):
        runtime.profile()
    monkeypatch.setenv("KD_SEED", "abc")
    with pytest.raises(ValueError, match="KD_SEED"):
        runtime.seed()
    monkeypatch.setenv("KD_SEED", "5")
    assert runtime.seed() == 5


def test_threads_from_environment(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("KD_THREADS", raising=False)
        assert runtime.threads() is None and runtime.apply_threads() == before, "unset: PyTorch's own choice"
        monkeypatch.setenv("KD_THREADS", " 1 ")
        assert runtime.threads() == 1 and runtime.apply_threads() == 1 == torch.get_num_threads()
        for bad in ("0", "-2", "two", "1.5"):
            monkeypatch.setenv("KD_THREADS", bad)
            with pytest.raises(runtime.ConfigError, match=f"KD_THREADS must be a whole number >= 1.*{bad!r}"):
                runtime.check_environment()
    finally:
        torch.set_num_threads(before)


def test_scale_full_on_cpu_and_gpu(monkeypatch):
    monkeypatch.setenv("KD_PROFILE", "full")
    monkeypatch.setenv("KD_DEVICE", "cpu")
    assert runtime.scale(smoke=1, full=2, gpu=3) == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)     # as on a GPU machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("KD_DEVICE", "cuda")
    assert runtime.scale(smoke=1, full=2, gpu=3) == 3
    assert runtime.scale(smoke=1, full=2) == 2


def test_seed_everything_seeds_torch_numpy_and_python():
    import random


    def draw():
        return torch.randn(5), np.random.rand(5), [random.random() for _ in range(5)]

    runtime.seed_everything(3)
    a = draw()
    runtime.seed_everything(3)
    b = draw()
    runtime.seed_everything(4)
    c = draw()
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2], "the same seed repeats all three"
    assert not torch.equal(a[0], c[0]) and not np.array_equal(a[1], c[1]) and a[2] != c[2], "another seed changes all three"


def test_save_results_roundtrip_and_atomic(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_PROFILE", "smoke")
    monkeypatch.setenv("KD_SEED", "2")
    df = pd.DataFrame({"T": [1, 2], "acc": [0.5, 0.75]})
    path = report.save_results("99_test", {"acc": torch.tensor(0.5), "table": df, "nan": float("nan")},
                               directory=tmp_path)
    data = json.loads(path.read_text())
    assert data["profile"] == "smoke" and data["seed"] == 2 and data["device"]
    assert data["metrics"]["acc"] == 0.5 and data["metrics"]["nan"] is None
    assert data["metrics"]["table"][1]["acc"] == 0.75
    # a failing write leaves the previous file intact and no temporary files behind
    from pathlib import Path

    from kdutils import files

    real_write = Path.write_text

    def interrupted_write(self, text, *a, **k):
        real_write(self, text[: len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(files.Path, "write_text", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        report.save_results("99_test", {"acc": 0.1}, directory=tmp_path)
    monkeypatch.undo()
    assert json.loads(path.read_text())["metrics"]["acc"] == 0.5
    assert [p.name for p in tmp_path.iterdir()] == ["99_test.json"]
    # readable as any new file here (0666 minus the umask), not only by its owner as mkstemp makes it
    assert path.stat().st_mode & 0o777 == files.default_mode()
    with pytest.raises(ValueError, match="file stem"):
        report.save_results("../evil", {}, directory=tmp_path)


def test_results_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_RESULTS_DIR", str(tmp_path / "r"))
    assert runtime.results_dir() == tmp_path / "r" and (tmp_path / "r").is_dir()


def test_metrics_values():
    t = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0], [5.0, 0.0, 0.0]])
    s = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 4.0], [0.0, 0.0, 4.0], [0.0, 4.0, 0.0]])
    y = torch.tensor([0, 1, 2, 1])
    assert metrics.accuracy(s, y) == pytest.approx(3 / 4)
    assert metrics.accuracy(t, y) == pytest.approx(3 / 4)
    assert metrics.top1_agreement(s, t) == pytest.approx(2 / 4)  # both right on 0 and 2 only
    expected = F.kl_div(F.log_softmax(s, -1), F.softmax(t, -1), reduction="batchmean").item()
    assert metrics.predictive_kl(s, t) == pytest.approx(expected)
    assert metrics.predictive_kl(t, t) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="labels"):
        metrics.accuracy(s, y[:3])


def test_ece_perfect_and_overconfident():
    y = torch.arange(100) % 4
    confident_right = F.one_hot(y, 4).float() * 50
    assert metrics.expected_calibration_error(confident_right, y) == pytest.approx(0.0, abs=1e-6)
    confident_wrong = F.one_hot((y + 1) % 4, 4).float() * 50
    assert metrics.expected_calibration_error(confident_wrong, y) == pytest.approx(1.0, abs=1e-6)
    # 60% accuracy at 90% confidence -> ECE 0.3
    logit = torch.log(torch.tensor(0.9 / (0.1 / 3)))
    z = F.one_hot(torch.zeros(10, dtype=torch.long), 4).float() * logit
    labels = torch.tensor([0] * 6 + [1] * 4)
    assert metrics.expected_calibration_error(z, labels) == pytest.approx(0.3, abs=1e-5)




def test_primary_claims_assert_at_full_record_at_smoke_and_land_in_the_results(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_PROFILE", "full")
    monkeypatch.delenv("KD_CLAIMS", raising=False)
    claims = report.Claims("98_claims", directory=tmp_path)
    assert claims.check("big", 0.3 > 0.1, "a beats b", effect=0.3, noise=0.1, seeds=3) is True
    with pytest.raises(AssertionError, match="primary claim 'small' fails: c beats d.*effect -0.02"):
        claims.check("small", False, "c beats d", effect=-0.02, noise=0.05)
    with pytest.raises(ValueError, match="already checked"):
        claims.check("big", True, "again")
    on_disk = json.loads((tmp_path / "98_claims.claims.json").read_text())
    assert on_disk["profile"] == "full" and on_disk["claims"]["small"]["holds"] is False
    assert on_disk["claims"]["big"]["evidence"] == {"seeds": 3} and on_disk["claims"]["big"]["effect"] == 0.3
    saved = json.loads(report.save_results("98_claims", {"x": 1}, directory=tmp_path).read_text())
    assert set(saved["claims"]) == {"big", "small"}
    # a sweep records every claim without stopping at the first that fails; the smoke profile never asserts
    monkeypatch.setenv("KD_CLAIMS", "record")
    assert report.Claims("98_sweep", directory=tmp_path).check("x", False, "fails quietly") is False
    monkeypatch.setenv("KD_CLAIMS", "assert")
    monkeypatch.setenv("KD_PROFILE", "smoke")
    assert report.Claims("98_smoke", directory=tmp_path).check("x", False, "too small to hold") is False
    monkeypatch.setenv("KD_CLAIMS", "sometimes")
    with pytest.raises(ValueError, match="KD_CLAIMS"):
        report.claims_enforced()


def test_secondary_findings_are_recorded_never_asserted(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KD_PROFILE", "full")
    monkeypatch.delenv("KD_CLAIMS", raising=False)
    claims = report.Claims("98_secondary", directory=tmp_path)
    assert claims.secondary("gap", False, "T = 1 beats T = 20", alpha=0.5) is False
    assert "in this run, no: T = 1 beats T = 20" in capsys.readouterr().out
    rec = json.loads((tmp_path / "98_secondary.claims.json").read_text())["claims"]["gap"]
    assert rec["primary"] is False and rec["holds"] is False and rec["evidence"] == {"alpha": 0.5}

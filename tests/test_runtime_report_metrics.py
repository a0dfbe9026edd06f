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

    import numpy as np

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


def test_compare_seeds_against_direct_computation():
    a, b = [0.70, 0.72, 0.71], [0.60, 0.58, 0.59]
    r = metrics.compare_seeds(a, b)
    assert r["difference"] == pytest.approx(0.71 - 0.59)
    # Welch-style standard error, t quantile for 4 degrees of freedom (scipy.stats.t.ppf(0.975, 4) = 2.776)
    se = np.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 3)
    assert r["noise"] == pytest.approx(2.776 * se)
    assert r["exceeds_noise"] is True
    # a gap inside the interval is noise, whatever its sign
    r = metrics.compare_seeds([0.70, 0.75, 0.65], [0.69, 0.70, 0.71])
    assert r["exceeds_noise"] is False and r["difference"] == pytest.approx(0.0)
    assert metrics.compare_seeds(b, a)["difference"] == pytest.approx(-0.12)
    # two seeds per arm: t for 2 degrees of freedom, so the same spread needs a larger gap
    assert metrics.compare_seeds([0.70, 0.72], [0.60, 0.58])["noise"] == pytest.approx(4.303 * np.sqrt(0.0002 / 2 + 0.0002 / 2))
    scipy_t = pytest.importorskip("scipy.stats").t
    assert all(abs(metrics._t975(df) - scipy_t.ppf(0.975, df)) < 1e-3 for df in (1, 2, 4, 10, 30))
    assert metrics._t975(11) == 2.228 >= scipy_t.ppf(0.975, 11) and metrics._t975(100) >= scipy_t.ppf(0.975, 100)
    # paired seeds: a consistent per-seed gap is real even when the seeds themselves vary a lot
    a, b = [0.29, 0.24, 0.24], [0.24, 0.17, 0.17]
    assert not metrics.compare_seeds(a, b)["exceeds_noise"]
    p = metrics.compare_seeds(a, b, paired=True)
    d = np.subtract(a, b)
    assert p["exceeds_noise"] and p["noise"] == pytest.approx(4.303 * d.std(ddof=1) / np.sqrt(3))
    with pytest.raises(ValueError, match="one value per seed"):
        metrics.compare_seeds([0.7, 0.6, 0.5], [0.6, 0.5], paired=True)
    with pytest.raises(ValueError, match="at least 2"):
        metrics.compare_seeds([0.7], [0.6, 0.5])
    with pytest.raises(ValueError, match="finite"):
        metrics.compare_seeds([0.7, float("nan")], [0.6, 0.5])

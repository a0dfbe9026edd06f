"""The mistakes students and instructors make: each gets a clear error before any work is lost.

Environment knobs (``kdutils.runtime``), the command lines (``python -m kdutils``,
``python -m kdutils.fullrun``), checkpoints, caches and results files, and the losses' inputs.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
import torch

from kdutils import data, fullrun, losses, report, runtime

ROOT = Path(__file__).resolve().parents[1]
UNWRITABLE = "/proc/kdutils-cannot-write-here"     # unwritable even for root


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)


# ----------------------------------------------------------------------------- environment

@pytest.mark.parametrize("variable, value, words", [
    ("KD_DEVICE", "cuda", "KD_DEVICE='cuda', but this machine has no CUDA GPU"),
    ("KD_DEVICE", "cuda:3", "has no CUDA GPU"),
    ("KD_DEVICE", "mps", "MPS is not available"),
    ("KD_DEVICE", "nonsense", "KD_DEVICE must be cpu, cuda, cuda:N or mps"),
    ("KD_SEED", "99999999999999999999", "KD_SEED must be a whole number in [0, 2**63)"),
    ("KD_SEED", "-1", "KD_SEED must be a whole number"),
    ("KD_SEED", "4.5", "KD_SEED must be a whole number"),
    ("KD_PROFILE", "fast", "KD_PROFILE must be one of smoke, full"),
])
def test_bad_environment_values_are_named(monkeypatch, no_gpu, variable, value, words):
    monkeypatch.setenv(variable, value)
    with pytest.raises(runtime.ConfigError) as err:
        runtime.describe()
        runtime.seed_everything()
    assert words in str(err.value) and repr(value) in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("variable, value, attr, expected", [
    ("KD_DEVICE", " CPU ", "device", torch.device("cpu")),
    ("KD_PROFILE", " SMOKE ", "profile", "smoke"),
    ("KD_PROFILE", "", "profile", "full"),          # empty means unset
    ("KD_SEED", "", "seed", 0),
    ("KD_SEED", " 7 ", "seed", 7),
])
def test_spaces_case_and_empty_values(monkeypatch, variable, value, attr, expected):
    monkeypatch.setenv(variable, value)
    assert getattr(runtime, attr)() == expected


def test_paths_expand_home_and_empty_means_default(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KD_CACHE_DIR", "~/kd-cache")
    assert runtime.cache_dir() == tmp_path / "home" / "kd-cache" and not (tmp_path / "~").exists()
    monkeypatch.setenv("KD_CACHE_DIR", "")
    assert runtime.cache_dir() == tmp_path / "home" / ".cache" / "kdutils", "empty is unset, not the working directory"
    monkeypatch.setenv("KD_RESULTS_DIR", "  ")
    assert runtime.results_dir() == runtime.repo_root() / "build" / "results"


@pytest.mark.parametrize("variable", ["KD_CACHE_DIR", "KD_RESULTS_DIR"])
def test_a_file_where_a_folder_belongs(monkeypatch, tmp_path, variable):
    f = tmp_path / "a-file"
    f.write_text("x")
    monkeypatch.setenv(variable, str(f))
    with pytest.raises(runtime.ConfigError, match=f"{variable}=.* is a file, not a folder"):
        runtime.cache_dir() if variable == "KD_CACHE_DIR" else runtime.results_dir()
    assert f.read_text() == "x"


def test_results_dir_that_cannot_be_created(monkeypatch):
    monkeypatch.setenv("KD_RESULTS_DIR", UNWRITABLE)
    with pytest.raises(runtime.ConfigError, match="KD_RESULTS_DIR=.*cannot create the folder"):
        runtime.results_dir()


@pytest.mark.parametrize("how", ["KD_CACHE_DIR", "HOME"])
def test_unwritable_cache_degrades_to_not_cached(monkeypatch, how):
    if how == "HOME":
        monkeypatch.delenv("KD_CACHE_DIR", raising=False)
        monkeypatch.setenv("HOME", UNWRITABLE)
    else:
        monkeypatch.setenv("KD_CACHE_DIR", UNWRITABLE)
    with pytest.warns(RuntimeWarning, match="cache"):
        ds = data.load_mnist1d(num_samples=100, seed=3)
    assert ds.x_train.shape == (80, 40), "the data is generated and returned even though it cannot be cached"


def test_files_people_keep_are_readable_as_usual(monkeypatch, tmp_path):
    """results JSON, the dataset cache and checkpoints: 0666 minus the umask, not mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "cache"))
        results = report.save_results("99_perm", {"x": 1}, directory=tmp_path / "results")
        data.load_mnist1d(num_samples=100, seed=5)
        cached = next((tmp_path / "cache").glob("mnist1d-*.npz"))
        ckpt = tmp_path / "ckpt" / "teacher.pt"
        fullrun.save_checkpoint(ckpt, {"x": 1})
        for path in (results, cached, ckpt):
            assert path.stat().st_mode & 0o777 == 0o644, path
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------- command lines

def _cli(*args, env=None):
    return run_cli(*args, env=env)


@pytest.mark.slow
def test_the_entry_point_prints_an_error_line():
    for args, env, words in [(["kdutils", "info"], {"KD_SEED": "-1"}, "error: KD_SEED"),
                             (["kdutils.fullrun", "--dataset", "digits32", "--epochs", "0"], {}, "--epochs: must be >= 1")]:
        out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
        assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize("args, env, words", [
    (["kdutils", "info"], {"KD_DEVICE": "cuda:99"}, "error: KD_DEVICE='cuda:99'"),
    (["kdutils", "info"], {"KD_SEED": "99999999999999999999"}, "error: KD_SEED"),
    (["kdutils", "info"], {"KD_PROFILE": "fast"}, "error: KD_PROFILE"),
    (["kdutils", "info"], {"KD_THREADS": "0"}, "error: KD_THREADS must be a whole number >= 1"),
    (["kdutils", "run", "--jobs", "0"], {}, "must be > 0"),
    (["kdutils", "run", "--threads", "x"], {}, "must be a number > 0"),
    (["kdutils", "run", "missing.ipynb"], {}, "error: missing.ipynb is not a notebook file"),
    (["kdutils", "run", "--root", "/nonexistent-kd"], {}, "error: --root '/nonexistent-kd' is not a folder"),
    (["kdutils", "run", "--out", UNWRITABLE], {}, "error: --out"),
    (["kdutils", "run", "--timeout", "0"], {}, "must be > 0"),
    (["kdutils", "colab", "--repo", "a/b", "--root", "/nonexistent-kd"], {}, "error: --root '/nonexistent-kd' is not a folder"),
    (["kdutils", "grade", "--assignment", "a1_kd_losses", "--submissions", ".", "--jobs", "0"], {}, "must be > 0"),
    (["kdutils", "site", "--run", "/nonexistent-kd"], {}, "error: --run '/nonexistent-kd' holds no notebooks/ folder"),
    (["kdutils", "site-check", "/nonexistent-kd"], {}, "error: '/nonexistent-kd' holds no index.html: build the site first"),
    (["kdutils.fullrun", "--dataset", "digits32", "--epochs", "0"], {}, "--epochs: must be >= 1"),
    (["kdutils.fullrun", "--dataset", "digits32", "--epochs", "-1"], {}, "--epochs: must be >= 1"),
    (["kdutils.fullrun", "--dataset", "digits32", "--checkpoint-dir", UNWRITABLE], {}, "error: --checkpoint-dir"),
    (["kdutils.fullrun", "--dataset", "digits32"], {"KD_PROFILE": "fast"}, "error: KD_PROFILE"),
    (["kdutils.fullrun", "--dataset", "digits32"], {"KD_DEVICE": "cuda:99"}, "error: KD_DEVICE"),
])
def test_command_line_mistakes_get_an_error_line(args, env, words):
    out = _cli(*args, env=env)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert words in out.stderr, out.stderr


def test_fullrun_checkpoint_dir_that_is_a_file_fails_before_training(tmp_path):
    blocker = tmp_path / "ckpt"
    blocker.write_text("my notes")
    out = _cli("kdutils.fullrun", "--dataset", "digits32", "--checkpoint-dir", str(blocker), env={"KD_PROFILE": "smoke"})
    assert out.returncode == 2 and "is a file, not a folder" in out.stderr
    assert "teacher" not in out.stdout + out.stderr.replace("error:", ""), "nothing was trained"
    assert blocker.read_text() == "my notes"


# ----------------------------------------------------------------------------- checkpoints

def test_checkpoint_missing_keys_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "teacher.pt"
    torch.save({"config": {}, "model": {}, "epoch": 1}, path)     # no optimizer, scheduler, ... state
    before = path.read_bytes()
    with pytest.raises(fullrun.CheckpointError, match=r"lacks \['history', 'loader_rng', 'opt', 'sched', 'seconds'\]"):
        fullrun.load_checkpoint(path, {})
    assert path.read_bytes() == before


def test_corrupt_checkpoint_message_is_whole_words(tmp_path):
    path = tmp_path / "teacher.pt"
    path.write_bytes(b"PK\x03\x04" + b"garbage " * 200)
    with pytest.raises(fullrun.CheckpointError) as err:
        fullrun.load_checkpoint(path, {})
    message = str(err.value)
    reason = message[message.index("(") + 1: message.index("); it was left untouched")]
    assert reason.endswith(" ...") or len(reason) < 200, reason
    assert not reason.endswith(("-", "(")) and "it was left untouched: move it away" in message


# ----------------------------------------------------------------------------- losses

def _logits(n=8, c=10):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, c, generator=g), torch.randn(n, c, generator=g)


@pytest.mark.parametrize("labels, words", [
    (torch.tensor([0, 1, 2, 3, 4, 5, 6, 10]), "class indices in [0, 10) or -100"),   # 10 of 10 classes
    (torch.tensor([0, 1, 2, 3, 4, 5, 6, -1]), "class indices in [0, 10) or -100"),
    (torch.ones(8, dtype=torch.bool), "integer class indices, got dtype torch.bool"),
    (torch.zeros(8), "integer class indices, got dtype torch.float32"),
    (torch.zeros(7, dtype=torch.long), "leading shape (8,)"),
    ([0] * 8, "must be a torch.Tensor"),
])
def test_bad_labels_raise_value_error(labels, words):
    s, t = _logits()
    with pytest.raises(ValueError) as err:
        losses.distillation_loss(s, t, labels, alpha=0.5)
    assert words in str(err.value)


def test_integer_labels_of_any_width_and_unlabeled_rows_work():
    s, t = _logits()
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, -100])
    ref = losses.distillation_loss(s, t, y, alpha=0.5)
    for dtype in (torch.int32, torch.int16):
        assert torch.allclose(losses.distillation_loss(s, t, y.to(dtype), alpha=0.5), ref)


@pytest.mark.parametrize("temperature, alpha", [(np.float32(4.0), np.float64(0.5)), (torch.tensor(4.0), torch.tensor(0.5)),
                                                (4, 0.5), (np.int64(4), 1 / 2)])
def test_numpy_and_tensor_scalars_are_accepted(temperature, alpha):
    s, t = _logits()
    y = torch.arange(8) % 10
    ref = losses.distillation_loss(s, t, y, temperature=4.0, alpha=0.5)
    assert torch.allclose(losses.distillation_loss(s, t, y, temperature=temperature, alpha=alpha), ref)
    assert torch.allclose(losses.kl_divergence(s, t, temperature=temperature), losses.kl_divergence(s, t, temperature=4.0))


@pytest.mark.parametrize("kwargs, words", [
    ({"temperature": 0}, "temperature must be > 0"), ({"temperature": -1.0}, "temperature must be > 0"),
    ({"temperature": float("nan")}, "temperature must be finite"), ({"temperature": True}, "temperature must be a real number"),
    ({"temperature": torch.ones(2)}, "single real number"), ({"temperature": "4"}, "temperature must be a real number"),
    ({"alpha": 1.5}, "alpha must be in [0, 1]"), ({"alpha": np.float32(-0.1)}, "alpha must be in [0, 1]"),
])
def test_bad_scalars_are_named(kwargs, words):
    s, t = _logits()
    with pytest.raises(ValueError) as err:
        losses.distillation_loss(s, t, torch.arange(8) % 10, **kwargs)
    assert words in str(err.value)


def test_a_command_reports_the_mistakes_it_means_and_keeps_the_traceback_of_a_bug(monkeypatch, capsys):
    from kdutils.course import cli

    def bad_setting():
        raise runtime.ConfigError("KD_SOMETHING is wrong")

    def bug():
        raise ValueError("a bug inside the command")

    monkeypatch.setattr(runtime, "check_environment", bad_setting)
    assert cli.main(["info"]) == 2 and "error: KD_SOMETHING is wrong" in capsys.readouterr().err
    monkeypatch.setattr(runtime, "check_environment", bug)
    with pytest.raises(ValueError, match="a bug inside the command"):     # not turned into a one-line "error"
        cli.main(["info"])

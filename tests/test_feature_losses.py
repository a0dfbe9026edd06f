"""kdutils.feature_losses against direct formulas (NumPy, torch.nn references), properties, and bad input;
kdutils.metrics.linear_cka against its definition."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdutils import feature_losses as FL
from kdutils import metrics


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --------------------------------------------------------------------------- values against direct formulas

@pytest.mark.parametrize("shape", [(4, 7), (3, 5, 10), (2, 3, 4, 4)])
def test_hint_loss_is_the_mean_squared_error(shape):
    s, t = rand(*shape, seed=1), rand(*shape, seed=2)
    direct = ((s.numpy() - t.numpy()) ** 2)
    assert FL.hint_loss(s, t).item() == pytest.approx(direct.mean(), rel=1e-12)
    assert FL.hint_loss(s, t, reduction="sum").item() == pytest.approx(direct.sum(), rel=1e-12)
    np.testing.assert_allclose(FL.hint_loss(s, t, reduction="none").numpy(), direct, rtol=1e-12)
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(FL.hint_loss(s, t, reduction=reduction), F.mse_loss(s, t, reduction=reduction))


def test_cosine_loss_is_one_minus_the_cosine_per_example_and_equals_torchs_embedding_loss():
    s, t = rand(6, 3, 4, seed=1), rand(6, 3, 4, seed=2)
    a, b = s.reshape(6, -1).numpy(), t.reshape(6, -1).numpy()
    direct = 1 - (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(FL.cosine_loss(s, t, reduction="none").numpy(), direct, rtol=1e-12)
    assert FL.cosine_loss(s, t).item() == pytest.approx(direct.mean(), rel=1e-12)
    assert FL.cosine_loss(s, t, reduction="sum").item() == pytest.approx(direct.sum(), rel=1e-12)
    h_s, h_t = s.reshape(6, -1), t.reshape(6, -1)
    torch.testing.assert_close(FL.cosine_loss(h_s, h_t), nn.CosineEmbeddingLoss()(h_s, h_t, torch.ones(6)))
    # direction only: scaling either side changes nothing; the same direction costs 0, the opposite 2
    torch.testing.assert_close(FL.cosine_loss(3 * s, 0.5 * t), FL.cosine_loss(s, t))
    assert FL.cosine_loss(s, 2 * s).item() == pytest.approx(0, abs=1e-12)
    assert FL.cosine_loss(s, -s).item() == pytest.approx(2, abs=1e-12)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_attention_map_and_transfer_against_the_formula(p):
    s, t = rand(5, 4, 6, 6, seed=1), rand(5, 9, 6, 6, seed=2)   # channels differ: allowed
    def q(f):
        m = (np.abs(f.numpy()) ** p).mean(1).reshape(len(f), -1)
        return m / np.linalg.norm(m, axis=1, keepdims=True)
    np.testing.assert_allclose(FL.attention_map(s, p=p).numpy(), q(s), rtol=1e-12)
    direct = ((q(s) - q(t)) ** 2).mean(1)
    np.testing.assert_allclose(FL.attention_transfer_loss(s, t, p=p, reduction="none").numpy(), direct, rtol=1e-12)
    assert FL.attention_transfer_loss(s, t, p=p).item() == pytest.approx(direct.mean(), rel=1e-12)
    assert FL.attention_transfer_loss(s, t, p=p, reduction="sum").item() == pytest.approx(direct.sum(), rel=1e-12)


def test_attention_transfer_matches_the_authors_code_for_p2():
    """szagoruyko/attention-transfer: at(x) = F.normalize(x.pow(2).mean(1).view(B, -1)); (at(x) - at(y)).pow(2).mean()."""
    s, t = rand(4, 3, 10, seed=3), rand(4, 8, 10, seed=4)
    at = lambda x: F.normalize(x.pow(2).mean(1).view(x.size(0), -1))
    torch.testing.assert_close(FL.attention_transfer_loss(s, t), (at(s) - at(t)).pow(2).mean())


# --------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("loss", [FL.hint_loss, FL.cosine_loss, FL.attention_transfer_loss])
def test_gradient_reaches_the_student_never_the_teacher(loss):
    s = rand(4, 3, 5, seed=1).requires_grad_()
    t = rand(4, 3, 5, seed=2).requires_grad_()
    loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None, "the teacher's features are a target: detached"


def test_hint_gradient_is_the_analytic_one():
    s, t = rand(3, 2, 4, seed=1).requires_grad_(), rand(3, 2, 4, seed=2)
    FL.hint_loss(s, t).backward()
    torch.testing.assert_close(s.grad, 2 * (s - t).detach() / s.numel())


def test_gradcheck_in_float64():
    t = rand(3, 2, 5, seed=2)
    for loss in (FL.hint_loss, FL.cosine_loss, FL.attention_transfer_loss):
        assert torch.autograd.gradcheck(lambda s: loss(s, t), (rand(3, 2, 5, seed=1).requires_grad_(),))


def test_half_precision_is_computed_in_float32():
    s, t = rand(4, 3, 5, seed=1), rand(4, 3, 5, seed=2)
    for loss in (FL.hint_loss, FL.cosine_loss, FL.attention_transfer_loss):
        out = loss(s.bfloat16(), t.bfloat16())
        assert out.dtype == torch.float32
        assert out.item() == pytest.approx(loss(s.bfloat16().double(), t.bfloat16().double()).item(), rel=1e-5)


# --------------------------------------------------------------------------- the regressor

def test_hint_regressor_maps_student_shapes_to_teacher_shapes():
    for s_shape, t_shape, kind in [((8, 10), (25, 10), nn.Conv1d), ((4, 6, 6), (16, 6, 6), nn.Conv2d), ((40,), (125,), nn.Linear)]:
        r = FL.hint_regressor(s_shape, t_shape).double()
        assert isinstance(r, kind)
        assert tuple(r(rand(2, *s_shape)).shape) == (2, *t_shape)
    with pytest.raises(ValueError, match=r"spatial shapes must match.*\(10,\).*\(5,\)"):
        FL.hint_regressor((8, 10), (25, 5))
    with pytest.raises(ValueError, match="must both be"):
        FL.hint_regressor((8, 10), (125,))


# --------------------------------------------------------------------------- bad input

def test_shape_mismatch_names_both_shapes_and_the_fix_never_broadcasts():
    s, t = rand(4, 8, 10), rand(4, 25, 10)
    for loss in (FL.hint_loss, FL.cosine_loss):
        with pytest.raises(ValueError, match=r"\(4, 8, 10\) \(student\) vs \(4, 25, 10\) \(teacher\).*hint_regressor"):
            loss(s, t)
    with pytest.raises(ValueError, match=r"\(4, 1, 10\) \(student\) vs \(4, 25, 10\)"):
        FL.hint_loss(rand(4, 1, 10), t)       # would broadcast in F.mse_loss (with only a warning)
    with pytest.raises(ValueError, match=r"\(4, 8, 10\) \(student\) vs \(4, 8, 5\) \(teacher\).*pool"):
        FL.attention_transfer_loss(s, rand(4, 8, 5))
    with pytest.raises(ValueError, match="feature maps"):
        FL.attention_transfer_loss(rand(4, 8), rand(4, 8))


@pytest.mark.parametrize("loss", [FL.hint_loss, FL.cosine_loss, FL.attention_transfer_loss])
def test_bad_input_is_named(loss):
    good = rand(2, 3, 4)
    bad_value = good.clone()
    bad_value[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="student_.*non-finite"):
        loss(bad_value, good)
    with pytest.raises(ValueError, match="teacher_.*non-finite"):
        loss(good, bad_value.clone().fill_(float("inf")))
    with pytest.raises(ValueError, match="must be a torch.Tensor"):
        loss(good.numpy(), good)
    with pytest.raises(ValueError, match="floating-point"):
        loss(good.long(), good)
    with pytest.raises(ValueError, match="reduction must be one of"):
        loss(good, good, reduction="batchmean")


def test_attention_p_must_be_positive():
    with pytest.raises(ValueError, match="p must be > 0"):
        FL.attention_map(rand(2, 3, 4), p=0)
    with pytest.raises(ValueError, match="p must be"):
        FL.attention_transfer_loss(rand(2, 3, 4), rand(2, 3, 4), p="two")


# --------------------------------------------------------------------------- linear CKA

def test_linear_cka_against_its_definition_and_invariances():
    x = rand(50, 6, seed=1)
    y = x @ rand(6, 9, seed=2) + 0.5 * rand(50, 9, seed=3)
    xc, yc = (x - x.mean(0)).numpy(), (y - y.mean(0)).numpy()
    direct = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert metrics.linear_cka(x, y) == pytest.approx(direct, rel=1e-10)
    q, _ = torch.linalg.qr(rand(6, 6, seed=4))
    assert metrics.linear_cka(x, 3 * x @ q + 7) == pytest.approx(1.0, abs=1e-10), "orthogonal map, scale, shift: 1"
    assert metrics.linear_cka(x, y) == pytest.approx(metrics.linear_cka(y, x), rel=1e-12)
    assert 0 <= metrics.linear_cka(x, rand(50, 4, seed=9)) < 0.5, "unrelated features: far from 1"
    flattened = metrics.linear_cka(rand(50, 6, seed=1), rand(50, 6, seed=1))
    assert metrics.linear_cka(rand(50, 2, 3, seed=1), rand(50, 6, seed=1)) == pytest.approx(flattened)
    with pytest.raises(ValueError, match="same N"):
        metrics.linear_cka(x, y[:10])
    with pytest.raises(ValueError, match="constant"):
        metrics.linear_cka(x, torch.ones(50, 3))

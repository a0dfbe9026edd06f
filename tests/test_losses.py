"""kdutils.losses against independent references (NumPy/SciPy), properties, and bad input."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import log_softmax as np_log_softmax
from scipy.special import rel_entr

from kdutils import losses as L



@pytest.fixture(autouse=True)
def float64_default():
    """Compare against NumPy in float64; restore the default dtype for other test files."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def np_probs(z, T):
    return np.exp(np_log_softmax(np.asarray(z, dtype=np.float64) / T, axis=-1))


def ref_kl(s, t, T=1.0):  # KL(p_t || p_s) per row, with SciPy's rel_entr (0 log 0 = 0)
    return rel_entr(np_probs(t, T), np_probs(s, T)).sum(-1)


def ref_ce(s, t, T=1.0):
    return -(np_probs(t, T) * np_log_softmax(np.asarray(s) / T, axis=-1)).sum(-1)


def ref_jsd(s, t, beta, T=1.0):
    ps, pt = np_probs(s, T), np_probs(t, T)
    m = beta * pt + (1 - beta) * ps
    return beta * rel_entr(pt, m).sum(-1) + (1 - beta) * rel_entr(ps, m).sum(-1)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 7, generator=g) * 3, torch.randn(16, 7, generator=g) * 3


@pytest.mark.parametrize("T", [0.5, 1.0, 4.0])
def test_kl_matches_scipy_and_kl_div(logits, T):
    s, t = logits
    ours = L.kl_divergence(s, t, temperature=T, reduction="none")
    np.testing.assert_allclose(ours.numpy(), ref_kl(s.numpy(), t.numpy(), T), rtol=1e-10, atol=1e-12)
    torch_ref = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean")
    assert torch.allclose(L.kl_divergence(s, t, temperature=T), torch_ref)
    assert torch.allclose(L.kl_divergence(s, t, temperature=T, reduction="sum"), ours.sum())


def test_reverse_kl_swaps_roles(logits):
    s, t = logits
    rev = L.kl_divergence(s, t, direction="reverse", reduction="none")
    np.testing.assert_allclose(rev.numpy(), ref_kl(t.numpy(), s.numpy()), rtol=1e-10)
    assert not torch.allclose(rev, L.kl_divergence(s, t, reduction="none"))


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_soft_ce_matches_reference_and_decomposes(logits, T):
    s, t = logits
    ce = L.soft_cross_entropy(s, t, temperature=T, reduction="none")
    np.testing.assert_allclose(ce.numpy(), ref_ce(s.numpy(), t.numpy(), T), rtol=1e-10)
    p_t = F.softmax(t / T, -1)
    entropy = -(p_t * p_t.log()).sum(-1)
    assert torch.allclose(ce - L.kl_divergence(s, t, temperature=T, reduction="none"), entropy)


def test_seed_quiz_values():
    ref = torch.tensor([0.70, 0.20, 0.10]).log()
    outs = {"A": [0.65, 0.22, 0.13], "B": [0.70, 0.10, 0.20], "C": [0.50, 0.30, 0.20]}
    kl = {k: L.kl_divergence(torch.tensor(v).log()[None], ref[None]).item() for k, v in outs.items()}
    assert kl["A"] == pytest.approx(0.0066, abs=1e-4)
    assert kl["B"] == pytest.approx(0.0693, abs=1e-4)
    assert kl["C"] == pytest.approx(0.0851, abs=1e-4)


def test_kl_nonnegative_and_zero_iff_equal(logits):
    s, t = logits
    assert (L.kl_divergence(s, t, reduction="none") >= 0).all()
    assert L.kl_divergence(t, t).item() == pytest.approx(0.0, abs=1e-12)
    # shifting all logits by a constant leaves the distribution unchanged
    assert L.kl_divergence(t + 5.0, t).item() == pytest.approx(0.0, abs=1e-12)


def test_identical_gradients_kl_and_ce(logits):
    s, t = logits
    s1, s2 = s.clone().requires_grad_(), s.clone().requires_grad_()
    L.kl_divergence(s1, t, temperature=2.0).backward()
    L.soft_cross_entropy(s2, t, temperature=2.0).backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-12)
    # the gradient has the closed form (p_s - p_t) / (T * B)
    expected = (F.softmax(s / 2, -1) - F.softmax(t / 2, -1)) / (2.0 * s.shape[0])
    assert torch.allclose(s1.grad, expected, atol=1e-12)


def test_soft_gradient_scales_as_one_over_T_squared():
    # for logits small relative to T, grad = (p_s - p_t)/T ~ (z_s - z_t)/(C T^2): ratio -> T^2
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(64, 10, generator=g) * 0.1, torch.randn(64, 10, generator=g) * 0.1
    norms = {}
    for T in (1.0, 10.0):
        x = s.clone().requires_grad_()
        L.kl_divergence(x, t, temperature=T).backward()
        norms[T] = x.grad.norm().item()
    assert norms[1.0] / norms[10.0] == pytest.approx(100.0, rel=0.02)
    # ... which the T^2 factor in distillation_loss cancels
    for T in (1.0, 10.0):
        x = s.clone().requires_grad_()
        L.distillation_loss(x, t, temperature=T, alpha=1.0).backward()
        norms[T] = x.grad.norm().item()
    assert norms[1.0] / norms[10.0] == pytest.approx(1.0, rel=0.02)


def test_distillation_loss_combines_terms(logits):
    s, t = logits
    y = torch.arange(16) % 7
    T, a = 3.0, 0.7
    expected = a * T * T * L.kl_divergence(s, t, temperature=T) + (1 - a) * F.cross_entropy(s, y)
    assert torch.allclose(L.distillation_loss(s, t, y, temperature=T, alpha=a), expected)
    assert torch.allclose(L.distillation_loss(s, t, y, temperature=T, alpha=a, soft="ce"),
                          expected + a * T * T * (L.soft_cross_entropy(s, t, temperature=T) - L.kl_divergence(s, t, temperature=T)))
    assert torch.allclose(L.distillation_loss(s, t, y, alpha=0.0), F.cross_entropy(s, y))
    assert torch.allclose(L.distillation_loss(s, t, None, alpha=1.0, temperature=2.0),
                          4.0 * L.kl_divergence(s, t, temperature=2.0))


def test_distillation_ignores_label_minus_100(logits):
    s, t = logits
    y = torch.arange(16) % 7
    y_ign = y.clone(); y_ign[:4] = -100
    got = L.distillation_loss(s, t, y_ign, alpha=0.0, reduction="sum")
    assert torch.allclose(got, F.cross_entropy(s[4:], y[4:], reduction="sum"))
    # unlabeled rows still get the soft term; the hard term averages over labeled rows only
    mixed = L.distillation_loss(s, t, y_ign, alpha=0.5, temperature=2.0)
    expected = 0.5 * 4.0 * L.kl_divergence(s, t, temperature=2.0) + 0.5 * F.cross_entropy(s, y_ign)
    assert torch.allclose(mixed, expected)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_generalized_jsd_matches_reference(logits, beta):
    s, t = logits
    got = L.generalized_jsd(s, t, beta=beta, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref_jsd(s.numpy(), t.numpy(), beta), rtol=1e-9, atol=1e-12)
    # a beta-weighted JSD with the same weights in its mixture is bounded by the binary entropy H(beta)
    # (log 2 at beta = 0.5), and is 0 only for equal distributions
    bound = -(beta * math.log(beta) + (1 - beta) * math.log(1 - beta))
    assert (got <= bound + 1e-12).all() and (got > 0).all()
    assert torch.allclose(L.generalized_jsd(s, s, beta=beta, reduction="none"), torch.zeros(len(s)), atol=1e-12)


def test_generalized_jsd_endpoints_and_symmetry(logits):
    s, t = logits
    assert torch.allclose(L.generalized_jsd(s, t, beta=0.0), L.kl_divergence(s, t))
    assert torch.allclose(L.generalized_jsd(s, t, beta=1.0), L.kl_divergence(s, t, direction="reverse"))
    assert torch.allclose(L.generalized_jsd(s, t, beta=0.5), L.generalized_jsd(t, s, beta=0.5))


def test_token_level_mask_and_batchmean():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    per = L.kl_divergence(s, t, reduction="none")
    assert per.shape == (2, 5)
    masked = L.kl_divergence(s, t, mask=mask)
    assert torch.allclose(masked, per[mask].mean())
    assert torch.allclose(L.kl_divergence(s, t, mask=mask, reduction="sum"), per[mask].sum())
    none = L.kl_divergence(s, t, mask=mask, reduction="none")
    assert (none[~mask] == 0).all()
    # padding content must not matter
    s2 = s.clone(); s2[0, 3:] = 100.0
    assert torch.allclose(L.kl_divergence(s2, t, mask=mask), masked)
    for fn in (L.soft_cross_entropy, L.generalized_jsd):
        assert torch.allclose(fn(s, t, mask=mask), fn(s, t, reduction="none")[mask].mean())


@pytest.mark.parametrize("fn", [L.kl_divergence, L.soft_cross_entropy, L.generalized_jsd])
def test_gradcheck_float64(fn):
    g = torch.Generator().manual_seed(4)
    s = torch.randn(3, 5, generator=g, requires_grad=True)
    t = torch.randn(3, 5, generator=g)
    assert torch.autograd.gradcheck(lambda a: fn(a, t, temperature=2.0), (s,))


@pytest.mark.parametrize("fn", [L.kl_divergence, L.soft_cross_entropy, L.generalized_jsd,
                                lambda s, t, **k: L.distillation_loss(s, t, torch.tensor([0, 1, 2]), alpha=0.5, **k),
                                lambda s, t, **k: L.kl_divergence(s, t, direction="reverse", **k)])
def test_the_teacher_gets_no_gradient(fn):
    """The teacher is a target: even when its logits require grad, only the student learns."""
    g = torch.Generator().manual_seed(4)
    s = torch.randn(3, 5, generator=g, requires_grad=True)
    t = torch.randn(3, 5, generator=g, requires_grad=True)
    fn(s, t, temperature=2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None, "no gradient may flow into the teacher's logits"


@pytest.mark.parametrize("fn", [L.kl_divergence, L.soft_cross_entropy, L.generalized_jsd,
                                lambda s, t, **k: L.distillation_loss(s, t, alpha=1.0, **k)])
def test_extreme_logits_are_finite(fn):
    s = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0]], requires_grad=True)
    t = torch.tensor([[-1e4, 1e4, 0.0], [1e4, -1e4, -3.0]])  # teacher puts ~0 mass where the student peaks
    value = fn(s, t)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(s.grad).all()


def test_zero_teacher_probability_term_is_zero():
    # a teacher class with exactly zero probability contributes nothing (0 log 0 = 0)
    t = torch.tensor([[0.0, -1e4, 2.0]])
    s = torch.tensor([[1.0, 5.0, 0.0]])
    np.testing.assert_allclose(L.kl_divergence(s, t).item(), ref_kl(s.numpy(), t.numpy())[0], rtol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_low_precision_close_to_float64(logits, dtype):
    s, t = logits
    exact = L.kl_divergence(s, t, temperature=2.0)
    low = L.kl_divergence(s.to(dtype), t.to(dtype), temperature=2.0)
    assert low.dtype == torch.float32
    tol = 1e-5 if dtype == torch.float32 else 0.05
    assert abs(low.item() - exact.item()) <= tol * max(1.0, exact.item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_cpu(logits, dtype):
    s, t = logits
    for fn in (L.kl_divergence, L.soft_cross_entropy, L.generalized_jsd):
        cpu = fn(s, t, temperature=2.0).item()
        gpu = fn(s.to("cuda", dtype), t.to("cuda", dtype), temperature=2.0).item()
        assert gpu == pytest.approx(cpu, rel=0.05 if dtype == torch.bfloat16 else 1e-5, abs=1e-4)


# ------------------------------------------------------------------ bad input: clear ValueErrors

BAD = [
    (lambda s, t: L.kl_divergence(s, t[:, :3]), "same shape"),
    (lambda s, t: L.kl_divergence(s, t, temperature=0), "temperature"),
    (lambda s, t: L.kl_divergence(s, t, temperature=-1.0), "temperature"),
    (lambda s, t: L.kl_divergence(s, t, temperature=float("nan")), "temperature"),
    (lambda s, t: L.distillation_loss(s, t, torch.zeros(16, dtype=torch.long), alpha=1.5), "alpha"),
    (lambda s, t: L.distillation_loss(s, t, torch.zeros(16, dtype=torch.long), alpha=-0.1), "alpha"),
    (lambda s, t: L.generalized_jsd(s, t, beta=2.0), "beta"),
    (lambda s, t: L.kl_divergence(s.masked_fill(s > 2, float("nan")), t), "non-finite"),
    (lambda s, t: L.kl_divergence(s, t.masked_fill(t > 2, float("inf"))), "non-finite"),
    (lambda s, t: L.kl_divergence(s, t, mask=torch.ones(15, dtype=torch.bool)), "mask"),
    (lambda s, t: L.kl_divergence(s.long(), t), "integer"),
    (lambda s, t: L.kl_divergence(s, t, reduction="mean"), "reduction"),
    (lambda s, t: L.kl_divergence(s, t, direction="sideways"), "direction"),
    (lambda s, t: L.distillation_loss(s, t, None, alpha=0.5), "labels"),
    (lambda s, t: L.distillation_loss(s, t, torch.zeros(15, dtype=torch.long), alpha=0.5), "labels"),
    (lambda s, t: L.distillation_loss(s, t, alpha=1.0, soft="mse"), "soft"),
]


@pytest.mark.parametrize("call,words", BAD, ids=[w + str(i) for i, (_, w) in enumerate(BAD)])
def test_bad_input_raises_naming_the_problem(logits, call, words):
    s, t = logits
    with pytest.raises(ValueError, match=words):
        call(s, t)


def test_skip_value_checks_is_scoped(logits):
    s, t = logits
    bad = s.clone(); bad[0, 0] = float("nan")
    with L.skip_value_checks():
        assert torch.isnan(L.kl_divergence(bad, t))          # no device read: NaN flows through
        with pytest.raises(ValueError, match="same shape"):
            L.kl_divergence(s, t[:, :3])                     # shape checks stay on
    with pytest.raises(ValueError, match="non-finite"):
        L.kl_divergence(bad, t)                              # and the value check is back afterwards


def test_ignore_index_is_a_parameter_of_the_distillation_loss():
    torch.manual_seed(0)
    s, t = torch.randn(6, 4), torch.randn(6, 4)
    default = L.distillation_loss(s, t, torch.tensor([0, 1, -100, 3, -100, 2]), alpha=0.5)
    other = L.distillation_loss(s, t, torch.tensor([0, 1, 9, 3, 9, 2]), alpha=0.5, ignore_index=9)
    torch.testing.assert_close(default, other)
    with pytest.raises(ValueError, match=r"\[0, 4\) or 9 \(unlabeled\)"):
        L.distillation_loss(s, t, torch.tensor([0, 1, -100, 3, 9, 2]), alpha=0.5, ignore_index=9)


def test_metrics_check_labels_as_the_losses_do():
    from kdutils import metrics
    logits = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\); got \[3\]"):
        metrics.accuracy(logits, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\); got \[-100\]"):
        metrics.accuracy(logits, torch.tensor([0, 1, 2, -100]))     # every position of an accuracy is labeled
    with pytest.raises(ValueError, match="leading shape"):
        metrics.expected_calibration_error(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer class indices"):
        metrics.accuracy(logits, torch.zeros(4))


def test_total_variation_is_half_the_l1_distance_and_one_minus_the_overlap():
    torch.manual_seed(0)
    s, t = torch.randn(6, 5, 7, dtype=torch.float64), torch.randn(6, 5, 7, dtype=torch.float64) * 3
    p_s, p_t = F.softmax(s / 2, -1), F.softmax(t / 2, -1)
    per = 0.5 * (p_s - p_t).abs().sum(-1)
    assert torch.allclose(L.total_variation(s, t, temperature=2, reduction="none"), per)
    assert torch.allclose(per, 1 - torch.minimum(p_s, p_t).sum(-1))
    mask = torch.rand(6, 5) < 0.6
    assert torch.allclose(L.total_variation(s, t, temperature=2, mask=mask), per[mask].mean())
    assert torch.allclose(L.total_variation(s, t, temperature=2, reduction="sum"), per.sum())
    assert torch.allclose(L.total_variation(t, s), L.total_variation(s, t))        # symmetric
    assert float(L.total_variation(s, s)) == 0.0
    far = L.total_variation(torch.tensor([[50.0, 0.0]]), torch.tensor([[0.0, 50.0]]))
    assert abs(float(far) - 1.0) < 1e-6                                                     # bounded by 1
    s.requires_grad_(True)
    L.total_variation(s, t).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="temperature"):
        L.total_variation(s, t, temperature=0)
    with pytest.raises(ValueError, match="same shape"):
        L.total_variation(s, t[..., :3])

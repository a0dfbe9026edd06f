"""kdutils.token_losses: the top-k loss against the dense KL and by construction never negative; the
chunked loss equal to the dense loss in value and gradient (float64, masks, ignore_index, both KL
directions, JSD, a teacher given as logits or as hidden states); bad input named."""
import pytest
import torch

from kdutils import checks
from kdutils import losses as L
from kdutils import token_losses as TL


def rand(*shape, seed=0, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --------------------------------------------------------------------------- top-k

@pytest.mark.parametrize("tail", TL.TAILS)
@pytest.mark.parametrize("T", [1.0, 2.0])
def test_topk_with_k_equal_v_is_the_dense_kl(tail, T):
    s, t = rand(3, 5, 50, seed=1, scale=3), rand(3, 5, 50, seed=2, scale=3)
    idx, lp = TL.topk_cache(t, 50, temperature=T)
    lp = checks.log_probs(t, T).gather(-1, idx.long())         # full precision, to compare exactly
    dense = L.kl_divergence(s, t, temperature=T, reduction="none")
    torch.testing.assert_close(TL.topk_kl_divergence(s, idx, lp, temperature=T, tail=tail, reduction="none"), dense)


def test_topk_bucket_against_its_formula():
    s, t = rand(4, 30, seed=3, scale=2), rand(4, 30, seed=4, scale=2)
    idx, _ = TL.topk_cache(t, 6)
    lp = checks.log_probs(t, 1.0).gather(-1, idx.long())
    p, q = lp.exp(), checks.log_probs(s, 1.0).gather(-1, idx.long()).exp()
    m_p, m_q = 1 - p.sum(-1), 1 - q.sum(-1)
    want = (p * (p / q).log()).sum(-1) + m_p * (m_p / m_q).log()
    torch.testing.assert_close(TL.topk_kl_divergence(s, idx, lp, reduction="none"), want)
    ph, qh = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    torch.testing.assert_close(TL.topk_kl_divergence(s, idx, lp, tail="renormalize", reduction="none"),
                               (ph * (ph / qh).log()).sum(-1))


def test_topk_is_never_negative_where_the_naive_truncation_is_and_keeps_its_gradient():
    # a student that puts more mass than the teacher on the teacher's top tokens
    t = rand(64, 40, seed=5)
    idx, lp = TL.topk_cache(t, 4)
    s = t.clone()
    s.scatter_add_(-1, idx.long(), torch.full(idx.shape, 3.0, dtype=torch.float64))
    naive = TL.truncated_kl(s, idx, lp)
    assert (naive < 0).all(), "the truncated KL goes negative"
    s.requires_grad_()
    clamped = TL.truncated_kl(s, idx, lp).clamp(min=0).mean()
    clamped.backward()
    assert s.grad.abs().max() == 0, "the clamp kills the gradient"
    s.grad = None
    for tail in TL.TAILS:
        loss = TL.topk_kl_divergence(s, idx, lp, tail=tail, reduction="none")
        assert (loss >= 0).all()
        loss.mean().backward()
        assert s.grad.abs().max() > 0, f"{tail}: a gradient pulls the student back"
        s.grad = None


def test_topk_cache_sizes_and_bad_input():
    t = rand(2, 7, 100, seed=6)
    idx, lp = TL.topk_cache(t, 8)
    assert idx.dtype == torch.int32 and lp.dtype == torch.float16 and idx.shape == (2, 7, 8)
    assert idx.element_size() * 8 + lp.element_size() * 8 == 48, "6 bytes per kept token"
    s = rand(2, 7, 100, seed=7)
    with pytest.raises(ValueError, match="log-probabilities"):
        TL.topk_kl_divergence(s, idx, t.gather(-1, idx.long()) + 5)       # raw logits, not log-probs
    with pytest.raises(ValueError, match=r"token ids in \[0, 50\)"):
        TL.topk_kl_divergence(s[..., :50], idx, lp)
    with pytest.raises(ValueError, match="tail must be"):
        TL.topk_kl_divergence(s, idx, lp, tail="drop")
    with pytest.raises(ValueError, match="k must be"):
        TL.topk_cache(t, 0)


def test_vocab_mismatch_names_both_sizes_and_the_policy():
    with pytest.raises(ValueError, match=r"student has 151,936 tokens, the teacher 152,064.*shared_vocab"):
        TL.check_vocab(151_936, 152_064)
    s, t = rand(2, 3, 10), rand(2, 3, 12)
    s2, t2 = TL.shared_vocab(s, t, shared=10)
    assert s2.shape == t2.shape == (2, 3, 10)
    torch.testing.assert_close(L.kl_divergence(s2, t2), L.kl_divergence(s, t[..., :10]))
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        TL.chunked_kl_divergence(rand(6, 4), rand(10, 4), rand(6, 12))


# --------------------------------------------------------------------------- chunked

def dense(h, W, z_t, *, divergence, beta=0.5, T=1.0, mask=None, reduction="batchmean"):
    z = h @ W.T
    if divergence == "jsd":
        return L.generalized_jsd(z, z_t, beta=beta, temperature=T, mask=mask, reduction=reduction)
    return L.kl_divergence(z, z_t, temperature=T, direction=divergence, mask=mask, reduction=reduction)


@pytest.mark.parametrize("divergence, beta", [("forward", 0.5), ("reverse", 0.5), ("jsd", 0.5), ("jsd", 0.1)])
@pytest.mark.parametrize("teacher_as", ["logits", "hidden"])
@pytest.mark.parametrize("reduction", ["batchmean", "sum"])
def test_chunked_equals_dense_in_value_and_gradient(divergence, beta, teacher_as, reduction):
    B, Lq, D, Dt, V = 3, 7, 8, 12, 37
    h = rand(B, Lq, D, seed=1).requires_grad_()
    W = rand(V, D, seed=2, scale=0.5).requires_grad_()
    ht, Wt = rand(B, Lq, Dt, seed=3), rand(V, Dt, seed=4, scale=0.5)
    z_t = ht @ Wt.T
    labels = torch.randint(0, V, (B, Lq), generator=torch.Generator().manual_seed(5))
    labels[0, :3] = -100                                   # a prompt
    labels[2, 5:] = -100                                   # padding
    mask = torch.ones(B, Lq, dtype=torch.bool)
    mask[1, 6] = False
    include = mask & (labels != -100)
    want = dense(h, W, z_t, divergence=divergence, beta=beta, T=2.0, mask=include, reduction=reduction)
    g_h, g_W = torch.autograd.grad(want, (h, W))
    teacher = {"teacher_logits": z_t} if teacher_as == "logits" else {"teacher_hidden": ht, "teacher_weight": Wt}
    got = TL.chunked_kl_divergence(h, W, **teacher, divergence=divergence, beta=beta, temperature=2.0,
                                   mask=mask, labels=labels, reduction=reduction, chunk_size=4)
    c_h, c_W = torch.autograd.grad(got, (h, W))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(c_h, g_h)
    torch.testing.assert_close(c_W, g_W)


def test_chunked_with_a_bias_and_the_mean_over_tokens_not_over_chunks():
    N, D, V = 10, 6, 20
    h, W, b = rand(N, D, seed=1).requires_grad_(), rand(V, D, seed=2).requires_grad_(), rand(V, seed=3).requires_grad_()
    z_t = rand(N, V, seed=4)
    mask = torch.tensor([True] * 3 + [False] * 5 + [True] * 2)     # chunks of 4: 3, 0, 2 tokens
    want = L.kl_divergence(h @ W.T + b, z_t, mask=mask)
    got = TL.chunked_kl_divergence(h, W, z_t, student_bias=b, mask=mask, chunk_size=4)
    torch.testing.assert_close(got, want)
    for a, c in zip(torch.autograd.grad(want, (h, W, b)), torch.autograd.grad(got, (h, W, b))):
        torch.testing.assert_close(c, a)
    per_token = L.kl_divergence(h @ W.T + b, z_t, reduction="none").detach()
    chunk_means = [per_token[i:i + 4][mask[i:i + 4]].mean() for i in (0, 8)]
    assert abs(float(torch.stack(chunk_means).mean()) - float(got.detach())) > 1e-3, "a mean of chunk means differs: the bug it avoids"


def test_chunked_bad_input():
    h, W, z = rand(4, 3), rand(9, 3), rand(4, 9)
    with pytest.raises(ValueError, match="student_weight must be"):
        TL.chunked_kl_divergence(h, rand(9, 5), z)
    with pytest.raises(ValueError, match="not both"):
        TL.chunked_kl_divergence(h, W, z, teacher_hidden=rand(4, 2), teacher_weight=rand(9, 2))
    with pytest.raises(ValueError, match="reduction"):
        TL.chunked_kl_divergence(h, W, z, reduction="none")
    with pytest.raises(ValueError, match="temperature"):
        TL.chunked_kl_divergence(h, W, z, temperature=0)
    with pytest.raises(ValueError, match="non-finite"):
        TL.chunked_kl_divergence(h, W, z.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="divergence must be"):
        TL.chunked_kl_divergence(h, W, z, divergence="tvd")

r"""Token-level distillation for language models at scale: top-k (sparse) teachers and a chunked
large-vocabulary loss.

**Top-k logit caches** (offline distillation, as in arcee's DistillKit). Storing a teacher's full
distribution costs V numbers per token (V = 128k for Llama 3); a cache keeps the k most probable
tokens: ``topk_cache`` returns their indices (int32) and log-probabilities (float16), computed at the
distillation temperature T from the full logits, so 6k bytes per token. What the cache drops is the
tail mass :math:`m = 1 - \sum_{i \in K} p_i`. Two losses are well defined on it:

* ``tail="bucket"`` (default): the k kept tokens plus one "everything else" outcome,

  .. math::  \mathrm{KL}_K = \sum_{i \in K} p_i \log\frac{p_i}{q_i} + m \log\frac{m}{1 - \sum_{i \in K} q_i}

* ``tail="renormalize"``: both distributions renormalised over the k kept tokens,
  :math:`\hat p_i = p_i / \sum_K p`, :math:`\hat q_i = q_i / \sum_K q`, and :math:`\mathrm{KL}(\hat p \| \hat q)`.

Both are KL divergences between two distributions on the same outcomes, so they are >= 0 by
construction, and both equal the dense KL when k = V. The naive truncation
:math:`\sum_{i \in K} p_i \log(p_i / q_i)` (the teacher's tail simply dropped) is not a divergence:
it goes negative when the student puts more mass on the kept tokens than the teacher does, and
a ``clamp(min=0)`` on it then silently zeroes the gradient.

**Chunked loss** (as Liger-Kernel's fused distillation losses). With V = 128k, the logits of a
batch of 4,096 tokens are 2 GiB in float32, and a dense loss keeps several such tensors (the
softmaxes, the gradient) alive. ``chunked_kl_divergence`` takes the student's *hidden states* and
output projection (and the teacher's logits, or its hidden states and projection), computes the
logits of ``chunk_size`` tokens at a time, and computes each chunk's gradient right away (with
respect to the hidden states and the projection), so no ``(N, V)`` tensor ever exists. Values and
gradients equal the dense loss's: the per-token mean is taken over every unmasked token of the
batch (the divisor is counted once, up front), never as a mean of chunk means.

API as ``kdutils.losses``: the student first, then the teacher; options keyword-only;
``reduction`` ``"batchmean"`` (per-token mean over unmasked tokens), ``"sum"`` or ``"none"``;
``ValueError`` naming any bad input, including a vocabulary mismatch (both sizes named).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import checks, losses

TAILS = ("bucket", "renormalize")


# --------------------------------------------------------------------------- vocabulary sizes

def check_vocab(student_size: int, teacher_size: int) -> None:
    """A clear error when the student's and the teacher's vocabularies differ in size.

    Models of one family often pad their vocabularies to a multiple of 64 or 128 (e.g. 152,064 vs
    151,936 rows): distilling one into the other needs an explicit policy, never a silent slice.
    """
    if student_size != teacher_size:
        raise ValueError(
            f"vocabulary mismatch: the student has {student_size:,} tokens, the teacher {teacher_size:,}. "
            "Pick a policy explicitly: if one vocabulary is the other plus padding rows, slice the larger "
            f"logits to the shared {min(student_size, teacher_size):,} (kdutils.token_losses.shared_vocab); "
            "if the tokenizers differ, map the shared tokens (or distil on text, not logits)")


def shared_vocab(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, shared: int):
    """Both logits cut to the first ``shared`` tokens: the policy for vocabularies padded past a
    shared tokenizer. Refuses if a row beyond ``shared`` would be dropped from a vocabulary that has
    fewer rows than ``shared``."""
    for name, z in (("student", student_logits), ("teacher", teacher_logits)):
        if z.shape[-1] < shared:
            raise ValueError(f"shared={shared:,} tokens, but the {name}'s logits have only {z.shape[-1]:,}")
    return student_logits[..., :shared], teacher_logits[..., :shared]


# --------------------------------------------------------------------------- top-k caches

def topk_cache(teacher_logits: torch.Tensor, k: int, *, temperature: float = 1.0):
    """The teacher's k most probable tokens per position at ``temperature``: ``(indices int32,
    log_probs float16)``, each ``(..., k)``; 6k bytes per token. The log-probabilities are normalised
    over the full vocabulary, so the dropped mass is ``1 - exp(log_probs).sum(-1)``."""
    checks.logits("teacher_logits", teacher_logits)
    T = checks.temperature(temperature)
    if not isinstance(k, int) or not 1 <= k <= teacher_logits.shape[-1]:
        raise ValueError(f"k must be an integer in [1, {teacher_logits.shape[-1]}] (the vocabulary), got {k!r}")
    with torch.no_grad():
        log_p = checks.log_probs(teacher_logits, T)
        values, indices = log_p.topk(k, dim=-1)
    return indices.to(torch.int32), values.to(torch.float16)


def _log1mexp(log_x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(log_x)) for log_x <= 0, accurate near 0 and near -inf (Maechler 2012)."""
    log_x = log_x.clamp(max=0.0)
    return torch.where(log_x > -math.log(2), torch.log(-torch.expm1(log_x)), torch.log1p(-torch.exp(log_x)))


def topk_kl_divergence(student_logits, teacher_indices, teacher_log_probs, *, temperature=1.0, tail="bucket",
                       reduction="batchmean", mask=None):
    r"""KL(teacher || student) on a top-k teacher: see the module docstring for the two ``tail`` policies.

    ``student_logits`` (..., V); ``teacher_indices`` (..., k) integer token ids; ``teacher_log_probs``
    (..., k) the teacher's log-probabilities of those tokens *at this temperature*, normalised over the
    full vocabulary (``topk_cache`` makes both). The student is softened with the same ``temperature``.
    Never negative; equals ``kl_divergence`` (dense) when k = V.
    """
    checks.logits("student_logits", student_logits)
    T = checks.temperature(temperature)
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")
    if not isinstance(teacher_indices, torch.Tensor) or teacher_indices.is_floating_point() or teacher_indices.dtype == torch.bool:
        raise ValueError(f"teacher_indices must be an integer tensor of token ids, got "
                         f"{getattr(teacher_indices, 'dtype', type(teacher_indices).__name__)}")
    checks.logits("teacher_log_probs", teacher_log_probs)
    lead, k, V = student_logits.shape[:-1], teacher_indices.shape[-1], student_logits.shape[-1]
    if teacher_indices.shape != teacher_log_probs.shape or teacher_indices.shape[:-1] != lead:
        raise ValueError(f"teacher_indices {tuple(teacher_indices.shape)} and teacher_log_probs {tuple(teacher_log_probs.shape)} "
                         f"must both be (..., k) with the student's leading shape {tuple(lead)}")
    if k > V:
        check_vocab(V, k)
    if checks.values_checked():
        if teacher_indices.numel() and (teacher_indices.min() < 0 or teacher_indices.max() >= V):
            raise ValueError(f"teacher_indices must be token ids in [0, {V:,}) (the student's vocabulary), got "
                             f"{int(teacher_indices.min())}..{int(teacher_indices.max())}: a teacher with a larger vocabulary? "
                             "see kdutils.token_losses.check_vocab")
        if (teacher_log_probs > 1e-3).any() or (teacher_log_probs.float().exp().sum(-1) > 1 + 1e-2).any():
            raise ValueError("teacher_log_probs must be log-probabilities (<= 0, summing to at most 1 per position): "
                             "pass log_softmax(teacher_logits / T) of the kept tokens, not raw logits")
    mask = checks.mask(mask, lead)
    indices = teacher_indices.long()
    log_q_all = checks.log_probs(student_logits, T)
    log_q = log_q_all.gather(-1, indices)                                   # the student on the kept tokens
    log_p = teacher_log_probs.detach().to(log_q.dtype).clamp(max=0.0)
    if tail == "renormalize":
        log_p = log_p - torch.logsumexp(log_p, -1, keepdim=True)
        log_q = log_q - torch.logsumexp(log_q, -1, keepdim=True)
        return checks.reduce((log_p.exp() * (log_p - log_q)).sum(-1), reduction, mask)
    per_position = (log_p.exp() * (log_p - log_q)).sum(-1)                # the kept tokens
    if k < V:   # the tail bucket (k = V: nothing is dropped, no tail term)
        # the teacher's dropped mass from its cached (maybe float16) values, kept >= ~1e-7 against rounding;
        # the student's exactly, as the log-sum-exp of its log-probabilities outside the kept tokens
        log_tail_p = _log1mexp(torch.logsumexp(log_p, -1).clamp(max=-1e-7))
        log_tail_q = log_q_all.scatter(-1, indices, float("-inf")).logsumexp(-1)
        per_position = per_position + log_tail_p.exp() * (log_tail_p - log_tail_q)
    return checks.reduce(per_position, reduction, mask)


def truncated_kl(student_logits, teacher_indices, teacher_log_probs, *, temperature=1.0):
    r"""The naive top-k loss, shown for what goes wrong: :math:`\sum_{i \in K} p_i \log(p_i/q_i)` per
    position, the teacher's tail dropped, *not* a divergence (it can be negative). Per-position values."""
    T = checks.temperature(temperature)
    log_q = checks.log_probs(student_logits, T).gather(-1, teacher_indices.long())
    log_p = teacher_log_probs.detach().float()
    return (log_p.exp() * (log_p - log_q)).sum(-1)


# --------------------------------------------------------------------------- chunked large-vocabulary loss

DIVERGENCES = ("forward", "reverse", "jsd")


def _divergence(z_s, z_t, *, divergence, beta, temperature):
    if divergence == "jsd":
        return losses.generalized_jsd(z_s, z_t, beta=beta, temperature=temperature, reduction="none")
    return losses.kl_divergence(z_s, z_t, temperature=temperature, direction=divergence, reduction="none")


class _Chunked(torch.autograd.Function):
    """Forward computes the loss and, chunk by chunk, its gradients; backward scales them."""

    @staticmethod
    def forward(ctx, h_s, w_s, b_s, teacher_logits, h_t, w_t, b_t, weights, chunk_size, divergence, beta, temperature):
        grad_h = torch.zeros_like(h_s)
        grad_w = torch.zeros_like(w_s)
        grad_b = torch.zeros_like(b_s) if b_s is not None else None
        total = torch.zeros((), dtype=torch.float32 if h_s.dtype in (torch.float16, torch.bfloat16) else h_s.dtype, device=h_s.device)
        params = [w_s] + ([b_s] if b_s is not None else [])
        for i in range(0, h_s.shape[0], chunk_size):
            rows = slice(i, i + chunk_size)
            if not (weights[rows] != 0).any():
                continue                                      # a chunk of padding: nothing to learn, skip its logits
            with torch.enable_grad():
                h = h_s[rows].detach().requires_grad_()
                p = [t.detach().requires_grad_() for t in params]
                z_s = F.linear(h, p[0], p[1] if b_s is not None else None)
                with torch.no_grad():
                    z_t = teacher_logits[rows] if teacher_logits is not None else F.linear(h_t[rows], w_t, b_t)
                per_token = _divergence(z_s, z_t, divergence=divergence, beta=beta, temperature=temperature)
                chunk_loss = (per_token * weights[rows]).sum()
                grads = torch.autograd.grad(chunk_loss, [h, *p])
            grad_h[rows] = grads[0]
            grad_w += grads[1]
            if b_s is not None:
                grad_b += grads[2]
            total += chunk_loss.detach()
        ctx.save_for_backward(grad_h, grad_w, *([grad_b] if b_s is not None else []))
        ctx.has_bias = b_s is not None
        return total

    @staticmethod
    def backward(ctx, grad_out):
        saved = ctx.saved_tensors
        grad_h, grad_w = saved[0] * grad_out, saved[1] * grad_out
        grad_b = saved[2] * grad_out if ctx.has_bias else None
        return grad_h, grad_w, grad_b, None, None, None, None, None, None, None, None, None


def chunked_kl_divergence(student_hidden, student_weight, teacher_logits=None, *, teacher_hidden=None,
                          teacher_weight=None, student_bias=None, teacher_bias=None, divergence="forward", beta=0.5,
                          temperature=1.0, reduction="batchmean", mask=None, labels=None, ignore_index=checks.IGNORE_INDEX,
                          chunk_size=512):
    r"""A token-level divergence between the student's logits ``h_s W_s^T (+ b_s)`` and the teacher's,
    computed ``chunk_size`` tokens at a time: the ``(N, V)`` logits never exist, values and gradients
    equal the dense loss's.

    ``student_hidden`` (..., D_s) and ``student_weight`` (V, D_s), the student's final hidden states
    and output projection (``lm_head.weight``). The teacher: its ``teacher_logits`` (..., V), or its
    ``teacher_hidden`` (..., D_t) and ``teacher_weight`` (V, D_t), which keeps its logits chunked too.
    ``divergence``: ``"forward"`` KL(p_t || p_s), ``"reverse"`` KL(p_s || p_t), or ``"jsd"`` (the
    generalized JSD with ``beta``, as ``kdutils.losses.generalized_jsd``). Tokens are excluded by
    ``mask`` (False) or by ``labels == ignore_index`` (prompt and padding tokens, as in Hugging Face).
    ``"batchmean"``: the mean over the included tokens of the whole batch. Gradients flow to the
    student's hidden states, weight and bias; the teacher is never differentiated.
    """
    if reduction not in ("batchmean", "sum"):
        raise ValueError(f"reduction must be 'batchmean' or 'sum' for the chunked loss (per-token values would be "
                         f"(N,), use the dense loss for 'none'), got {reduction!r}")
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    T = checks.temperature(temperature)
    beta = checks.unit("beta", beta)
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    for name, t in (("student_hidden", student_hidden), ("student_weight", student_weight)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    if student_weight.dim() != 2 or student_hidden.shape[-1] != student_weight.shape[1]:
        raise ValueError(f"student_weight must be (V, D) with D = the hidden size {student_hidden.shape[-1]}, got "
                         f"{tuple(student_weight.shape)}")
    lead, V = student_hidden.shape[:-1], student_weight.shape[0]
    h_s = student_hidden.reshape(-1, student_hidden.shape[-1])
    if (teacher_logits is None) == (teacher_hidden is None or teacher_weight is None):
        raise ValueError("give the teacher's logits, or its hidden states and weight (teacher_hidden, teacher_weight), not both")
    h_t = w_t = None
    if teacher_logits is not None:
        checks.logits("teacher_logits", teacher_logits)
        check_vocab(V, teacher_logits.shape[-1])
        if teacher_logits.shape[:-1] != lead:
            raise ValueError(f"teacher_logits {tuple(teacher_logits.shape)} must have the student's leading shape {tuple(lead)}")
        teacher_logits = teacher_logits.detach().reshape(-1, V)
    else:
        if teacher_weight.dim() != 2 or teacher_hidden.shape[-1] != teacher_weight.shape[1]:
            raise ValueError(f"teacher_weight must be (V, D_t) with D_t = {teacher_hidden.shape[-1]}, got {tuple(teacher_weight.shape)}")
        check_vocab(V, teacher_weight.shape[0])
        if teacher_hidden.shape[:-1] != lead:
            raise ValueError(f"teacher_hidden {tuple(teacher_hidden.shape)} must have the student's leading shape {tuple(lead)}")
        h_t, w_t = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1]), teacher_weight.detach()
        teacher_bias = teacher_bias.detach() if teacher_bias is not None else None
    include = torch.ones(h_s.shape[0], dtype=torch.bool, device=h_s.device)
    mask = checks.mask(mask, lead)
    if mask is not None:
        include &= mask.reshape(-1)
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != tuple(lead):
            raise ValueError(f"labels must be a tensor of the leading shape {tuple(lead)}, got {getattr(labels, 'shape', labels)}")
        include &= labels.reshape(-1) != ignore_index
    weights = include.to(torch.float32 if h_s.dtype in (torch.float16, torch.bfloat16) else h_s.dtype)
    if reduction == "batchmean":
        weights = weights / include.sum().clamp_min(1)          # the batch's token count, once: not a mean of chunk means
    return _Chunked.apply(h_s, student_weight, student_bias, teacher_logits, h_t, w_t, teacher_bias, weights,
                          chunk_size, divergence, beta, T)

r"""Distillation losses, with the math they implement.

Every loss takes logits of shape ``(..., C)`` -- the **student first, then the teacher**, as in
``torch.nn.functional`` -- and turns them into distributions with a temperature ``T``:

.. math::  p^T = \mathrm{softmax}(z / T)

Options are keyword-only. ``reduction`` is one of

* ``"batchmean"`` (default): the mean over all leading positions of the per-position divergence.
  For 2-D input this is exactly ``F.kl_div(..., reduction="batchmean")``; for ``(B, L, C)`` token
  logits it is the per-token mean over the unmasked tokens.
* ``"sum"``: the sum over (unmasked) positions.
* ``"none"``: the per-position values, shape ``(...)`` (masked positions are 0).

``mask`` (optional, the leading shape ``(...)``, bool or 0/1) excludes positions such as padding.

Everything is computed in log space (``log_softmax``), so logits of magnitude 1e4 and a teacher
that puts zero probability on a class give finite values and gradients. Half-precision inputs
(bfloat16, float16) are computed in float32 and the result is returned in float32.

Bad input raises ``ValueError`` naming the problem, never a silent wrong number: shapes, dtypes,
NaN/inf logits, a temperature <= 0, alpha or beta outside [0, 1], labels outside [0, C) other than
``ignore_index`` (-100). Scalars may be Python, NumPy or 0-d tensor numbers. The checks and the
reductions are ``kdutils.checks``, shared with the feature and token losses and the metrics.

The teacher is a target: its logits are detached, so no gradient ever flows into the teacher
(``F.kl_div`` would pass one to its ``target``). For mutual learning, where both models learn,
call the loss twice with the roles swapped.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import checks

from .checks import REDUCTIONS, skip_value_checks  # noqa: F401  (re-exported: part of this module's API)


def _kl_from_log_probs(log_p, log_q):
    """KL(p || q) = sum_c p_c (log p_c - log q_c) per position; 0 log 0 = 0."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


# --------------------------------------------------------------------------- losses

def kl_divergence(student_logits, teacher_logits, *, temperature=1.0, direction="forward",
                  reduction="batchmean", mask=None):
    r"""KL divergence between the teacher's and the student's softened distributions.

    forward (default):  KL(p_t^T || p_s^T) = sum_c p_t,c (log p_t,c - log p_s,c)   (mass-covering)
    reverse:            KL(p_s^T || p_t^T) = sum_c p_s,c (log p_s,c - log p_t,c)   (mode-seeking)

    Forward KL equals ``F.kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True)``.
    """
    teacher_logits = checks.logit_pair(student_logits, teacher_logits)
    temperature = checks.temperature(temperature)
    if direction not in ("forward", "reverse"):
        raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
    mask = checks.mask(mask, student_logits.shape[:-1])
    log_s = checks.log_probs(student_logits, temperature)
    log_t = checks.log_probs(teacher_logits, temperature)
    per_position = _kl_from_log_probs(log_t, log_s) if direction == "forward" else _kl_from_log_probs(log_s, log_t)
    return checks.reduce(per_position, reduction, mask)


def soft_cross_entropy(student_logits, teacher_logits, *, temperature=1.0, reduction="batchmean", mask=None):
    r"""Cross-entropy of the student's distribution under the teacher's soft targets.

    H(p_t^T, p_s^T) = - sum_c p_t,c log p_s,c  =  H(p_t^T) + KL(p_t^T || p_s^T)

    H(p_t^T) does not depend on the student, so this loss and ``kl_divergence`` have the same
    gradient with respect to the student's logits.
    """
    teacher_logits = checks.logit_pair(student_logits, teacher_logits)
    temperature = checks.temperature(temperature)
    mask = checks.mask(mask, student_logits.shape[:-1])
    log_s = checks.log_probs(student_logits, temperature)
    p_t = checks.log_probs(teacher_logits, temperature).exp()
    return checks.reduce(-(p_t * log_s).sum(-1), reduction, mask)


def distillation_loss(student_logits, teacher_logits, labels=None, *, temperature=4.0, alpha=0.9,
                      soft="kl", reduction="batchmean", mask=None, ignore_index=checks.IGNORE_INDEX):
    r"""Hinton et al. (2015): a soft term on the teacher's targets plus a hard term on the labels.

    L = alpha * T^2 * soft(p_t^T, p_s^T) + (1 - alpha) * CE(labels, softmax(z_s))

    ``soft`` is ``"kl"`` (KL(p_t^T || p_s^T)) or ``"ce"`` (H(p_t^T, p_s^T)); both give the same
    gradient. The soft term's gradient shrinks as 1/T^2, so the T^2 factor keeps the two terms'
    relative weight independent of T. ``labels`` (class indices, the leading shape) may be
    ``None`` only with ``alpha = 1``: pure distillation, for an unlabeled transfer set.
    Positions whose label is ``ignore_index`` (-100: unlabeled transfer data) get the soft term only;
    with ``"batchmean"`` each term is averaged over its own positions, so the hard term equals
    ``F.cross_entropy(..., ignore_index=ignore_index)``.
    """
    teacher_logits = checks.logit_pair(student_logits, teacher_logits)
    temperature = checks.temperature(temperature)
    alpha = checks.unit("alpha", alpha)
    if soft not in ("kl", "ce"):
        raise ValueError(f"soft must be 'kl' or 'ce', got {soft!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    mask = checks.mask(mask, student_logits.shape[:-1])
    log_s = checks.log_probs(student_logits, temperature)
    log_t = checks.log_probs(teacher_logits, temperature)
    soft = _kl_from_log_probs(log_t, log_s) if soft == "kl" else -(log_t.exp() * log_s).sum(-1)
    soft_term = temperature ** 2 * soft
    if alpha == 1:
        return checks.reduce(soft_term, reduction, mask)
    if labels is None:
        raise ValueError(f"labels are required when alpha < 1 (alpha={alpha}); pass alpha=1.0 for "
                         "pure distillation on unlabeled data")
    labels = checks.labels(labels, student_logits, ignore_index=ignore_index)
    logits = student_logits.float() if student_logits.dtype in (torch.float16, torch.bfloat16) else student_logits
    hard_term = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                reduction="none", ignore_index=ignore_index).reshape(labels.shape)
    labeled = labels != ignore_index
    if mask is not None:
        labeled = labeled & mask
    if reduction == "none":
        return alpha * checks.reduce(soft_term, "none", mask) + (1 - alpha) * hard_term.masked_fill(~labeled, 0.0)
    # each term is reduced over its own positions: the soft term over every (unmasked) position,
    # the hard term over the labeled ones only, as F.cross_entropy(ignore_index=...) does
    return alpha * checks.reduce(soft_term, reduction, mask) + (1 - alpha) * checks.reduce(hard_term, reduction, labeled)


def generalized_jsd(student_logits, teacher_logits, *, beta=0.5, temperature=1.0, reduction="batchmean", mask=None):
    r"""The beta-skewed generalized Jensen-Shannon divergence of GKD (Agarwal et al. 2024; TRL).

    With M = beta * p_t + (1 - beta) * p_s:

        JSD_beta = beta * KL(p_t || M) + (1 - beta) * KL(p_s || M)        for 0 < beta < 1

    and, as in TRL's ``generalized_jsd_loss``, the endpoints are the two KL directions:
    beta = 0 is the forward KL(p_t || p_s), beta = 1 the reverse KL(p_s || p_t).
    (Inside (0, 1) the value is bounded by log 2 and tends to 0 towards either end, so the
    endpoints are defined separately, not as limits.) beta = 0.5 is the ordinary JSD.
    """
    teacher_logits = checks.logit_pair(student_logits, teacher_logits)
    temperature = checks.temperature(temperature)
    beta = checks.unit("beta", beta)
    mask = checks.mask(mask, student_logits.shape[:-1])
    log_s = checks.log_probs(student_logits, temperature)
    log_t = checks.log_probs(teacher_logits, temperature)
    if beta == 0:
        per_position = _kl_from_log_probs(log_t, log_s)          # forward KL
    elif beta == 1:
        per_position = _kl_from_log_probs(log_s, log_t)          # reverse KL
    else:
        log_m = torch.logsumexp(torch.stack([log_t + math.log(beta), log_s + math.log(1 - beta)]), dim=0)
        per_position = beta * _kl_from_log_probs(log_t, log_m) + (1 - beta) * _kl_from_log_probs(log_s, log_m)
    return checks.reduce(per_position, reduction, mask)


def total_variation(student_logits, teacher_logits, *, temperature=1.0, reduction="batchmean", mask=None):
    r"""Total variation distance between the teacher's and the student's softened distributions.

    TV(p_t^T, p_s^T) = 1/2 sum_c |p_t,c - p_s,c|  =  1 - sum_c min(p_t,c, p_s,c)      in [0, 1]

    Symmetric, bounded, and the quantity speculative decoding pays for: a draft q proposing tokens for
    a target p is accepted with probability 1 - TV(p, q) per position (``kdutils.speculative``), so a
    drafter trained on this loss raises its acceptance rate directly (DistillSpec, Zhou et al. 2024). Its
    gradient with respect to the student's logits is sum_c sign(p_s,c - p_t,c) dp_s,c / 2: it pushes
    every class by the same amount whatever the size of its error, and vanishes where p_s = p_t.
    """
    teacher_logits = checks.logit_pair(student_logits, teacher_logits)
    temperature = checks.temperature(temperature)
    mask = checks.mask(mask, student_logits.shape[:-1])
    p_s = checks.log_probs(student_logits, temperature).exp()
    p_t = checks.log_probs(teacher_logits, temperature).exp()
    return checks.reduce(0.5 * (p_s - p_t).abs().sum(-1), reduction, mask)

r"""How good is a student, and how faithful to its teacher?

Accuracy asks whether the student is right; *fidelity* asks whether it agrees with the teacher
(Stanton et al. 2021, "Does Knowledge Distillation Really Work?"). The two need not move together.

* accuracy            = mean_i [argmax z_s,i = y_i]
* top1_agreement      = mean_i [argmax z_s,i = argmax z_t,i]
* predictive_kl       = mean_i KL(p_t,i || p_s,i)          (at T = 1)
* expected_calibration_error = sum_b (n_b / n) |acc_b - conf_b| over confidence bins b
* linear_cka          = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), centered: how alike two models' features are
"""
from __future__ import annotations

import torch

from . import checks
from .losses import kl_divergence


@torch.no_grad()
def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of positions where the arg-max class equals the label."""
    checks.logits("logits", logits)
    checks.labels(labels, logits, ignore_index=None)
    return (logits.argmax(-1) == labels.to(logits.device)).float().mean().item()


@torch.no_grad()
def top1_agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Fraction of inputs on which student and teacher predict the same class."""
    checks.logit_pair(student_logits, teacher_logits)
    return (student_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean().item()


@torch.no_grad()
def predictive_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Mean KL(p_teacher || p_student) of the predictive distributions, at temperature 1."""
    return kl_divergence(student_logits, teacher_logits).item()


@torch.no_grad()
def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, *, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width confidence bins (Guo et al. 2017)."""
    checks.logits("logits", logits)
    checks.labels(labels, logits, ignore_index=None)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    probs = logits.float().softmax(-1).reshape(-1, logits.shape[-1])
    conf, pred = probs.max(-1)
    correct = (pred == labels.reshape(-1).to(pred.device)).float()
    bins = torch.clamp((conf * n_bins).long(), max=n_bins - 1)
    ece = torch.zeros((), dtype=torch.float64)
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.float().mean().double() * (correct[in_bin].mean() - conf[in_bin].mean()).abs().double()
    return ece.item()


@torch.no_grad()
def fidelity_report(student_logits, teacher_logits, labels) -> dict:
    """Accuracy, agreement with the teacher, predictive KL and ECE of one student, as a dict."""
    return {
        "accuracy": accuracy(student_logits, labels),
        "top1_agreement": top1_agreement(student_logits, teacher_logits),
        "predictive_kl": predictive_kl(student_logits, teacher_logits),
        "ece": expected_calibration_error(student_logits, labels),
    }


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    r"""Linear centered kernel alignment (Kornblith et al. 2019): how alike two representations are.

    ``x`` (N, ...) and ``y`` (N, ...) are two models' features on the same N inputs (flattened per
    example; the feature sizes may differ). With the columns centered,

    .. math::  \mathrm{CKA}(X, Y) = \frac{\|Y^\top X\|_F^2}{\|X^\top X\|_F\,\|Y^\top Y\|_F} \in [0, 1]

    1 when one representation is an orthogonal transform and scaling of the other; invariant to both,
    so it compares features of different widths. Computed in float64.
    """
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise ValueError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.dim() < 2 or y.dim() < 2 or len(x) != len(y) or len(x) < 2:
        raise ValueError(f"x and y must be features (N, ...) of the same N >= 2 inputs, got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = x.detach().flatten(1).double(), y.detach().flatten(1).double()
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("x and y must be finite (no NaN or inf)")
    x, y = x - x.mean(0), y - y.mean(0)
    denominator = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if denominator == 0:
        raise ValueError("a representation is constant over the inputs: CKA is undefined")
    return float(torch.linalg.matrix_norm(y.T @ x) ** 2 / denominator)

r"""Feature distillation: losses on what the networks compute *inside*, not on their outputs.

The student learns from the teacher's intermediate features: a feature map ``(B, C, *spatial)``
(a Conv1d or Conv2d output) or a hidden state ``(B, D)``. Three classic losses:

* ``hint_loss``: FitNets (Romero et al. 2015). A *regressor* r (a 1x1 convolution, see
  ``hint_regressor``) maps the student's features to the teacher's shape, then

  .. math::  L_{hint} = \frac{1}{|F|} \sum_{i} \big(r(F_s)_i - F_{t,i}\big)^2

  (the mean squared error over every element, as ``F.mse_loss``; the paper writes
  :math:`\tfrac12 \|t - r(s)\|^2`, a constant factor). The regressor belongs to the *student*: it is
  trained with it and thrown away after training. Applied to the teacher instead, the loss would
  ask the teacher's features (through a learnable map) to look like the student's: nothing to learn from.
* ``cosine_loss``: hidden-state matching by direction, as in PyTorch's knowledge-distillation
  tutorial (``nn.CosineEmbeddingLoss`` with target 1) and DistilBERT:

  .. math::  L_{cos} = 1 - \frac{\langle h_s, h_t \rangle}{\|h_s\|\,\|h_t\|}

  per example, on the features flattened to vectors (the sizes must match: pool or project first).
* ``attention_transfer_loss``: Zagoruyko & Komodakis (2017). A feature map becomes a spatial
  *attention map* (``attention_map``): the mean over channels of :math:`|F_c|^p`, flattened and
  L2-normalised,

  .. math::  Q = \frac{q}{\|q\|_2}, \quad q_j = \frac{1}{C} \sum_c |F_{c,j}|^p ,

  and the loss is the mean squared difference of the two maps,
  :math:`L_{AT} = \frac{1}{J}\sum_j (Q_{s,j} - Q_{t,j})^2` per example (the authors' code,
  ``(at(x) - at(y)).pow(2).mean()``; the paper writes the un-squared norm :math:`\|Q_s - Q_t\|_2`).
  The channel counts may differ (the channel dimension is averaged away); the spatial shapes must match.

API as in ``kdutils.losses``: the **student first, then the teacher**; options keyword-only;
``reduction`` as in ``torch.nn.functional`` (``"mean"`` default, ``"sum"``, ``"none"``: per element
for ``hint_loss`` (as ``F.mse_loss``), per example for the other two). The teacher's features
are detached: the teacher is a target, never trained. Half-precision inputs are computed in float32.
Bad input raises ``ValueError`` naming it: non-tensors, integer dtypes, NaN/inf, a shape mismatch
(both shapes are named, with the fix: a regressor, or pooling), an unknown reduction, p <= 0.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from . import checks

REDUCTIONS = checks.FEATURE_REDUCTIONS


# --------------------------------------------------------------------------- input checks

def _check_pair(student_features, teacher_features, *, what: str = "features"):
    """Both checked; the teacher's detached. Shapes must be equal."""
    s = checks.features(f"student_{what}", student_features)
    t = checks.features(f"teacher_{what}", teacher_features).detach()
    if s.shape != t.shape:
        raise ValueError(
            f"student and teacher {what} must have the same shape, got {tuple(s.shape)} (student) vs "
            f"{tuple(t.shape)} (teacher): map the student's features to the teacher's shape first, e.g. with "
            f"kdutils.feature_losses.hint_regressor({tuple(s.shape[1:])}, {tuple(t.shape[1:])}) (a learned 1x1 "
            "convolution, trained with the student); the losses never broadcast one shape to the other")
    return s, t


# --------------------------------------------------------------------------- the regressor

def hint_regressor(student_shape, teacher_shape) -> nn.Module:
    """The FitNets regressor: a learned map from the student's feature shape to the teacher's.

    Shapes exclude the batch: ``(C_s, L)`` -> ``(C_t, L)`` gives ``nn.Conv1d(C_s, C_t, 1)``,
    ``(C_s, H, W)`` -> ``(C_t, H, W)`` a ``nn.Conv2d`` 1x1, ``(D_s,)`` -> ``(D_t,)`` a ``nn.Linear``.
    A 1x1 convolution mixes channels at each position and keeps the positions: the spatial shapes
    must already agree (pool the larger map, or hint at a layer where they do).
    """
    s, t = tuple(student_shape), tuple(teacher_shape)
    if len(s) != len(t) or not 1 <= len(s) <= 3:
        raise ValueError(f"student and teacher feature shapes (without the batch) must both be (D,), (C, L) or "
                         f"(C, H, W), got {s} and {t}")
    if s[1:] != t[1:]:
        raise ValueError(f"a 1x1 regressor keeps the positions: the spatial shapes must match, got {s[1:]} (student) vs "
                         f"{t[1:]} (teacher); pool the larger map (F.adaptive_avg_pool1d/2d) or hint at another layer")
    return {1: nn.Linear, 2: nn.Conv1d, 3: nn.Conv2d}[len(s)](*(s[:1] + t[:1]), *(() if len(s) == 1 else (1,)))


# --------------------------------------------------------------------------- losses

def hint_loss(student_features, teacher_features, *, reduction="mean"):
    r"""FitNets' hint loss: the MSE between the (regressed) student features and the teacher's.

    L = mean_i (r(F_s)_i - F_t,i)^2 ; pass ``regressor(student_features)``, of the teacher's shape.
    Equals ``F.mse_loss(r(F_s), F_t.detach(), reduction=...)``.
    """
    s, t = _check_pair(student_features, teacher_features)
    return checks.reduce_features((s - t).pow(2), reduction)


def cosine_loss(student_hidden, teacher_hidden, *, reduction="mean", eps=1e-8):
    r"""Hidden-state matching by direction: 1 - cos(h_s, h_t) per example, features flattened.

    Equals ``nn.CosineEmbeddingLoss()(h_s, h_t, torch.ones(B))`` on ``(B, D)`` inputs. 0 when the
    student's hidden state points where the teacher's does, whatever its length; at most 2.
    """
    s, t = _check_pair(student_hidden, teacher_hidden, what="hidden states")
    return checks.reduce_features(1 - F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1, eps=eps), reduction)


def attention_map(features, *, p=2.0):
    r"""Zagoruyko & Komodakis' spatial attention map: Q = q / ||q||_2, q_j = mean_c |F_c,j|^p.

    ``(B, C, *spatial)`` -> ``(B, prod(spatial))``.
    """
    features = checks.features("features", features)
    p = checks.scalar("p", p)
    if p <= 0:
        raise ValueError(f"p must be > 0, got {p!r}")
    if features.dim() < 3:
        raise ValueError(f"an attention map needs a feature map (B, C, *spatial), got {tuple(features.shape)}")
    return F.normalize(features.abs().pow(p).mean(1).flatten(1), dim=1)


def attention_transfer_loss(student_features, teacher_features, *, p=2.0, reduction="mean"):
    r"""Attention transfer: the mean squared difference of the two normalised attention maps.

    L = mean_j (Q_s,j - Q_t,j)^2 per example, Q = ``attention_map(F, p=p)``. The channel counts may
    differ; the spatial shapes (everything after the channels) must match.
    """
    s = checks.features("student_features", student_features)
    t = checks.features("teacher_features", teacher_features).detach()
    if s.dim() < 3 or s.dim() != t.dim() or s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
        raise ValueError(f"attention transfer needs feature maps (B, C, *spatial) with the same batch and spatial "
                         f"shape (channels may differ), got {tuple(s.shape)} (student) vs {tuple(t.shape)} (teacher): "
                         "pool the larger map (F.adaptive_avg_pool1d/2d) or pick layers of the same resolution")
    return checks.reduce_features((attention_map(s, p=p) - attention_map(t, p=p)).pow(2).mean(1), reduction)

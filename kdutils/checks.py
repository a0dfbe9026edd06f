r"""The input checks and reductions every loss and metric shares (as ``torch.nn._reduction`` is torch's).

One place, so that ``losses``, ``feature_losses``, ``token_losses`` and ``metrics`` check their inputs
alike and name bad input the same way: a ``ValueError`` naming the argument and what was wrong with it,
never a silent wrong number.

Two reduction vocabularies, each torch's own for its kind of loss:

* logit losses follow ``F.kl_div``: ``"batchmean"`` (the mean over the leading positions of the
  per-position divergence; over the unmasked ones with a ``mask``), ``"sum"``, ``"none"``
  (``REDUCTIONS``, ``reduce``);
* feature losses follow ``F.mse_loss``: ``"mean"``, ``"sum"``, ``"none"`` (``FEATURE_REDUCTIONS``,
  ``reduce_features``).

Checking that a tensor is finite reads a value back from the device (one synchronisation on a GPU):
``skip_value_checks`` turns those checks off inside a trusted hot loop; shapes, dtypes and options
are still checked.
"""
from __future__ import annotations

import math
import numbers
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

REDUCTIONS = ("batchmean", "sum", "none")
FEATURE_REDUCTIONS = ("mean", "sum", "none")
IGNORE_INDEX = -100          # the label of an unlabeled position, as in F.cross_entropy and Hugging Face

_check_values = True


@contextmanager
def skip_value_checks():
    """Skip the NaN/inf checks (and value-range checks) inside hot training loops, e.g.
    ``kdutils.fullrun``'s training step, where the inputs are already trusted."""
    global _check_values
    previous, _check_values = _check_values, False
    try:
        yield
    finally:
        _check_values = previous


def values_checked() -> bool:
    """Whether checks that read values back from the device are on (see ``skip_value_checks``)."""
    return _check_values


# --------------------------------------------------------------------------- numbers

def scalar(name, value) -> float:
    """A Python, NumPy or 0-d tensor real number as a float; ValueError for anything else."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"{name} must be a single real number, got a {value.dtype} tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def temperature(value) -> float:
    number = scalar("temperature", value)
    if number <= 0:
        raise ValueError(f"temperature must be > 0, got {value!r}")
    return number


def unit(name, value) -> float:
    """A number in [0, 1] (alpha, beta)."""
    number = scalar(name, value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return number


# --------------------------------------------------------------------------- logits, labels, masks

def logits(name: str, value) -> torch.Tensor:
    """Floating-point logits with the class dimension last, (..., C), finite."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of logits, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be floating-point logits, got integer dtype {value.dtype} "
                         "(pass raw model outputs, not class indices)")
    if value.dim() < 1 or value.shape[-1] < 1:
        raise ValueError(f"{name} must have a class dimension last, shape (..., C); got {tuple(value.shape)}")
    if _check_values and not torch.isfinite(value).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return value


def logit_pair(student_logits, teacher_logits) -> torch.Tensor:
    """Both checked, of one shape; returns the teacher's logits detached: the teacher is a target, never trained."""
    logits("student_logits", student_logits)
    logits("teacher_logits", teacher_logits)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits must have the same shape, got "
                         f"{tuple(student_logits.shape)} (student) vs {tuple(teacher_logits.shape)} (teacher)")
    return teacher_logits.detach()


def labels(value, logits_, *, ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """Class indices in [0, C) with the logits' leading shape, or ``ignore_index`` for unlabeled
    positions (``None``: every position must be labeled). Returned as ``torch.long``."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"labels must be a torch.Tensor of class indices, got {type(value).__name__}")
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise ValueError(f"labels must be integer class indices, got dtype {value.dtype}")
    if tuple(value.shape) != tuple(logits_.shape[:-1]):
        raise ValueError(f"labels must have the logits' leading shape {tuple(logits_.shape[:-1])}, got {tuple(value.shape)}")
    value = value.long()
    if _check_values:
        classes = logits_.shape[-1]
        out_of_range = (value < 0) | (value >= classes)
        if ignore_index is not None:
            out_of_range &= value != ignore_index
        bad = value[out_of_range]
        if bad.numel():
            allowed = f"[0, {classes})" + ("" if ignore_index is None else f" or {ignore_index} (unlabeled)")
            raise ValueError(f"labels must be class indices in {allowed}; got {sorted(set(bad.unique()[:5].tolist()))}")
    return value


def probs(name: str, value) -> torch.Tensor:
    """Probabilities over the last dimension, (..., V): floating point, finite, non-negative, summing to 1
    (to 1e-4). A tensor of logits is named as such."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of probabilities, got "
                         f"{type(value).__name__}{'' if not isinstance(value, torch.Tensor) else ' of ' + str(value.dtype)}")
    if value.dim() < 1 or value.shape[-1] < 1:
        raise ValueError(f"{name} must have the vocabulary dimension last, shape (..., V); got {tuple(value.shape)}")
    if _check_values:
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
        if (value < 0).any():
            raise ValueError(f"{name} holds negative probabilities: pass probabilities, not logits")
        total = value.sum(-1)
        if not torch.allclose(total, torch.ones_like(total), atol=1e-4):
            raise ValueError(f"{name} must sum to 1 over its last dimension (got sums from {float(total.min()):.4f} "
                             f"to {float(total.max()):.4f}): pass probabilities, not logits")
    return value


def mask(value, leading_shape) -> torch.Tensor | None:
    """None, or a bool (or 0/1) tensor of the logits' leading shape; returned as bool."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"mask must be a torch.Tensor, got {type(value).__name__}")
    if tuple(value.shape) != tuple(leading_shape):
        raise ValueError(f"mask must have the logits' leading shape {tuple(leading_shape)}, got {tuple(value.shape)}")
    return value.to(torch.bool)


def log_probs(logits_: torch.Tensor, temperature_: float) -> torch.Tensor:
    """log softmax(z / T) over the last dimension, in float32 for half-precision input."""
    if logits_.dtype in (torch.float16, torch.bfloat16):
        logits_ = logits_.float()
    return F.log_softmax(logits_ / temperature_, dim=-1)


def reduce(per_position: torch.Tensor, reduction: str, mask_: torch.Tensor | None) -> torch.Tensor:
    """A logit loss's per-position values reduced: ``"batchmean"`` the mean over the (unmasked)
    positions, ``"sum"``, or ``"none"`` (masked positions 0)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if mask_ is not None:
        per_position = per_position.masked_fill(~mask_, 0.0)
    if reduction == "none":
        return per_position
    total = per_position.sum()
    if reduction == "sum":
        return total
    if mask_ is None:
        return total / max(per_position.numel(), 1)
    return total / mask_.sum().clamp_min(1).to(total.dtype)


# --------------------------------------------------------------------------- features

def features(name: str, value) -> torch.Tensor:
    """Floating-point features with a batch dimension first, (B, ...), finite; half precision as float32."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of features, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be floating-point features, got dtype {value.dtype}")
    if value.dim() < 2:
        raise ValueError(f"{name} must have a batch dimension first, shape (B, ...); got {tuple(value.shape)}")
    if _check_values and not torch.isfinite(value).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    if value.dtype in (torch.float16, torch.bfloat16):
        value = value.float()
    return value


def reduce_features(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """A feature loss's per-element (or per-example) values reduced as ``F.mse_loss`` does."""
    if reduction not in FEATURE_REDUCTIONS:
        raise ValueError(f"reduction must be one of {FEATURE_REDUCTIONS}, got {reduction!r}")
    return values if reduction == "none" else values.mean() if reduction == "mean" else values.sum()

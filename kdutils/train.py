r"""One readable training loop, for plain supervised training and for distillation.

``fit(model, x, y, ...)`` minimises cross-entropy on the labels. Give it a ``teacher`` and it
distils instead: each step feeds the same rows to both models and minimises ``loss_fn(student_logits,
teacher_logits, labels)`` (default: Hinton's ``distillation_loss`` with ``temperature``, ``alpha``).

The teacher's inputs can differ from the student's (``teacher_x``): the objective of the source
material, sum over x' in D' of KL(p_t(. | x) || p_s(. | x')), feeds the teacher the full input x
and the student its simplified x'. The teacher is frozen (eval mode, ``torch.inference_mode``), and
since nothing here is augmented, its logits are computed once, up front, for the whole training set.

Unlabeled transfer data (``transfer_x``) is appended to the training set with the label -100, so
it contributes the soft term only (and requires a teacher).

The learning rate is constant (the default, as in the MNIST-1D paper) or decays to 0 on a cosine (``schedule="cosine"``).

Returns the per-epoch history as a ``pandas.DataFrame``: epoch, train loss, and the accuracy on
each of ``eval_sets``; ``history.attrs["student_inputs"]`` keeps the first batch the model was
actually fed, to compare with deployment inputs (``kdutils.diagnose``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import runtime
from .data import batches
from .losses import distillation_loss
from .metrics import accuracy


@dataclass(eq=False)   # compared by identity, so pandas can carry it in DataFrame.attrs
class InputSample:
    """A batch of inputs exactly as the training loop fed them to the model."""
    inputs: torch.Tensor


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 4096) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, computed in batches, on ``x``'s device."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
        teacher: nn.Module | None = None, teacher_x: torch.Tensor | None = None,
        transfer_x: torch.Tensor | None = None, transfer_teacher_x: torch.Tensor | None = None,
        loss_fn: Callable | None = None, temperature: float = 4.0, alpha: float = 0.9,
        epochs: int = 10, batch_size: int = 100, lr: float = 1e-2, weight_decay: float = 0.0,
        schedule: str = "constant",
        eval_sets: dict | None = None, seed: int | None = None, progress: bool = True,
        desc: str = "train") -> pd.DataFrame:
    """Train ``model`` in place and return its per-epoch history (see the module docstring)."""
    if y is None and teacher is None:
        raise ValueError("supervised training needs labels y; pass a teacher to distil without labels")
    if y is not None and len(y) != len(x):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    if teacher_x is not None and len(teacher_x) != len(x):
        raise ValueError(f"teacher_x must pair row by row with x: {len(teacher_x)} vs {len(x)} rows")
    if transfer_x is not None and teacher is None:
        raise ValueError("transfer_x is unlabeled: it needs a teacher to provide the targets")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    seed = runtime.seed() if seed is None else seed
    gen = torch.Generator().manual_seed(seed)

    labels = y if y is not None else torch.full((len(x),), -100, dtype=torch.long, device=x.device)
    inputs = x
    if transfer_x is not None:
        inputs = torch.cat([x, transfer_x])
        labels = torch.cat([labels, torch.full((len(transfer_x),), -100, dtype=torch.long, device=x.device)])

    targets = None
    if teacher is not None:
        t_in = teacher_x if teacher_x is not None else x
        if transfer_x is not None:
            t_in = torch.cat([t_in, transfer_teacher_x if transfer_teacher_x is not None else transfer_x])
        targets = predict(teacher, t_in)
        if loss_fn is None:
            loss_fn = lambda s, t, lab: distillation_loss(s, t, lab, temperature=temperature,
                                                          alpha=alpha if y is not None else 1.0)
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(inputs) // batch_size)
    total_steps = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(  # cosine decay from lr to 0 over the whole run
        opt, (lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))) if schedule == "cosine" else (lambda step: 1.0))
    eval_sets = eval_sets or {}
    rows, fed = [], None
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        total, steps = torch.zeros((), device=inputs.device), 0
        for idx in batches(len(inputs), batch_size, generator=gen, device=inputs.device):
            batch = inputs[idx]
            if fed is None:
                fed = batch.detach().cpu().clone()     # exactly what the model was fed, for diagnosis
            logits = model(batch)
            if targets is None:
                loss = nn.functional.cross_entropy(logits, labels[idx])
            else:
                loss = loss_fn(logits, targets[idx], labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach()
            steps += 1
        row = {"epoch": epoch, "train_loss": (total / steps).item()}
        for name, (ex, ey) in eval_sets.items():
            row[f"{name}_acc"] = accuracy(predict(model, ex), ey)
        rows.append(row)
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if k != "epoch"})
    model.eval()
    history = pd.DataFrame(rows)
    history.attrs["student_inputs"] = InputSample(fed)   # the first batch the student saw (kdutils.diagnose)
    return history

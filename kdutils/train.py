r"""Every training loop of the library, in one place.

* ``fit``: one readable loop for supervised training and for distillation (below);
* ``fit_next_token``: next-token cross-entropy on sequences, the recipe of the zoo's GPT teachers;
* ``train_step`` (with its precision policy, ``precision``): the full run's fast step, data on the device,
  mixed precision, no value read back (``kdutils.fullrun`` trains with it; ``benchmarks/kd_throughput.py``
  times it); ``predict`` runs a model in eval mode.

``fit(model, x, y, ...)`` minimises cross-entropy on the labels. Give it a ``teacher`` and it
distils instead: each step feeds the same rows to both models and minimises ``loss_fn(student_logits,
teacher_logits, labels)`` (default: Hinton's ``distillation_loss`` with ``temperature``, default 4,
and ``alpha``, default 0.9, or 1 when there are no labels). Options the run would ignore (a
``temperature`` with a custom ``loss_fn``, a ``loss_fn`` without a teacher, ...) are refused with a
``ValueError``.

The teacher's inputs can differ from the student's (``teacher_x``): the objective of the source
material, sum over x' in D' of KL(p_t(. | x) || p_s(. | x')), feeds the teacher the full input x
and the student its simplified x'. The teacher is frozen (eval mode, ``torch.inference_mode``), and
since nothing here is augmented, its logits are computed once, up front, for the whole training set.

Unlabeled transfer data (``transfer_x``) is appended to the training set with the label -100, so
it contributes the soft term only (and requires a teacher).

The learning rate is constant (the default, as in the MNIST-1D paper) or decays to 0 on a cosine (``schedule="cosine"``).
The length of a run is ``epochs`` passes over the data, or exactly ``steps`` optimiser steps: to
compare arms trained on data sets of different sizes, give them the same ``steps`` (and schedule).

Returns a ``FitResult``: the per-epoch ``history`` (a ``pandas.DataFrame``: epoch, steps done, train
loss, the accuracy on each of ``eval_sets``), ``fed``, the first batch exactly as the model was fed
it (to compare with deployment inputs, ``kdutils.diagnose``), and ``steps``, the optimiser steps taken.
The model keeps ``model.kd_trained_rows``, the digests of every row it was trained on (``x`` and
``transfer_x``, over all its ``fit`` runs; ``data.row_digests``): a leak of test rows into training
can be checked from the model alone.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import runtime
from .data import batches, row_digests
from .losses import distillation_loss, skip_value_checks
from .metrics import accuracy


@dataclass
class FitResult:
    """What ``fit`` returns."""
    history: pd.DataFrame    # one row per epoch: epoch, step (steps done), train_loss, <eval set>_acc
    fed: torch.Tensor        # the first batch of inputs exactly as the loop fed them to the model
    steps: int               # optimiser steps taken
    objective: str = ""      # what the loop minimised, in words (labels only, or distillation and its settings)
    seed: int | None = None  # the seed that ordered the batches (sensors.distil also initialises its student with it)


@torch.inference_mode()
def predict(model: nn.Module, x, *, batch_size: int = 4096, autocast=None) -> torch.Tensor:
    """Logits of ``model`` in eval mode, in float32: on a tensor ``x`` (in batches of ``batch_size``,
    on ``x``'s device), or on every batch of a loader that yields ``(inputs, ...)`` tuples, such as
    ``loader.DeviceLoader``. ``autocast``: a context to run the model under (mixed precision)."""
    was_training = model.training
    model.eval()
    chunks = (x[i:i + batch_size] for i in range(0, len(x), batch_size)) if isinstance(x, torch.Tensor) else (b[0] for b in x)
    with autocast if autocast is not None else nullcontext():
        out = torch.cat([model(chunk).float() for chunk in chunks])
    model.train(was_training)
    return out


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *,
        teacher: nn.Module | None = None, teacher_x: torch.Tensor | None = None,
        transfer_x: torch.Tensor | None = None, transfer_teacher_x: torch.Tensor | None = None,
        loss_fn: Callable | None = None, temperature: float | None = None, alpha: float | None = None,
        epochs: int | None = None, steps: int | None = None, batch_size: int = 100, lr: float = 1e-2,
        weight_decay: float = 0.0, schedule: str = "constant",
        eval_sets: dict | None = None, seed: int | None = None, progress: bool = True,
        desc: str = "train") -> FitResult:
    """Train ``model`` in place for ``epochs`` (default 10) or exactly ``steps``; see the module docstring."""
    if y is None and teacher is None:
        raise ValueError("supervised training needs labels y; pass a teacher to distil without labels")
    if y is not None and len(y) != len(x):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    if teacher_x is not None and len(teacher_x) != len(x):
        raise ValueError(f"teacher_x must pair row by row with x: {len(teacher_x)} vs {len(x)} rows")
    if transfer_x is not None and teacher is None:
        raise ValueError("transfer_x is unlabeled: it needs a teacher to provide the targets")
    if epochs is not None and steps is not None:
        raise ValueError("give epochs or steps, not both")
    if (epochs is not None and epochs < 1) or (steps is not None and steps < 1):
        raise ValueError(f"epochs and steps must be >= 1, got epochs={epochs}, steps={steps}")
    if loss_fn is not None and teacher is None:
        raise ValueError("loss_fn is a distillation loss (student, teacher, labels): it needs a teacher")
    if loss_fn is not None and (temperature is not None or alpha is not None):
        raise ValueError("temperature and alpha configure the default loss; with a custom loss_fn they would be "
                         "ignored: set them inside loss_fn instead")
    if teacher is None and (temperature is not None or alpha is not None):
        raise ValueError("temperature and alpha only apply to distillation: pass a teacher, or leave them out")
    if teacher is None and teacher_x is not None:
        raise ValueError("teacher_x is the teacher's view of x: it needs a teacher")
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
            if y is None and alpha not in (None, 1.0):
                raise ValueError(f"without labels the loss is the soft term alone (alpha = 1), got alpha={alpha}")
            T = 4.0 if temperature is None else temperature
            a = 1.0 if y is None else (0.9 if alpha is None else alpha)
            loss_fn = lambda s, t, lab: distillation_loss(s, t, lab, temperature=T, alpha=a)
            objective = f"distillation: {a:g} * T^2 * KL(teacher || student) at T = {T:g} + {1 - a:g} * cross-entropy on the labels"
        else:
            objective = "distillation: a custom loss_fn(student logits, teacher logits, labels)"
    else:
        objective = "cross-entropy on the labels (no teacher)"
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(inputs) // batch_size)
    total_steps = steps if steps is not None else (epochs or 10) * steps_per_epoch
    epochs = -(-total_steps // steps_per_epoch)        # the last epoch may stop part-way when `steps` is given
    sched = torch.optim.lr_scheduler.LambdaLR(  # cosine decay from lr to 0 over the whole run
        opt, (lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))) if schedule == "cosine" else (lambda step: 1.0))
    eval_sets = eval_sets or {}
    rows, fed, done = [], None, 0
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        total, n_steps = torch.zeros((), device=inputs.device), 0
        for idx in batches(len(inputs), batch_size, generator=gen, device=inputs.device):
            if done == total_steps:
                break
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
            n_steps += 1
            done += 1
        row = {"epoch": epoch, "step": done, "train_loss": (total / n_steps).item()}
        for name, (ex, ey) in eval_sets.items():
            row[f"{name}_acc"] = accuracy(predict(model, ex), ey)
        rows.append(row)
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if k not in ("epoch", "step")})
    model.eval()
    # every row this model has been trained on, as digests (data.row_digests): a test-set leak is checkable
    model.kd_trained_rows = getattr(model, "kd_trained_rows", frozenset()) | row_digests(inputs)
    return FitResult(history=pd.DataFrame(rows), fed=fed, steps=done, objective=objective, seed=seed)


# ----------------------------------------------------------------------------- next-token training

def fit_next_token(model, batch, steps: int, *, generator: torch.Generator, lr: float = 3e-3) -> None:
    """``steps`` AdamW steps with a one-cycle schedule on next-token cross-entropy; ``batch(generator)``
    returns ``(tokens, keep)``: the sequences and a mask over ``tokens[:, :-1]`` of the positions in the loss."""
    g = generator
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    for _ in range(steps):
        tokens, keep = batch(g)
        loss = F.cross_entropy(model(tokens[:, :-1])[keep], tokens[:, 1:][keep])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


# ----------------------------------------------------------------------------- the full run's fast step
# (kdutils.fullrun trains with it; benchmarks/kd_throughput.py times it): its precision policy, then the step

def precision_name(device: torch.device) -> str:
    """``bf16`` on GPUs of compute capability >= 8.0 (Ampere on), ``fp16`` below, ``fp32`` off CUDA.

    Recent PyTorch reports bf16 as supported on older GPUs too (Colab's free T4 is 7.5), where it
    is emulated and cuDNN has no fast bf16 convolutions: there fp16 with a gradient scaler is right.
    """
    if device.type != "cuda":
        return "fp32"
    major, _ = torch.cuda.get_device_capability(device)
    return "bf16" if major >= 8 and torch.cuda.is_bf16_supported() else "fp16"


def precision(device: torch.device):
    """(autocast context, grad scaler or None, name), as chosen by ``precision_name``."""
    name = precision_name(device)
    if name == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16), None, name
    if name == "fp16":
        return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda"), name
    return nullcontext(), None, name


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x, y, *, teacher: nn.Module | None = None,
               teacher_logits: torch.Tensor | None = None, temperature: float = 4.0, alpha: float = 0.9,
               autocast=None, scaler=None) -> torch.Tensor:
    """One optimiser step on the batch ``(x, y)``; returns the loss, detached, left on the device.

    Cross-entropy on the labels; or, given the ``teacher`` (run here on the same batch, under
    ``inference_mode``) or its precomputed ``teacher_logits``, Hinton's ``distillation_loss``.
    No value is read back to the host: the step never waits for the device.
    """
    with autocast if autocast is not None else nullcontext(), skip_value_checks():
        logits = model(x)
        if teacher is None and teacher_logits is None:
            loss = F.cross_entropy(logits, y)
        else:
            if teacher_logits is None:
                with torch.inference_mode():
                    teacher_logits = teacher(x)
                teacher_logits = teacher_logits.clone()       # an ordinary tensor, usable by autograd
            loss = distillation_loss(logits, teacher_logits, y, temperature=temperature, alpha=alpha)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
    else:
        loss.backward(); opt.step()
    return loss.detach()

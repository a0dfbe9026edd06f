r"""Every training loop of the library, in one place.

* ``fit`` (supervised) and ``distil`` (from a teacher): one readable loop, ``_loop``, below both;
* ``fit_steps``: AdamW with a one-cycle schedule for a fixed number of steps on a loss the caller computes, the
  loop of the token-level notebooks; ``fit_next_token``, on it, the recipe of the zoo's GPT teachers;
* ``train_step`` (with its precision policy, ``precision``): the full run's fast step, data on the device,
  mixed precision, no value read back (``kdutils.fullrun`` trains with it; ``benchmarks/kd_throughput.py``
  times it); ``predict`` runs a model in eval mode.

``fit(model, x, y, ...)`` minimises cross-entropy on the labels. ``distil(student, x, y, teacher=...)``
feeds the same rows to both models and minimises ``loss_fn(student_logits, teacher_logits, labels)``
(default: Hinton's ``distillation_loss`` with ``temperature``, default 4, and ``alpha``, default 0.9,
or 1 when there are no labels; a ``temperature`` or ``alpha`` beside a custom ``loss_fn`` is refused,
as it would be ignored).

The teacher's inputs can differ from the student's (``teacher_x``): the objective of the source
material, sum over x' in D' of KL(p_t(. | x) || p_s(. | x')), feeds the teacher the full input x
and the student its simplified x'. The teacher is frozen (eval mode, ``torch.inference_mode``), and
since nothing here is augmented, its logits are computed once, up front, for the whole training set.
Unlabeled transfer data (``transfer_x``, the teacher's view ``transfer_teacher_x``) is appended to the
training set with the label -100, so it contributes the soft term only.

The loop's options, the same for both (``**loop``): ``epochs`` (default 10) passes over the data or
exactly ``steps`` optimiser steps (to compare arms trained on data sets of different sizes, give them the
same ``steps`` and schedule); ``batch_size`` (100); Adam with ``lr`` (1e-2) and ``weight_decay`` (0);
``schedule``: a constant learning rate (the default, as in the MNIST-1D paper) or ``"cosine"`` decay to 0;
``eval_sets`` ({name: (x, y)}, each one's accuracy per epoch); ``seed`` (batch order; default
``runtime.seed()``); ``progress``, ``desc`` (the tqdm bar).

Returns a ``FitResult``: the per-epoch ``history`` (a ``pandas.DataFrame``: epoch, steps done, train
loss, the accuracy on each of ``eval_sets``), ``fed``, the first batch exactly as the model was fed
it (to compare with deployment inputs, ``kdutils.diagnose``), and ``steps``, the optimiser steps taken.
The model keeps ``model.kd_trained_rows``, the digests of every row it was trained on (``x`` and
``transfer_x``, over all its runs; ``data.row_digests``): a leak of test rows into training can be
checked from the model alone.
"""
from __future__ import annotations

import inspect
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


def _loop(model: nn.Module, inputs: torch.Tensor, loss_at: Callable, objective: str, *, epochs: int | None = None,
          steps: int | None = None, batch_size: int = 100, lr: float = 1e-2, weight_decay: float = 0.0,
          schedule: str = "constant", eval_sets: dict | None = None, seed: int | None = None, progress: bool = True,
          desc: str = "train") -> FitResult:
    """Adam on ``loss_at(logits, idx)`` over shuffled batches of ``inputs`` (rows ``idx``); the module docstring
    says what each option does."""
    if epochs is not None and steps is not None:
        raise ValueError("give epochs or steps, not both")
    if (epochs is not None and epochs < 1) or (steps is not None and steps < 1):
        raise ValueError(f"epochs and steps must be >= 1, got epochs={epochs}, steps={steps}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    gen = torch.Generator().manual_seed(seed)
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
            loss = loss_at(model(batch), idx)
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


def _loop_options(caller: str, loop: dict) -> dict:
    """``loop`` with its seed settled; an option ``_loop`` does not know is a ``TypeError`` naming it."""
    known = [p.name for p in inspect.signature(_loop).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(loop) - set(known))
    if unknown:
        hint = (" (a teacher's options: call train.distil)" if caller == "fit" and
                set(unknown) & {"teacher", "teacher_x", "transfer_x", "transfer_teacher_x", "loss_fn", "temperature", "alpha"}
                else "")
        raise TypeError(f"{caller}() got unknown option(s) {', '.join(unknown)}{hint}; the loop's options are "
                        f"{', '.join(known)}")
    return {**loop, "seed": runtime.seed() if loop.get("seed") is None else loop["seed"]}


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **loop) -> FitResult:
    """Train ``model`` in place on cross-entropy with the labels ``y``; ``loop``: the loop's options
    (``epochs``, ``steps``, ``batch_size``, ``lr``, ``weight_decay``, ``schedule``, ``eval_sets``, ``seed``,
    ``progress``, ``desc``: the module docstring)."""
    if y is None:
        raise ValueError("supervised training needs labels y; distil from a teacher (train.distil) to train without them")
    if len(y) != len(x):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    loop = _loop_options("fit", loop)
    return _loop(model, x, lambda logits, idx: F.cross_entropy(logits, y[idx]),
                 "cross-entropy on the labels (no teacher)", **loop)


def distil(student: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, *, teacher: nn.Module,
           teacher_x: torch.Tensor | None = None, transfer_x: torch.Tensor | None = None,
           transfer_teacher_x: torch.Tensor | None = None, loss_fn: Callable | None = None,
           temperature: float | None = None, alpha: float | None = None, **loop) -> FitResult:
    """Train ``student`` in place to match the frozen ``teacher`` on the rows of ``x`` (and ``transfer_x``);
    the teacher reads ``teacher_x`` (and ``transfer_teacher_x``) where given, else the student's rows.
    ``loop``: the options of ``fit``. See the module docstring."""
    if y is not None and len(y) != len(x):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    if teacher_x is not None and len(teacher_x) != len(x):
        raise ValueError(f"teacher_x must pair row by row with x: {len(teacher_x)} vs {len(x)} rows")
    if transfer_teacher_x is not None and (transfer_x is None or len(transfer_teacher_x) != len(transfer_x)):
        raise ValueError("transfer_teacher_x is the teacher's view of transfer_x: give both, row by row")
    if loss_fn is not None and (temperature is not None or alpha is not None):
        raise ValueError("temperature and alpha configure the default loss; with a custom loss_fn they would be "
                         "ignored: set them inside loss_fn instead")
    if loss_fn is None and y is None and alpha not in (None, 1.0):
        raise ValueError(f"without labels the loss is the soft term alone (alpha = 1), got alpha={alpha}")
    loop = _loop_options("distil", loop)
    unlabeled = lambda n: torch.full((n,), -100, dtype=torch.long, device=x.device)
    labels = y if y is not None else unlabeled(len(x))
    inputs, t_in = x, (teacher_x if teacher_x is not None else x)
    if transfer_x is not None:
        inputs, labels = torch.cat([x, transfer_x]), torch.cat([labels, unlabeled(len(transfer_x))])
        t_in = torch.cat([t_in, transfer_teacher_x if transfer_teacher_x is not None else transfer_x])
    targets = predict(teacher, t_in)
    if loss_fn is None:
        T = 4.0 if temperature is None else temperature
        a = 1.0 if y is None else (0.9 if alpha is None else alpha)
        loss_fn = lambda s, t, lab: distillation_loss(s, t, lab, temperature=T, alpha=a)
        objective = f"distillation: {a:g} * T^2 * KL(teacher || student) at T = {T:g} + {1 - a:g} * cross-entropy on the labels"
    else:
        objective = "distillation: a custom loss_fn(student logits, teacher logits, labels)"
    return _loop(student, inputs, lambda logits, idx: loss_fn(logits, targets[idx], labels[idx]), objective, **loop)


# ----------------------------------------------------------------------------- next-token training

def fit_steps(model: nn.Module, loss_at: Callable[[int], torch.Tensor], steps: int, *, lr: float = 3e-3,
              desc: str | None = None, progress: bool = False) -> list[float]:
    """``steps`` AdamW steps (PyTorch's defaults: betas (0.9, 0.999), weight decay 0.01) with a one-cycle learning
    rate peaking at ``lr`` (``OneCycleLR``), each on the loss ``loss_at(step)`` returns: the loop of the course's
    token-level notebooks (06, 07, 08, 11) and of the zoo's GPT teachers. The batch, the model call and the loss
    are the caller's (``loss_at`` closes over them), and so is the model's train/eval mode. Returns each step's
    loss (read back once, at the end)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    curve = []
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        loss = loss_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        curve.append(loss.detach())
    return torch.stack(curve).tolist()


def next_token_loss(model: nn.Module, tokens: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``model``'s next-token logits on ``tokens[:, :-1]`` against ``tokens[:, 1:]``, at the
    positions where ``keep`` (a mask over ``tokens[:, :-1]``) is True."""
    return F.cross_entropy(model(tokens[:, :-1])[keep], tokens[:, 1:][keep])


def fit_next_token(model, batch, steps: int, *, generator: torch.Generator, lr: float = 3e-3) -> list[float]:
    """``fit_steps`` on ``next_token_loss``: ``batch(generator)`` returns ``(tokens, keep)`` for each step."""
    return fit_steps(model, lambda step: next_token_loss(model, *batch(generator)), steps, lr=lr)


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

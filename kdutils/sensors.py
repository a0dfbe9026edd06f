r"""The two-sensor task of notebook 05 and assignment a2: privileged inputs for the teacher only.

Every recording of MNIST-1D comes from two sensors: the *field* sensor a product ships with (the
generator's default noise) and a *lab* reference sensor (the same recording with the noise turned
off). The teacher reads both, x = [field, lab], a tensor (N, 2, 40). The deployed device has only
the field sensor; its second channel reads zero. That is the simplified input of the source
material's objective

    theta_hat = argmin_theta  sum_{x' in D'}  KL( p_t(. | x) || p_s(. | x') ),   x' = simplify(x) = [field, 0].

``distil`` is the student recipe both the lesson and the graded work use: a small two-channel CNN
distilled by ``kdutils.train.distil`` with the teacher reading x and the student reading whatever it
is given (x' in the intended pipeline, x in the mistaken one).
"""
from __future__ import annotations

import torch

from . import runtime
from .data import load_mnist1d
from .models import MNIST1DCNN
from . import train
from .train import FitResult


def two_sensors(num_samples: int = 5000, seed: int = 42, **kw):
    """(x_train, y_train, x_test, y_test) with x of shape (N, 2, 40): channel 0 field, channel 1 lab."""
    field = load_mnist1d(num_samples=num_samples, seed=seed, **kw)
    lab = load_mnist1d(num_samples=num_samples, seed=seed, corr_noise_scale=0.0, iid_noise_scale=0.0, **kw)
    if not (torch.equal(field.y_train, lab.y_train) and torch.equal(field.y_test, lab.y_test)):
        raise RuntimeError("the two sensors must record the same sequences (same generator seed)")
    return (torch.stack([field.x_train, lab.x_train], 1), field.y_train,
            torch.stack([field.x_test, lab.x_test], 1), field.y_test)


def simplify(x: torch.Tensor) -> torch.Tensor:
    """What the deployed device sees: the field channel, and zeros where the lab sensor was."""
    if x.dim() != 3 or x.shape[1] != 2:
        raise ValueError(f"expected two-sensor inputs of shape (N, 2, length), got {tuple(x.shape)}")
    return torch.stack([x[:, 0], torch.zeros_like(x[:, 1])], 1)


def student(*, seed: int, channels: int = 16) -> MNIST1DCNN:
    """The student network: the MNIST-1D CNN with two input channels (so it *can* be fed x or x')."""
    runtime.seed_everything(seed)
    return MNIST1DCNN(in_channels=2, channels=channels)


def distil(teacher, student_x, y, *, teacher_x, transfer_x=None, transfer_teacher_x=None, epochs: int = 20,
           seed: int = 0, alpha: float | None = None, temperature: float = 4.0, **kw) -> tuple[MNIST1DCNN, FitResult]:
    """A fresh ``student(seed=seed)`` distilled from ``teacher``: the teacher reads ``teacher_x`` (and
    ``transfer_teacher_x``), the student ``student_x`` (and ``transfer_x``), row by row, with a cosine
    schedule. ``y=None`` is the objective as written (pure KL, alpha = 1); labels with ``alpha`` mix in
    the hard-label term. Extra keywords go to ``kdutils.train.distil`` (e.g. ``loss_fn``, ``eval_sets``)."""
    model = student(seed=seed)
    soft = {} if "loss_fn" in kw else {"temperature": temperature, "alpha": alpha}
    result = train.distil(model, student_x, y, teacher=teacher, teacher_x=teacher_x, transfer_x=transfer_x,
                          transfer_teacher_x=transfer_teacher_x, epochs=epochs, schedule="cosine", seed=seed,
                          **soft, **kw)
    return model, result

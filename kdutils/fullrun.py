r"""The full teacher -> student run of notebook 07, fast on a GPU and resumable anywhere.

    python -m kdutils.fullrun --dataset cifar10 --checkpoint-dir build/ckpt
    python -m kdutils.fullrun --dataset digits32            # offline CPU fallback, same code path

In the style of KellerJordan/cifar10-airbench:

* the whole dataset lives on the device as uint8, read once; normalisation and augmentation
  (random crop with 4-pixel padding, horizontal flip) happen on the device, per batch, with no
  DataLoader and no Python work per image;
* convolutions run in ``channels_last`` under mixed precision (bf16 from compute capability 8.0, else fp16
  with a gradient scaler; fp32 on the CPU);
* the teacher runs under ``torch.inference_mode`` on the *same augmented batch* as the student
  (or, with augmentation off, its logits are computed once for the whole training set).

Each model is checkpointed after every epoch, atomically (write, then rename). A rerun with the
same configuration resumes an unfinished model or reuses a finished one, so a disconnect loses at
most one epoch. A corrupt checkpoint, or one made with another configuration, stops the run with
an error naming the file; it is never silently overwritten.
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import metrics, runtime
from .files import atomic_write, writable_folder
from .losses import distillation_loss, skip_value_checks

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class CheckpointError(RuntimeError):
    pass


class DatasetUnavailable(RuntimeError):
    pass


# ----------------------------------------------------------------------------- data on disk

def read_cifar10(root: str | os.PathLike):
    """Read CIFAR-10 from torchvision's on-disk layout (``root/cifar-10-batches-py/``).

    Returns uint8 ``(N, 3, 32, 32)`` images and int64 labels for train (data_batch_1..5) and test.
    """
    folder = Path(root) / "cifar-10-batches-py"
    if not folder.is_dir():
        raise DatasetUnavailable(f"no CIFAR-10 under {folder}")

    def load(names):
        xs, ys = [], []
        for name in names:
            path = folder / name
            if not path.exists():
                raise DatasetUnavailable(f"CIFAR-10 file missing: {path}")
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3072:
                raise DatasetUnavailable(f"{path} is not a CIFAR-10 batch (data shape {data.shape})")
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    x_tr, y_tr = load([f"data_batch_{i}" for i in range(1, 6)])
    x_te, y_te = load(["test_batch"])
    return x_tr, y_tr, x_te, y_te


def load_cifar10(root: str | os.PathLike, *, download: bool = True):
    """CIFAR-10 via torchvision's download (where there is internet), then ``read_cifar10``."""
    try:
        return read_cifar10(root)
    except DatasetUnavailable:
        if not download:
            raise
    try:
        import torchvision
        torchvision.datasets.CIFAR10(root, train=True, download=True)
        torchvision.datasets.CIFAR10(root, train=False, download=True)
    except Exception as exc:  # no internet, blocked host, full disk, ...
        raise DatasetUnavailable(f"CIFAR-10 is not under {root} and could not be downloaded "
                                 f"({type(exc).__name__}: {str(exc)[:120]})") from None
    return read_cifar10(root)


def load_digits32():
    """The embedded 8x8 digits as CIFAR-shaped uint8 images (3 x 32 x 32), for the offline fallback."""
    from .data import load_digits

    d = load_digits(seed=0)
    to32 = lambda x: (F.interpolate(x, size=32, mode="bilinear", align_corners=False).clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return to32(d.x_train), d.y_train, to32(d.x_test), d.y_test


# ----------------------------------------------------------------------------- data on the device

class DeviceLoader:
    """Batches of a uint8 image tensor kept on the device; normalise and augment on the device.

    One pass (an "epoch") goes ``repeats`` times through the images, each time in a new order."""

    def __init__(self, images, labels, *, batch_size: int, device, augment: bool, shuffle: bool,
                 mean=None, std=None, seed: int = 0, drop_last: bool = False, repeats: int = 1):
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.device = torch.device(device)
        self.images = images.to(self.device)                       # read once, kept as uint8
        self.labels = labels.to(self.device)
        if mean is None or std is None:   # per-channel statistics, one channel at a time (no float copy of it all)
            stats = [torch.std_mean(self.images[:, c].float() / 255) for c in range(self.images.shape[1])]
            std = torch.stack([sd for sd, _ in stats]) if std is None else std
            mean = torch.stack([m for _, m in stats]) if mean is None else mean
        self.mean = torch.as_tensor(mean, device=self.device, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(std, device=self.device, dtype=torch.float32).view(1, -1, 1, 1)
        self.batch_size, self.augment, self.shuffle, self.drop_last = batch_size, augment, shuffle, drop_last
        self.repeats = repeats
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self):
        n = len(self.images)
        return self.repeats * (n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size))

    def normalise(self, x_uint8):
        return ((x_uint8.float() / 255 - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def augment_batch(self, x):
        """Random crop with 4-pixel zero padding and a random horizontal flip, per image, on the device."""
        B, C, H, W = x.shape
        padded = F.pad(x, (4, 4, 4, 4))
        dy = torch.randint(0, 9, (B,), device=x.device, generator=self.generator)
        dx = torch.randint(0, 9, (B,), device=x.device, generator=self.generator)
        rows = (dy[:, None] + torch.arange(H, device=x.device))[:, :, None]          # (B, H, 1)
        cols = (dx[:, None] + torch.arange(W, device=x.device))[:, None, :]          # (B, 1, W)
        crop = padded.permute(0, 2, 3, 1)[torch.arange(B, device=x.device)[:, None, None], rows, cols]  # (B, H, W, C)
        crop = crop.permute(0, 3, 1, 2)
        flip = torch.rand(B, device=x.device, generator=self.generator) < 0.5
        return torch.where(flip[:, None, None, None], crop.flip(3), crop).contiguous(memory_format=torch.channels_last)

    def __iter__(self):
        n = len(self.images)
        stop = n - n % self.batch_size if self.drop_last else n
        for _ in range(self.repeats):
            order = torch.randperm(n, device=self.device, generator=self.generator) if self.shuffle else torch.arange(n, device=self.device)
            for i in range(0, stop, self.batch_size):
                idx = order[i:i + self.batch_size]
                x = self.normalise(self.images[idx])
                yield (self.augment_batch(x) if self.augment else x), self.labels[idx], idx


# ----------------------------------------------------------------------------- models

def conv_bn(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU())


class ConvNet(nn.Module):
    """An airbench-style net: a stem, then per width (conv, 2x2 max-pool, conv), global max-pool, linear."""

    def __init__(self, widths=(64, 256, 256), num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        layers, c = [conv_bn(in_channels, widths[0])], widths[0]
        for w in widths:
            layers += [conv_bn(c, w), nn.MaxPool2d(2), conv_bn(w, w)]
            c = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.head(self.body(x).amax(dim=(2, 3)))


# ----------------------------------------------------------------------------- configuration

@dataclass
class RunConfig:
    dataset: str = "cifar10"                       # cifar10 | digits32
    teacher_widths: tuple = (64, 256, 256)
    student_widths: tuple = (16, 64, 64)
    teacher_epochs: int = 10
    student_epochs: int = 10
    batch_size: int = 512
    lr: float = 0.2
    weight_decay: float = 5e-4
    temperature: float = 4.0
    alpha: float = 0.9
    augment: bool = True
    seed: int = 0
    n_train: int | None = None                     # a subset, for smoke runs
    n_labeled: int | None = None                   # only the first n_labeled images have labels (see run)
    compile: bool = False

    @classmethod
    def for_scale(cls, scale: str, dataset: str, **overrides) -> "RunConfig":
        presets = {
            "gpu": dict(),
            "cpu": dict(teacher_widths=(32, 64, 128), student_widths=(8, 16, 32), teacher_epochs=12,
                        student_epochs=12, batch_size=128, lr=0.1),
            "smoke": dict(teacher_widths=(16, 32, 32), student_widths=(8, 8, 16), teacher_epochs=2,
                          student_epochs=2, batch_size=64, lr=0.1, n_train=256),
        }
        if scale not in presets:
            raise ValueError(f"scale must be one of {sorted(presets)}, got {scale!r}")
        if dataset == "digits32" and scale != "gpu":
            # the CPU fallback: 1,347 easy images; the students have the labels of only a few of them,
            # the teacher (trained with all) labels the rest for the distilled one
            presets[scale]["n_labeled"] = 64 if scale == "smoke" else 100
        return cls(dataset=dataset, **{**presets[scale], **overrides})

    def model_config(self, role: str) -> dict:
        """What a checkpoint of ``role`` must agree with to be resumed."""
        keys = ["dataset", "batch_size", "lr", "weight_decay", "augment", "seed", "n_train", "n_labeled"]
        out = {k: getattr(self, k) for k in keys}
        if role == "teacher":
            out.update(widths=list(self.teacher_widths), epochs=self.teacher_epochs)
        else:
            out.update(widths=list(self.student_widths), epochs=self.student_epochs)
            if role == "distilled":
                out.update(temperature=self.temperature, alpha=self.alpha, teacher_widths=list(self.teacher_widths),
                           teacher_epochs=self.teacher_epochs)
        return out


# ----------------------------------------------------------------------------- checkpoints

CHECKPOINT_KEYS = frozenset({"config", "model", "opt", "sched", "loader_rng", "history", "epoch", "seconds"})


def save_checkpoint(path: Path, state: dict):
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, expected_config: dict) -> dict | None:
    """The checkpoint at ``path`` (None if there is none); a clear error if corrupt or mismatched."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        reason = " ".join(str(exc).split())
        reason = reason if len(reason) <= 160 else reason[:160].rsplit(" ", 1)[0] + " ..."
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: {reason}); "
                              "it was left untouched: move it away or pass another --checkpoint-dir") from None
    missing = sorted(CHECKPOINT_KEYS - set(state)) if isinstance(state, dict) else None
    if missing is None or missing:
        what = f"it lacks {missing}" if missing else f"it holds a {type(state).__name__}, not a dictionary"
        raise CheckpointError(f"checkpoint {path} is not a kdutils.fullrun checkpoint ({what}); it was left untouched: "
                              "move it away or pass another --checkpoint-dir")
    if state["config"] != expected_config:
        diff = {k: (state["config"].get(k), expected_config.get(k)) for k in set(state["config"]) | set(expected_config)
                if state["config"].get(k) != expected_config.get(k)}
        raise CheckpointError(f"checkpoint {path} was made with another configuration {diff} (saved, requested); "
                              "it was left untouched: pass another --checkpoint-dir to start afresh")
    return state


# ----------------------------------------------------------------------------- training

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


@torch.inference_mode()
def predict(model, loader: DeviceLoader):
    model.eval()
    autocast, _, _ = precision(loader.device)
    outs = []
    with autocast:
        for x, _, _ in loader:
            outs.append(model(x).float())
    return torch.cat(outs)


def train_model(role: str, model: nn.Module, train_loader: DeviceLoader, test_loader: DeviceLoader, cfg: RunConfig, *,
                checkpoint_dir: Path, teacher: nn.Module | None = None, progress: bool = True, name: str | None = None):
    """Train (or resume, or reuse) one model; returns (model, history DataFrame, info dict).

    ``role`` is teacher, scratch or distilled; ``name`` (default: the role) names its checkpoint file."""
    name = name or role
    device = train_loader.device
    epochs = cfg.teacher_epochs if role == "teacher" else cfg.student_epochs
    model = model.to(device).to(memory_format=torch.channels_last)
    path = Path(checkpoint_dir) / f"{name}.pt"
    expected = cfg.model_config(role)
    state = load_checkpoint(path, expected)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    steps = epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.2,
                                                anneal_strategy="linear", cycle_momentum=False)
    autocast, scaler, prec = precision(device)
    history, start_epoch, train_seconds = [], 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        train_loader.generator.set_state(state["loader_rng"])
        history, start_epoch, train_seconds = state["history"], state["epoch"], state["seconds"]
    step_fn = model if not cfg.compile else torch.compile(model)
    fixed_targets = None
    if teacher is not None:
        teacher.eval()
        if not cfg.augment:  # no augmentation: the teacher's logits never change, compute them once
            plain = DeviceLoader(train_loader.images.cpu(), train_loader.labels.cpu(), batch_size=1024, device=device,
                                 augment=False, shuffle=False, mean=train_loader.mean.flatten(), std=train_loader.std.flatten())
            fixed_targets = predict(teacher, plain)
    bar = tqdm(range(start_epoch, epochs), desc=name, initial=start_epoch, total=epochs, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, seen, total = time.perf_counter(), 0, torch.zeros((), device=device)
        for x, y, idx in train_loader:
            with autocast, skip_value_checks():   # no device->host reads inside the step
                logits = step_fn(x)
                if teacher is None:
                    loss = F.cross_entropy(logits, y)
                else:
                    if fixed_targets is not None:
                        t_logits = fixed_targets[idx]
                    else:
                        with torch.inference_mode():
                            t_logits = teacher(x)
                        t_logits = t_logits.clone()
                    loss = distillation_loss(logits, t_logits, y, temperature=cfg.temperature, alpha=cfg.alpha)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
            else:
                loss.backward(); opt.step()
            sched.step()
            total += loss.detach().float()
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        test_acc = metrics.accuracy(predict(model, test_loader), test_loader.labels)
        history.append({"epoch": epoch + 1, "train_loss": (total / len(train_loader)).item(), "test_acc": test_acc,
                        "images_per_s": seen / seconds})
        bar.set_postfix(loss=round(history[-1]["train_loss"], 3), acc=round(test_acc, 3), img_s=int(seen / seconds))
        save_checkpoint(path, {"config": expected, "model": model.state_dict(), "opt": opt.state_dict(),
                               "sched": sched.state_dict(), "loader_rng": train_loader.generator.get_state(),
                               "epoch": epoch + 1, "history": history, "seconds": train_seconds})
    info = {"precision": prec, "train_seconds": train_seconds, "resumed_from_epoch": start_epoch,
            "images_per_s": float(np.mean([h["images_per_s"] for h in history])) if history else float("nan")}
    return model.eval(), pd.DataFrame(history), info


def run(cfg: RunConfig, *, checkpoint_dir: str | os.PathLike, data_root: str | os.PathLike = "data",
        device=None, progress: bool = True, student_seeds=None) -> dict:
    """Teacher, scratch student, distilled student; returns the results table, histories and logits.

    The teacher is trained once (``cfg.seed``). ``student_seeds`` (default: ``cfg.seed`` alone) trains
    the scratch and distilled students once per seed (its initial weights and its batches), so that
    ``out["seeds"]`` can say whether distillation beat scratch by more than the seed-to-seed noise;
    ``table``, ``histories`` and ``logits`` are those of the first seed.

    ``cfg.n_labeled``: the students have the labels of only the first ``n_labeled`` training images,
    as when a team distils a teacher trained elsewhere with every label. The teacher trains on all
    the labels; the scratch student on the labeled few; the distilled student on every image, the
    others unlabeled (label -100: the soft term only), as with notebook 03's transfer set. Every
    model takes the same number of optimiser steps per epoch: the scratch student goes through its
    few images several times per epoch (about as many batches as all the images make).
    """
    device = torch.device(device) if device is not None else runtime.device()
    if cfg.dataset == "cifar10":
        x_tr, y_tr, x_te, y_te = load_cifar10(data_root)
    elif cfg.dataset == "digits32":
        x_tr, y_tr, x_te, y_te = load_digits32()
    else:
        raise ValueError(f"dataset must be 'cifar10' or 'digits32', got {cfg.dataset!r}")
    if cfg.n_train:
        x_tr, y_tr = x_tr[:cfg.n_train], y_tr[:cfg.n_train]
    x_tr, y_tr = x_tr.to(device), y_tr.to(device)     # on the device once: every loader below shares it
    seeds = [int(s) for s in (student_seeds if student_seeds is not None else [cfg.seed])]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"student_seeds must be distinct seeds, at least one, got {student_seeds!r}")

    n_lab = len(x_tr) if cfg.n_labeled is None else cfg.n_labeled
    if not 0 < n_lab <= len(x_tr):
        raise ValueError(f"n_labeled must be in [1, {len(x_tr)}] (the training images), got {cfg.n_labeled}")
    y_few = y_tr.clone()
    y_few[n_lab:] = -100                                  # the students' view: most images unlabeled
    stats = DeviceLoader(x_tr, y_tr, batch_size=cfg.batch_size, device=device, augment=False, shuffle=False)

    def loader(seed, data, repeats=1):
        x, y = {"teacher": (x_tr, y_tr), "scratch": (x_tr[:n_lab], y_tr[:n_lab]), "distilled": (x_tr, y_few)}[data]
        return DeviceLoader(x, y, batch_size=cfg.batch_size, device=device, augment=cfg.augment, shuffle=True,
                            seed=seed, drop_last=len(x) > cfg.batch_size, repeats=repeats,
                            mean=stats.mean.flatten(), std=stats.std.flatten())

    # an epoch is the same number of steps for every model: the scratch student, with its few labeled
    # images, goes through them `passes` times per epoch (1 when every image is labeled)
    passes = max(1, round(len(loader(cfg.seed, "teacher")) / len(loader(cfg.seed, "scratch"))))
    test_loader = DeviceLoader(x_te, y_te, batch_size=1024, device=device, augment=False, shuffle=False,
                               mean=stats.mean.flatten(), std=stats.std.flatten())
    labels = y_te.to(device)
    results, per_seed, histories, logits, models_ = [], [], {}, {}, {}
    jobs = [("teacher", cfg.seed)] + [(role, s) for s in seeds for role in ("scratch", "distilled")]
    for role, seed in jobs:
        run_cfg = cfg if seed == cfg.seed else replace(cfg, seed=seed)
        first = seed == seeds[0] or role == "teacher"
        torch.manual_seed(seed)
        model = ConvNet(cfg.teacher_widths if role == "teacher" else cfg.student_widths)
        train_loader = loader(seed, role, repeats=passes if role == "scratch" else 1)
        model, hist, info = train_model(role, model, train_loader, test_loader,
                                        run_cfg, checkpoint_dir=Path(checkpoint_dir), progress=progress,
                                        teacher=models_["teacher"] if role == "distilled" else None,
                                        name=role if seed == cfg.seed else f"{role}-seed{seed}")
        z = predict(model, test_loader)
        row = {"model": role, "parameters": sum(p.numel() for p in model.parameters()),
               "accuracy": metrics.accuracy(z, labels),
               "agreement with teacher": metrics.top1_agreement(z, logits["teacher"]) if role != "teacher" else 1.0}
        per_seed.append({"seed": seed, **row})
        if first:
            models_[role], histories[role], logits[role] = model, hist, z
            results.append({**row, "train seconds": info["train_seconds"], "images/s": info["images_per_s"],
                            "precision": info["precision"], "resumed from epoch": info["resumed_from_epoch"]})
    return {"table": pd.DataFrame(results).set_index("model"), "seeds": pd.DataFrame(per_seed),
            "histories": histories, "logits": {k: v.cpu() for k, v in logits.items()}, "labels": y_te.cpu(),
            "config": asdict(cfg), "student_seeds": seeds, "teacher_model": models_["teacher"],
            "student_model": models_["distilled"], "device": str(device)}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kdutils.fullrun", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cifar10", choices=["cifar10", "digits32"])
    ap.add_argument("--scale", default=None, choices=["gpu", "cpu", "smoke"],
                    help="model size and epochs (default: gpu on a GPU, cpu otherwise, smoke with KD_PROFILE=smoke)")
    ap.add_argument("--checkpoint-dir", default=str(runtime.repo_root() / "build" / "checkpoints"))
    ap.add_argument("--data-root", default=str(runtime.repo_root() / "data"))
    ap.add_argument("--epochs", type=_positive_int, default=None, help="override teacher and student epochs (>= 1)")
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the trained model")
    args = ap.parse_args(argv)
    try:   # every check before any work: a mistake costs nothing
        runtime.check_environment()
        checkpoint_dir = writable_folder(args.checkpoint_dir, "--checkpoint-dir")
        data_root = writable_folder(args.data_root, "--data-root") if args.dataset == "cifar10" else Path(args.data_root)
        scale = args.scale or runtime.scale(smoke="smoke", full="cpu", gpu="gpu")
        over = {"augment": not args.no_augment, "compile": args.compile, "seed": runtime.seed()}
        if args.epochs is not None:
            over.update(teacher_epochs=args.epochs, student_epochs=args.epochs)
        cfg = RunConfig.for_scale(scale, args.dataset, **over)
    except ValueError as exc:   # runtime.ConfigError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        out = run(cfg, checkpoint_dir=checkpoint_dir, data_root=data_root)
    except (CheckpointError, DatasetUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(out["table"].round(4).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())

r"""The full teacher -> student run of notebook 09, fast on a GPU, resumable anywhere, on one or several devices.

    python -m kdutils.fullrun --dataset cifar10 --checkpoint-dir build/ckpt
    python -m kdutils.fullrun --dataset digits32            # offline CPU fallback, same code path
    torchrun --nproc_per_node=4 -m kdutils.fullrun --dataset cifar10    # four GPUs (or CPU processes)

In the style of KellerJordan/cifar10-airbench:

* the whole dataset lives on the device as uint8, read once (``kdutils.loader.DeviceLoader``);
  normalisation and augmentation (random crop with 4-pixel padding, horizontal flip) happen on the
  device, per batch, with no DataLoader and no Python work per image;
* convolutions run in ``channels_last`` under mixed precision (bf16 from compute capability 8.0, else fp16
  with a gradient scaler; fp32 on the CPU);
* every model is trained by one function, ``kdutils.train.train_step`` (the throughput benchmark times
  that same function); the teacher runs under ``torch.inference_mode`` on the *same augmented batch* as the
  student (or, with augmentation off, its logits are computed once for the whole training set).

Each model is checkpointed after every epoch, atomically, and loaded safely (``kdutils.checkpoint``).
A rerun with the same configuration resumes an unfinished model or reuses a finished one, so a
disconnect loses at most one epoch. A corrupt checkpoint, one made with another configuration, or
one carrying Python objects stops the run with an error naming the file; it is never overwritten.

**Several processes** (``torchrun --nproc_per_node=N``; ``torch.distributed`` with
DistributedDataParallel: NCCL on GPUs, gloo on CPUs). Each process holds its shard of the training
images on its device (every N-th image), takes ``batch_size / N`` of them per step, so that one step
of N processes sees one global batch of ``batch_size`` as a single process does, and computes the
teacher's logits on its own batch. DDP averages the gradients. Rank 0 alone writes checkpoints
(each process's batch-order state gathered into them); every process resumes from them. The
training loss and images/s are reduced across processes; one progress bar (rank 0). A single
process runs exactly as before: nothing here needs ``torchrun``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import metrics, runtime
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import DatasetUnavailable, load_cifar10, load_digits32
from .files import atomic_write, writable_folder
from .loader import DeviceLoader
from .models import ConvNet
from .train import precision, predict, train_step


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

    def model_config(self, role: str, *, world_size: int = 1) -> dict:
        """What a checkpoint of ``role`` must agree with to be resumed (the number of processes too,
        when there are several: each one's shard and batch order are in the checkpoint)."""
        keys = ["dataset", "batch_size", "lr", "weight_decay", "augment", "seed", "n_train", "n_labeled"]
        out = {k: getattr(self, k) for k in keys}
        if world_size > 1:
            out["world_size"] = world_size
        if role == "teacher":
            out.update(widths=list(self.teacher_widths), epochs=self.teacher_epochs)
        else:
            out.update(widths=list(self.student_widths), epochs=self.student_epochs)
            if role == "distilled":
                out.update(temperature=self.temperature, alpha=self.alpha, teacher_widths=list(self.teacher_widths),
                           teacher_epochs=self.teacher_epochs)
        return out


# ----------------------------------------------------------------------------- processes

def processes() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless a process group is running."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_processes() -> torch.device | None:
    """Under ``torchrun`` with more than one process: join the process group and return this
    process's device (``cuda:LOCAL_RANK`` with NCCL where there are GPUs, else the CPU with gloo).
    None when there is a single process: the caller picks the device as usual."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if runtime.device().type == "cuda" and torch.cuda.device_count() > local_rank:     # KD_DEVICE=cpu keeps them on the CPU
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return torch.device("cpu")


def _sum(values: list[float], device) -> list[float]:
    """Each value summed over the processes (unchanged in a single process)."""
    if processes()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def train_model(role: str, model: nn.Module, train_loader: DeviceLoader, test_loader: DeviceLoader, cfg: RunConfig, *,
                checkpoint_dir: Path, teacher: nn.Module | None = None, progress: bool = True, name: str | None = None):
    """Train (or resume, or reuse) one model; returns (model, history DataFrame, info dict).

    ``role`` is teacher, scratch or distilled; ``name`` (default: the role) names its checkpoint file.
    In several processes, ``train_loader`` holds this process's shard and the model is wrapped in
    DistributedDataParallel for the steps; the returned model is the plain module."""
    name = name or role
    device = train_loader.device
    rank, world = processes()
    epochs = cfg.teacher_epochs if role == "teacher" else cfg.student_epochs
    model = model.to(device).to(memory_format=torch.channels_last)
    net = model if world == 1 else DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    path = Path(checkpoint_dir) / f"{name}.pt"
    expected = cfg.model_config(role, world_size=world)
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
        train_loader.generator.set_state(state["loader_rng"] if world == 1 else state["loader_rng"][rank])
        history, start_epoch, train_seconds = state["history"], state["epoch"], state["seconds"]
    step_fn = net if not cfg.compile else torch.compile(net)
    fixed_targets = None
    if teacher is not None:
        teacher.eval()
        if not cfg.augment:  # no augmentation: the teacher's logits never change, compute them once
            plain = DeviceLoader(train_loader.images, train_loader.labels, batch_size=1024, device=device,
                                 augment=False, shuffle=False, mean=train_loader.mean.flatten(), std=train_loader.std.flatten())
            fixed_targets = predict(teacher, plain, autocast=autocast)
    bar = tqdm(range(start_epoch, epochs), desc=name, initial=start_epoch, total=epochs,
               disable=not progress or rank != 0, leave=False)
    for epoch in bar:
        model.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0, seen, total = time.perf_counter(), 0, torch.zeros((), device=device)
        for x, y, idx in train_loader:
            total += train_step(step_fn, opt, x, y, teacher=teacher if fixed_targets is None else None,
                                teacher_logits=None if fixed_targets is None else fixed_targets[idx],
                                temperature=cfg.temperature, alpha=cfg.alpha, autocast=autocast, scaler=scaler).float()
            sched.step()
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        loss_sum, seen = _sum([total.item(), seen], device)          # over every process's batches
        if world > 1:
            for buffer in model.buffers():      # BatchNorm statistics: every process takes rank 0's, as the checkpoint does
                dist.broadcast(buffer, 0)
        train_seconds += seconds
        test_acc = metrics.accuracy(predict(model, test_loader, autocast=autocast), test_loader.labels)
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / (world * len(train_loader)), "test_acc": test_acc,
                        "images_per_s": seen / seconds})
        bar.set_postfix(loss=round(history[-1]["train_loss"], 3), acc=round(test_acc, 3), img_s=int(seen / seconds))
        rng = train_loader.generator.get_state()
        if world > 1:
            rngs = [None] * world
            dist.all_gather_object(rngs, rng)                # every process's batch order, for resuming
            rng = rngs
        if rank == 0:
            save_checkpoint(path, {"config": expected, "model": model.state_dict(), "opt": opt.state_dict(),
                                   "sched": sched.state_dict(), "loader_rng": rng,
                                   "epoch": epoch + 1, "history": history, "seconds": train_seconds})
        if world > 1:
            dist.barrier()                                   # nobody moves on before the checkpoint is written
    info = {"precision": prec, "train_seconds": train_seconds, "resumed_from_epoch": start_epoch,
            "images_per_s": float(np.mean([h["images_per_s"] for h in history])) if history else float("nan")}
    return model.eval(), pd.DataFrame(history), info


def run(cfg: RunConfig, *, checkpoint_dir: str | os.PathLike, data_root: str | os.PathLike = "data",
        device=None, progress: bool = True, student_seeds=None) -> dict:
    """Teacher, scratch student, distilled student; returns the results table, histories and logits.

    The teacher is trained once (``cfg.seed``). ``student_seeds`` (default: ``cfg.seed`` alone) trains
    the scratch and distilled students once per seed (its initial weights and its batches), so that
    ``out["seeds"]`` can say whether distillation beat scratch by more than the seed-to-seed noise
    (``out["per_class"]``: each model's test accuracy per class, per seed); ``table``, ``histories``
    and ``logits`` are those of the first seed.

    ``cfg.n_labeled``: the students have the labels of only the first ``n_labeled`` training images,
    as when a team distils a teacher trained elsewhere with every label. The teacher trains on all
    the labels; the scratch student on the labeled few; the distilled student on every image, the
    others unlabeled (label -100: the soft term only), as with notebook 03's transfer set. Every
    model takes the same number of optimiser steps per epoch: the scratch student goes through its
    few images several times per epoch (about as many batches as all the images make).

    In several processes (``torchrun``), each process trains on every N-th training image (the
    images are first cut to a multiple of N) with ``batch_size / N`` per step; every process gets
    the results.
    """
    device = torch.device(device) if device is not None else runtime.device()
    rank, world = processes()
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the {world} processes (each takes an equal part)")
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
    batch = cfg.batch_size // world

    def loader(seed, data, repeats=1):
        x, y = {"teacher": (x_tr, y_tr), "scratch": (x_tr[:n_lab], y_tr[:n_lab]), "distilled": (x_tr, y_few)}[data]
        if world > 1:   # this process's shard: every world-th image, the same number in every process
            keep = len(x) - len(x) % world
            x, y, seed = x[rank:keep:world], y[rank:keep:world], seed + 1000 * rank
        return DeviceLoader(x, y, batch_size=batch, device=device, augment=cfg.augment, shuffle=True,
                            seed=seed, drop_last=len(x) > batch, repeats=repeats,
                            mean=stats.mean.flatten(), std=stats.std.flatten())

    # an epoch is the same number of steps for every model: the scratch student, with its few labeled
    # images, goes through them `passes` times per epoch (1 when every image is labeled)
    passes = max(1, round(len(loader(cfg.seed, "teacher")) / len(loader(cfg.seed, "scratch"))))
    test_loader = DeviceLoader(x_te, y_te, batch_size=1024, device=device, augment=False, shuffle=False,
                               mean=stats.mean.flatten(), std=stats.std.flatten())
    labels = y_te.to(device)
    results, per_seed, per_class, histories, logits, models_ = [], [], [], {}, {}, {}
    jobs = [("teacher", cfg.seed)] + [(role, s) for s in seeds for role in ("scratch", "distilled")]
    for role, seed in jobs:
        run_cfg = cfg if seed == cfg.seed else replace(cfg, seed=seed)
        first = seed == seeds[0] or role == "teacher"
        torch.manual_seed(seed)
        model = ConvNet(cfg.teacher_widths if role == "teacher" else cfg.student_widths)   # the same in every process
        train_loader = loader(seed, role, repeats=passes if role == "scratch" else 1)
        model, hist, info = train_model(role, model, train_loader, test_loader,
                                        run_cfg, checkpoint_dir=Path(checkpoint_dir), progress=progress,
                                        teacher=models_["teacher"] if role == "distilled" else None,
                                        name=role if seed == cfg.seed else f"{role}-seed{seed}")
        z = predict(model, test_loader, autocast=precision(device)[0])
        row = {"model": role, "parameters": sum(p.numel() for p in model.parameters()),
               "accuracy": metrics.accuracy(z, labels),
               "agreement with teacher": metrics.top1_agreement(z, logits["teacher"]) if role != "teacher" else 1.0}
        per_seed.append({"seed": seed, **row})
        per_class += [{"seed": seed, "model": role, "class": c, "accuracy": (z.argmax(-1)[labels == c] == c).float().mean().item()}
                      for c in range(int(labels.max()) + 1)]
        if first:
            models_[role], histories[role], logits[role] = model, hist, z
            results.append({**row, "train seconds": info["train_seconds"], "images/s": info["images_per_s"],
                            "precision": info["precision"], "resumed from epoch": info["resumed_from_epoch"]})
    return {"table": pd.DataFrame(results).set_index("model"), "seeds": pd.DataFrame(per_seed),
            "per_class": pd.DataFrame(per_class),
            "histories": histories, "logits": {k: v.cpu() for k, v in logits.items()}, "labels": y_te.cpu(),
            "config": asdict(cfg), "student_seeds": seeds, "teacher_model": models_["teacher"],
            "student_model": models_["distilled"], "device": str(device), "processes": world}


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
    ap.add_argument("--student-seeds", type=int, nargs="+", default=None, metavar="SEED",
                    help="train the two students once per seed (default: the run's seed alone)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write the results (tables, processes, seconds) to FILE")
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
    device = init_processes()          # under torchrun: join the others; None in a single process
    try:
        t0 = time.perf_counter()
        out = run(cfg, checkpoint_dir=checkpoint_dir, data_root=data_root, device=device, student_seeds=args.student_seeds)
        seconds = time.perf_counter() - t0
    except (CheckpointError, DatasetUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if processes()[1] > 1:
            dist.destroy_process_group()
    if out["processes"] == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(out["table"].round(4).to_string())
        if args.json:
            record = {"processes": out["processes"], "device": out["device"], "seconds": seconds, "config": out["config"],
                      "table": out["table"].reset_index().to_dict("records"), "seeds": out["seeds"].to_dict("records")}
            atomic_write(Path(args.json), lambda tmp: tmp.write_text(json.dumps(record, indent=1, default=str)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Distillation throughput: the usual tutorial loop vs the course's loop, side by side, same device.

    python benchmarks/kd_throughput.py [--scale cpu|gpu] [--steps 30]

(a) reference: a torchvision-style Dataset over uint8 images with CPU transforms (RandomCrop with
    padding, RandomHorizontalFlip, ToTensor, Normalize) and a DataLoader, fp32, teacher under
    torch.no_grad, as in PyTorch's knowledge-distillation tutorial;
(b) course: the full run's own training step (``train.train_step``, the function the run trains with)
    on kdutils.loader's uint8 data resident on the device, augmentation on the device, channels_last,
    mixed precision on a GPU, teacher under torch.inference_mode.

Both distil the same student from the same teacher on CIFAR-shaped random data generated here, for
the same number of steps after a warm-up. Prints images/s of each, the ratio (b)/(a), and the
ratio of a distillation step's time to a plain student step's time in the course loop.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kdutils import fullrun, loader, models, runtime, train  # noqa: E402
from kdutils.losses import distillation_loss  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference_loop(teacher, student, images, labels, *, batch_size, steps, device, workers):
    from torchvision import transforms

    tf = transforms.Compose([transforms.ToPILImage(), transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return tf(images[i]), labels[i]

    loader = torch.utils.data.DataLoader(DS(), batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    teacher.eval(); student.train()
    done, seen, t0 = 0, 0, None
    while done < steps + 3:
        for x, y in loader:
            if done == 3:
                sync(device); t0 = time.perf_counter(); seen = 0
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.no_grad():
                t_logits = teacher(x)
            loss = distillation_loss(student(x), t_logits, y, temperature=4.0, alpha=0.9)
            opt.zero_grad(); loss.backward(); opt.step()
            done += 1; seen += len(y)
            if done >= steps + 3:
                break
    sync(device)
    return seen / (time.perf_counter() - t0)


def course_loop(teacher, student, images, labels, *, batch_size, steps, device, distil=True):
    """The run's own loop: kdutils.train.train_step on kdutils.loader.DeviceLoader batches."""
    batches = loader.DeviceLoader(images, labels, batch_size=batch_size, device=device, augment=True, shuffle=True,
                                  drop_last=True)
    teacher = teacher.to(memory_format=torch.channels_last).eval()
    student = student.to(memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    autocast, scaler, _ = train.precision(device)
    done, seen, t0 = 0, 0, None
    while done < steps + 3:
        for x, y, _ in batches:
            if done == 3:
                sync(device); t0 = time.perf_counter(); seen = 0
            train.train_step(student, opt, x, y, teacher=teacher if distil else None, temperature=4.0, alpha=0.9,
                               autocast=autocast, scaler=scaler)
            done += 1; seen += len(y)
            if done >= steps + 3:
                break
    sync(device)
    return seen / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=["cpu", "gpu"], default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    device = runtime.device()
    scale = args.scale or ("gpu" if device.type == "cuda" else "cpu")
    cfg = fullrun.RunConfig.for_scale(scale, "cifar10")
    steps = args.steps or (60 if scale == "gpu" else 15)
    n = max(cfg.batch_size * (steps + 4), 2048)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    torch.manual_seed(0)
    teacher, student = models.ConvNet(cfg.teacher_widths).to(device), models.ConvNet(cfg.student_widths).to(device)
    params = lambda m: sum(p.numel() for p in m.parameters())
    print(f"device {device} ({runtime.describe().get('gpu', 'cpu')}), scale {scale}, batch {cfg.batch_size}, {steps} timed steps; "
          f"teacher {params(teacher):,} params, student {params(student):,} ({params(teacher) / params(student):.1f}x smaller)")
    ref = reference_loop(teacher, student, images.permute(0, 2, 3, 1).numpy(), labels, batch_size=cfg.batch_size,
                         steps=steps, device=device, workers=args.workers)
    ours = course_loop(teacher, student, images, labels, batch_size=cfg.batch_size, steps=steps, device=device)
    plain = course_loop(teacher, student, images, labels, batch_size=cfg.batch_size, steps=steps, device=device, distil=False)
    print(f"(a) reference loop (DataLoader, CPU transforms, fp32):   {ref:10.0f} images/s")
    print(f"(b) course loop (device-resident, {train.precision(device)[2]}, channels_last): {ours:10.0f} images/s")
    print(f"ratio (b)/(a): {ours / ref:.2f}x")
    print(f"plain student step: {plain:.0f} images/s; a distillation step costs {plain / ours:.2f}x a plain student step")


if __name__ == "__main__":
    main()

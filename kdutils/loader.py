"""Batches of images kept on the device, normalised and augmented there: a DataLoader without the DataLoader.

As in KellerJordan/cifar10-airbench: the images are read once and kept on the device as uint8
(a quarter of float32's memory); each batch is normalised per channel and, for training, randomly
cropped (4-pixel zero padding) and flipped on the device, with no Python work per image. Batches
come out ``channels_last``. The full run (``kdutils.fullrun``) and its throughput benchmark use it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import batches


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
        for _ in range(self.repeats):
            for idx in batches(len(self.images), self.batch_size, generator=self.generator, shuffle=self.shuffle,
                               drop_last=self.drop_last, device=self.device):
                x = self.normalise(self.images[idx])
                yield (self.augment_batch(x) if self.augment else x), self.labels[idx], idx

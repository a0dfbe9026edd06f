"""The teachers and students of the course, small enough to train on a laptop CPU.

MNIST-1D baselines, as in Greydanus (2020) (``mnist1d`` repository, ``models.py``):

* ``MLP``: 40 -> 100 -> 100 -> 10 with ReLU                 (published test accuracy 68%)
* ``MNIST1DCNN``: three stride-2 Conv1d layers of 25 channels, then a linear layer  (94%)

8x8 digits: ``DigitsCNN`` (teacher) and an ``MLP`` on the 64 flattened pixels (student).
"""
from __future__ import annotations

import torch
from torch import nn


def num_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class MLP(nn.Module):
    """Fully connected ReLU network; flattens its input. MNIST-1D baseline: ``MLP(40, 10)``."""

    def __init__(self, in_features: int = 40, num_classes: int = 10, hidden: int = 100, depth: int = 2):
        super().__init__()
        layers, width = [], in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(nn.Flatten(), *layers)

    def forward(self, x):
        return self.net(x)


class MNIST1DCNN(nn.Module):
    """The MNIST-1D paper's CNN: (B, 40) -> Conv1d(1,25,5,s2,p1) -> Conv1d(25,25,3,s2,p1) x2 -> Linear(125, 10).

    ``in_channels > 1`` takes ``(B, in_channels, 40)`` inputs (several sensors side by side).
    """

    def __init__(self, num_classes: int = 10, channels: int = 25, length: int = 40, in_channels: int = 1):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(in_channels, channels, 5, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        )
        with torch.no_grad():
            out = self.conv(torch.zeros(1, in_channels, length)).numel()
        self.head = nn.Linear(out, num_classes)

    def forward(self, x):
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.head(self.conv(x).flatten(1))


class DigitsCNN(nn.Module):
    """A small CNN for the 8x8 digits: two 3x3 conv layers, a 2x2 max-pool, two linear layers."""

    def __init__(self, num_classes: int = 10, channels: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(2 * channels * 16, 128), nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        if x.dim() == 2:
            x = x.reshape(-1, 1, 8, 8)
        return self.net(x)


def digits_mlp(num_classes: int = 10, hidden: int = 32) -> MLP:
    """A small student for the 8x8 digits: 64 -> hidden -> num_classes."""
    return MLP(64, num_classes, hidden=hidden, depth=1)

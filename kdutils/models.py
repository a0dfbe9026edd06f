"""The teachers and students of the course, small enough to train on a laptop CPU.

MNIST-1D baselines, as in Greydanus (2020) (``mnist1d`` repository, ``models.py``):

* ``MLP``: 40 -> 100 -> 100 -> 10 with ReLU                 (published test accuracy 68%)
* ``MNIST1DCNN``: three stride-2 Conv1d layers of 25 channels, then a linear layer  (94%)

8x8 digits: ``DigitsCNN`` (teacher) and an ``MLP`` on the 64 flattened pixels (student).

32x32 images (the full run, notebook 09): ``ConvNet(widths)``, airbench-style; teacher and student
differ only in their widths. Language: ``GPT``, a small causal transformer (notebook 06).
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
        x = x.reshape(x.shape[0], -1, x.shape[-1])   # (B, 40) -> (B, 1, 40); written without an `if` so that
        return self.head(self.conv(x).flatten(1))   # torch.fx can trace it (feature extraction, notebook 04)


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


# ----------------------------------------------------------------------------- the full run's ConvNet
# An airbench-style network for 32x32 images (CIFAR-10, or the digits upscaled), for notebook 09.

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


# ----------------------------------------------------------------------------- a small GPT
# A causal transformer in the style of karpathy/nanoGPT, for notebook 06 (context distillation).

class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        return self.step(x, None)[0]

    def step(self, x, kv):
        """Attention of the new positions ``x`` (B, L, D) over the cached keys and values ``kv`` of the
        positions before them (None: no past) and over themselves, causally; returns (output, new kv)."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        q, k, v = (t.view(B, L, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))
        if kv is not None:
            k, v = torch.cat([kv[0], k], dim=2), torch.cat([kv[1], v], dim=2)
        past = k.shape[2] - L
        if past == 0:
            y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:       # new position i sees the past and the new positions up to itself
            mask = torch.ones(L, past + L, dtype=torch.bool, device=x.device).tril(past)
            y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, L, D)), (k, v)


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))

    def step(self, x, kv):
        a, kv = self.attn.step(self.ln1(x), kv)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


class GPT(nn.Module):
    """Token ids (B, L) -> next-token logits (B, L, vocab). Pre-LayerNorm blocks, learned positions."""

    def __init__(self, vocab_size: int, block_size: int, *, n_layer: int = 2, n_head: int = 4, d_model: int = 64):
        super().__init__()
        self.block_size = block_size
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList([Block(d_model, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def hidden(self, idx):
        """The last hidden states (B, L, d_model): the final LayerNorm's output, which ``head`` projects onto
        the vocabulary (a chunked loss takes them and ``head.weight`` instead of the logits)."""
        if idx.shape[1] > self.block_size:
            raise ValueError(f"sequence length {idx.shape[1]} exceeds block_size {self.block_size}")
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(self, idx):
        return self.head(self.hidden(idx))

    def step(self, idx, cache: list):
        """Next-token logits (B, n, vocab) of the new tokens ``idx`` (B, n) that follow the ones in
        ``cache`` (a list of each block's keys and values, ``[]`` to start; updated in place). With a KV
        cache, writing L tokens one at a time runs L positions instead of the 1 + 2 + ... + L that rerunning
        the prefix costs; the logits equal ``forward``'s on the whole sequence."""
        past = cache[0][0].shape[2] if cache else 0
        if past + idx.shape[1] > self.block_size:
            raise ValueError(f"sequence length {past + idx.shape[1]} exceeds block_size {self.block_size}")
        x = self.tok(idx) + self.pos(torch.arange(past, past + idx.shape[1], device=idx.device))
        if not cache:
            cache.extend([None] * len(self.blocks))
        for i, block in enumerate(self.blocks):
            x, cache[i] = block.step(x, cache[i])
        return self.head(self.ln_f(x))

    @torch.no_grad()   # not inference_mode: the generated tokens may be fed to a model in training
    def generate(self, idx, n_new: int):
        """Greedy decoding: append ``n_new`` arg-max tokens to every row of ``idx``."""
        was_training = self.training
        self.eval()
        for _ in range(n_new):
            nxt = self(idx)[:, -1].argmax(-1, keepdim=True)
            idx = torch.cat([idx, nxt], dim=1)
        self.train(was_training)
        return idx

"""Trained models the course reuses, trained once per machine and cached: the course's model zoo.

Nothing can be downloaded here, so there are no published weights to fetch; instead each entry is a
*recipe* (an architecture, a dataset, a seed and a training budget), run the first time it is
asked for and cached as a ``state_dict`` under ``runtime.cache_dir() / "zoo"``. The cache key covers
the recipe and the torch version, so a changed recipe is trained afresh. Training is seeded, so on one
machine with one thread count the cached model is the one the recipe would train again.

Why: the assignments need a trained teacher, and training it in every submission is what made
grading a class slow. The autograder ships the cache (``make assignments`` fills it), and each
submission loads the teacher in milliseconds; on a laptop or Colab the first call trains it.

==========================  =============================================================
``mnist1d_cnn()``           ``models.MNIST1DCNN()`` on MNIST-1D, 60 epochs (assignment 3's teacher)
``mnist1d_mlp()``           ``models.MLP()`` on MNIST-1D's labels, 60 epochs (assignment 3's scratch student)
``sensors_cnn()``           ``models.MNIST1DCNN(in_channels=2, channels=32)`` on ``sensors.two_sensors()``, 30 epochs
                            (assignment 2's teacher)
``instruction_gpt()``       ``models.GPT`` (2 layers, d_model 64) following all four instructions of ``tasks`` (assignment 4's teacher)
``bracket_gpt()``           ``models.GPT`` (2 layers, d_model 64) writing the bracket language of ``brackets`` (notebook 08's teacher)
``word_gpt(tokenizer)``     a GPT-2 of ``transformers`` (2 layers, width 64) writing ``wordlang`` with that tokenizer
                            (notebook 11's teachers; needs the ``[hf]`` extra)
==========================  =============================================================
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import runtime
from .files import atomic_write


def cache_path(name: str, recipe: dict) -> Path:
    key = hashlib.sha256(json.dumps({**recipe, "torch": torch.__version__.split("+")[0]}, sort_keys=True).encode())
    return runtime.cache_dir() / "zoo" / f"{name}-{key.hexdigest()[:16]}.pt"


def cached(name: str, recipe: dict, make: Callable[[], nn.Module], train: Callable[[nn.Module], None]) -> nn.Module:
    """``make()``, with the weights ``train(model)`` gives it, loaded from the cache when there.

    The model is returned in eval mode on the CPU. An unreadable or mismatched cache file is
    ignored and trained again; a cache folder that cannot be written costs a warning, not the run.
    """
    path = cache_path(name, recipe)
    model = make()
    if path.exists():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except Exception:        # ours, derived data: train it again
            model = make()
    train(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
    except OSError as exc:
        warnings.warn(f"could not cache {name} in {path.parent} ({exc.strerror or exc}): it will be trained "
                      "again next time (set KD_CACHE_DIR to a writable folder)", RuntimeWarning, stacklevel=2)
    return model.eval()


def _fit(model, x, y, *, epochs: int, seed: int = 0):
    from . import train

    train.fit(model, x, y, epochs=epochs, seed=seed, progress=False)


def _mnist1d_supervised(name: str, recipe_model: str, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` trained 60 epochs on the 4,000 labeled MNIST-1D training digits."""
    from . import data

    def train(model):
        mnist = data.load_mnist1d()
        _fit(model, mnist.x_train, mnist.y_train, epochs=60)

    def make():
        runtime.seed_everything(0)
        return build()

    return cached(name, {"model": recipe_model, "data": "mnist1d", "epochs": 60, "seed": 0}, make, train)


def mnist1d_cnn() -> nn.Module:
    """The course's MNIST-1D teacher: ``models.MNIST1DCNN()``, 60 epochs on the 4,000 training digits."""
    from . import models

    return _mnist1d_supervised("mnist1d-cnn", "MNIST1DCNN()", models.MNIST1DCNN)


def mnist1d_mlp() -> nn.Module:
    """``models.MLP()`` trained on MNIST-1D's labels alone, 60 epochs: the scratch student."""
    from . import models

    return _mnist1d_supervised("mnist1d-mlp", "MLP()", models.MLP)


def sensors_cnn() -> nn.Module:
    """The two-sensor teacher of notebook 05 and assignment 2: reads ``[field, lab]``, 30 epochs."""
    from . import models, sensors

    def train(model):
        x_train, y_train, _, _ = sensors.two_sensors()
        _fit(model, x_train, y_train, epochs=30)

    def make():
        runtime.seed_everything(0)
        return models.MNIST1DCNN(in_channels=2, channels=32)

    return cached("sensors-cnn", {"model": "MNIST1DCNN(in_channels=2, channels=32)", "data": "two_sensors()",
                                  "epochs": 30, "seed": 0}, make, train)


def _gpt_recipe(vocab_size: int, block_size: int, **shape) -> str:
    """The model's part of a cache key, from the very numbers that build it: a change of vocabulary,
    block or width is a new key, never a stale teacher of the old shape."""
    return f"GPT({vocab_size}, {block_size}, " + ", ".join(f"{k}={v}" for k, v in shape.items()) + ")"


def instruction_gpt(lengths: tuple[int, int] = (3, 4)) -> nn.Module:
    """The course's small GPT, trained 300 steps to follow all four instructions of ``kdutils.tasks``
    on queries of ``lengths`` digits (AdamW, one-cycle schedule): the teacher of assignment 4."""
    from . import models, tasks
    from .train import fit_next_token

    V, block = len(tasks.VOCAB), 2 * lengths[1] + 2

    shape = dict(n_layer=2, n_head=4, d_model=64)

    def make():
        runtime.seed_everything(0)
        return models.GPT(V, block, **shape)

    def batch(g):
        tokens, mask = tasks.mixed_batch(128, lengths, generator=g)
        return tokens, mask[:, :-1]

    def train(model):
        fit_next_token(model, batch, 300, generator=torch.Generator().manual_seed(0))

    return cached("instruction-gpt", {"model": _gpt_recipe(V, block, **shape), "lengths": list(lengths),
                                      "steps": 300, "batch": 128, "lr": 3e-3, "seed": 0}, make, train)


def bracket_gpt(steps: int = 1500) -> nn.Module:
    """The course's small GPT trained ``steps`` steps (batch 64, AdamW, one-cycle) on random sentences of
    ``kdutils.brackets``, next-token cross-entropy on every token after <bos> up to <eos>: notebook 08's teacher."""
    from . import brackets, models
    from .train import fit_next_token

    V, block, shape = len(brackets.VOCAB), brackets.BLOCK, dict(n_layer=2, n_head=4, d_model=64)

    def make():
        runtime.seed_everything(0)
        return models.GPT(V, block, **shape)

    def train(model):
        g = torch.Generator().manual_seed(0)
        data = brackets.sentences(20_000, generator=g)

        def batch(g):
            seq = data[torch.randint(0, len(data), (64,), generator=g)]
            return seq, seq[:, 1:] != brackets.PAD         # every token after <bos> up to <eos>

        fit_next_token(model, batch, steps, generator=g)

    return cached("bracket-gpt", {"model": _gpt_recipe(V, block, **shape), "data": "brackets.sentences(20000)",
                                  "steps": steps, "batch": 64, "lr": 3e-3, "seed": 0}, make, train)


def word_tokenizer(vocab_size: int, *, seed: int = 0):
    """A BPE tokenizer of ``vocab_size`` tokens trained on 2,000 sentences of ``kdutils.wordlang`` drawn with
    ``seed``: deterministic, the same every time. Notebook 11's teacher and student tokenizers come from
    different samples, so their merges, and the ids of their shared tokens, differ."""
    from . import hf, wordlang
    pairs = wordlang.conversations(2000, generator=torch.Generator().manual_seed(seed))
    return hf.train_tokenizer([f"{p} {a}" for p, a in pairs], vocab_size)


def word_gpt(tokenizer, *, steps: int = 600, n_layer: int = 2, n_embd: int = 64) -> nn.Module:
    """A GPT-2 (``hf.causal_lm``) trained ``steps`` steps (batch 64, AdamW, one-cycle) on the answers of 10,000
    conversations of ``kdutils.wordlang`` written with ``tokenizer``: notebook 11's teachers. The cache key
    holds the tokenizer's whole vocabulary, so another tokenizer is another teacher."""
    from . import hf, wordlang
    from .train import fit_next_token

    shape = dict(n_layer=n_layer, n_embd=n_embd)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])

    def make():
        return hf.causal_lm(tokenizer, **shape)

    def train(model):
        g = torch.Generator().manual_seed(0)
        batch = hf.encode_chats(tokenizer, wordlang.conversations(10_000, generator=g), length=hf.MAX_LENGTH)
        logits = hf.LogitsOnly(model)

        def sample(g):
            idx = torch.randint(0, len(batch["input_ids"]), (64,), generator=g)
            width = int(batch["attention_mask"][idx].sum(1).max())
            return batch["input_ids"][idx, :width], batch["labels"][idx, 1:width] != -100

        fit_next_token(logits, sample, steps, generator=g)

    recipe = {"model": f"GPT2({len(tokenizer)}, {shape})", "vocab": hashlib.sha256(json.dumps(vocab).encode()).hexdigest(),
              "data": "wordlang.conversations(10000)", "steps": steps, "batch": 64, "lr": 3e-3, "seed": 0}
    return cached("word-gpt", recipe, make, train)

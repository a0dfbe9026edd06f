r"""The course's distillation inside Hugging Face ``transformers``, offline (notebook 11, assignment 8).

Imported only by what needs it (``pip install 'kdutils[hf]'``); the rest of the library never imports
``transformers``. Importing this module sets ``HF_HUB_OFFLINE=1`` unless the environment says otherwise,
so a call that would reach the Hub fails loudly instead of downloading: everything here is built locally.

* ``train_tokenizer``: a BPE tokenizer trained on local text with ``tokenizers``, wrapped as a
  ``PreTrainedTokenizerFast`` with a chat template and a pad token distinct from EOS (TRL's collators
  need both; a pad that *is* the EOS gets EOS masked out of the labels: section 5 of notebook 11).
* ``encode_chats``: (prompt, answer) text to ``input_ids``, ``attention_mask`` and ``labels`` with
  -100 on the prompt and the padding, so only the answer and its EOS are learned.
* ``causal_lm``: a GPT-2 built from a config (``from_config``: random weights, no download).
* ``distillation_loss_sum``: the token-level distillation loss of ``kdutils.losses.distillation_loss``
  on causal-LM logits (shifted by one), summed over the labelled tokens, with their count:

  .. math::  L = \frac{1}{N} \sum_{(b, i):\, y_{b,i+1} \ne -100} \Big[\alpha T^2\,
             \mathrm{KL}(p_t^T \| p_s^T)_{b,i} + (1 - \alpha)\,\mathrm{CE}(y_{b,i+1}, p_s)_{b,i}\Big]

  where N is the number of labelled tokens **in the whole accumulated batch** (the Trainer's
  ``num_items_in_batch``), not in the micro-batch.
* ``DistillationTrainer``: a ``transformers.Trainer`` whose ``compute_loss`` is that loss. Under
  gradient accumulation over micro-batches with different numbers of labelled tokens, the mean of the
  micro-batch means weights a token by how few tokens share its micro-batch (TRL #4719); dividing
  each micro-batch's *sum* by N gives exactly the gradient of the un-accumulated batch.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")           # before huggingface_hub reads it

import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, trainers  # noqa: E402

from . import checks, losses, token_losses  # noqa: E402

PAD, EOS, USER, ASSISTANT = "<pad>", "<eos>", "<user>", "<assistant>"
SPECIAL_TOKENS = (PAD, EOS, USER, ASSISTANT)
MAX_LENGTH = 96                    # tokens: the longest conversation of wordlang in the smallest tokenizer fits
CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}<user>{{ m['content'] }}"
                 "{% else %}<assistant>{{ m['content'] }}<eos>{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def train_tokenizer(texts, vocab_size: int, *, pad_is_eos: bool = False) -> transformers.PreTrainedTokenizerFast:
    """A byte-pair-encoding tokenizer of ``vocab_size`` tokens (the special tokens included) trained on
    ``texts``; words are split at spaces (Metaspace, ``▁``) so no token crosses a word boundary.
    ``pad_is_eos=True`` makes the pad token the EOS token, as many released models do (the mistake
    notebook 11 measures); the default keeps ``<pad>`` distinct."""
    texts = list(texts)
    if not texts:
        raise ValueError("train_tokenizer needs at least one text")
    backend = Tokenizer(tok_models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                                           show_progress=False))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS,
                                               pad_token=EOS if pad_is_eos else PAD)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def chat(prompt: str, answer: str | None = None) -> list[dict]:
    """The messages of one conversation (the assistant's turn left out when ``answer`` is None)."""
    return [{"role": "user", "content": prompt}] + ([] if answer is None else [{"role": "assistant", "content": answer}])


def encode_chats(tokenizer, pairs, *, length: int) -> dict:
    """(prompt, answer) pairs as a right-padded batch of ``length`` tokens: ``input_ids``,
    ``attention_mask`` and ``labels`` (the input ids, -100 on the prompt and on the padding). Labels are
    masked by *position*, never by comparing ids with ``pad_token_id``: when the pad token is the EOS
    token, that comparison would drop the EOS the model must learn to write (``mask_pad_by_id`` shows it)."""
    pairs = list(pairs)
    texts = tokenizer.apply_chat_template([chat(p, a) for p, a in pairs], tokenize=False)
    heads = tokenizer.apply_chat_template([chat(p) for p, _ in pairs], tokenize=False, add_generation_prompt=True)
    rows = tokenizer(texts, add_special_tokens=False)["input_ids"]
    head_ids = tokenizer(heads, add_special_tokens=False)["input_ids"]
    prompt_lengths = []
    for (prompt, answer), ids, head in zip(pairs, rows, head_ids):
        if ids[:len(head)] != head:
            raise ValueError(f"the chat template tokenizes the prompt differently alone and in the conversation: {prompt!r}")
        if len(ids) > length:
            raise ValueError(f"a conversation of {len(ids)} tokens does not fit in length={length}: {prompt!r} / {answer!r}")
        prompt_lengths.append(len(head))
    n = len(rows)
    input_ids = torch.full((n, length), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros((n, length), dtype=torch.long)
    labels = torch.full((n, length), checks.IGNORE_INDEX, dtype=torch.long)
    for b, (ids, head) in enumerate(zip(rows, prompt_lengths)):
        input_ids[b, :len(ids)] = torch.tensor(ids)
        attention[b, :len(ids)] = 1
        labels[b, head:len(ids)] = torch.tensor(ids[head:])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def mask_pad_by_id(batch: dict, pad_token_id: int) -> dict:
    """The common collator mistake (TRL #6357): labels set to -100 wherever the input is the pad token.
    Harmless when the pad token is its own token; when it is the EOS token, every EOS leaves the loss."""
    labels = batch["labels"].masked_fill(batch["input_ids"] == pad_token_id, checks.IGNORE_INDEX)
    return {**batch, "labels": labels}


def causal_lm(tokenizer, *, n_layer: int, n_embd: int, n_head: int = 4, n_positions: int = MAX_LENGTH, seed: int = 0):
    """A GPT-2 causal LM of this shape for ``tokenizer``'s vocabulary, built from a config (random weights,
    nothing downloaded; dropout off so runs are deterministic given the seed)."""
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                                     n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(config)


def distillation_loss_sum(student_logits, teacher_logits, labels, *, temperature: float = 1.0, alpha: float = 1.0):
    """(sum, count): the distillation loss of causal-LM logits (B, L, V) summed over the positions whose
    *next* label is not -100, and the number of those positions. Divide the sum by the count of the whole
    accumulated batch (``num_items_in_batch``), never by each micro-batch's own count."""
    if labels.shape != student_logits.shape[:-1]:
        raise ValueError(f"labels must have the logits' leading shape {tuple(student_logits.shape[:-1])}, "
                         f"got {tuple(labels.shape)}")
    token_losses.check_vocab(student_logits.shape[-1], teacher_logits.shape[-1])
    target = labels[:, 1:]
    mask = target != checks.IGNORE_INDEX
    per_token = losses.distillation_loss(student_logits[:, :-1], teacher_logits[:, :-1],
                                         None if alpha == 1 else target, temperature=temperature, alpha=alpha,
                                         reduction="none", mask=mask)
    return per_token.sum(), mask.sum()


class DistillationTrainer(transformers.Trainer):
    """A ``Trainer`` that distils ``teacher`` into the model: ``compute_loss`` is ``distillation_loss_sum``
    divided by the labelled tokens of the whole accumulated batch. ``micro_batch_mean=True`` makes the
    shipped mistake instead (each micro-batch's own mean; the notebook measures what it changes)."""

    def __init__(self, *args, teacher, temperature: float = 1.0, alpha: float = 1.0, micro_batch_mean: bool = False,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.alpha = checks.temperature(temperature), checks.unit("alpha", alpha)
        self.micro_batch_mean = micro_batch_mean

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        forward = {k: v for k, v in inputs.items() if k != "labels"}
        outputs = model(**forward)
        self.teacher.to(outputs.logits.device)
        with torch.no_grad():
            teacher_logits = self.teacher(**forward).logits
        total, count = distillation_loss_sum(outputs.logits, teacher_logits, labels,
                                             temperature=self.temperature, alpha=self.alpha)
        if self.micro_batch_mean or num_items_in_batch is None:
            # this micro-batch's own mean: the Trainer then divides by the accumulation steps
            self.loss_is_scaled_for_ga = False
            loss = total / count.clamp_min(1)
        else:
            self.loss_is_scaled_for_ga = True
            loss = total / torch.as_tensor(num_items_in_batch, device=total.device).clamp_min(1)
        return (loss, outputs) if return_outputs else loss


def training_args(output_dir, **overrides) -> transformers.TrainingArguments:
    """``TrainingArguments`` for a CPU laptop or one GPU, quiet and offline: no reports, no checkpoints,
    no pinned memory, float32 (the GPU-minded defaults people copy, ``bf16=True`` and gradient
    checkpointing, are off), the data order seeded by ``seed``."""
    base = dict(output_dir=str(output_dir), report_to="none", save_strategy="no", logging_strategy="no",
                disable_tqdm=True, dataloader_pin_memory=False, use_cpu=not torch.cuda.is_available(),
                learning_rate=3e-3, lr_scheduler_type="constant", weight_decay=0.0, seed=0)
    return transformers.TrainingArguments(**{**base, **overrides})


class LogitsOnly(torch.nn.Module):
    """A causal LM seen as ``tokens -> logits`` (the course's loops call ``model(tokens)``). Right padding needs
    no attention mask in a causal model: no real token attends to a pad after it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids).logits


class ListDataset(torch.utils.data.Dataset):
    """A batch dict of equal-length tensors seen as a dataset of rows (what ``Trainer`` takes)."""

    def __init__(self, batch: dict):
        sizes = {len(v) for v in batch.values()}
        if len(sizes) != 1:
            raise ValueError(f"every tensor of the batch must have the same number of rows, got {sorted(sizes)}")
        self.batch, self.n = batch, sizes.pop()

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.batch.items()}

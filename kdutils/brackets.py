"""A language whose grammar lives in what has been written: two kinds of brackets (notebook 08).

A sentence is a well-nested sequence of ``(`` ``)`` and ``[`` ``]`` (the Dyck-2 language) of at most
``MAX_BRACKETS`` brackets, between ``<bos>`` and ``<eos>``:

    <bos> ( [ ] ) [ ] <eos>          <bos> [ ( ( ) ) ] ( ) <eos>

What may come next depends on the sequence so far: which brackets are open, in what order, and how
many positions are left to close them. A model that writes one wrong bracket has left the language
for good, so the state is carried by the model's *own* outputs and mistakes compound with length: the
setting of on-policy distillation.

Rows are right-padded with ``<pad>`` to ``BLOCK`` tokens. ``check`` reads sentences back and says,
row by row, how many tokens after the prompt break no rule, and whether the sentence is complete.
"""
from __future__ import annotations

import torch

VOCAB = ["(", "[", ")", "]", "<bos>", "<eos>", "<pad>"]
OPEN, CLOSE = (0, 1), (2, 3)            # CLOSE[k] closes OPEN[k]
BOS, EOS, PAD = 4, 5, 6
MAX_BRACKETS = 24
BLOCK = MAX_BRACKETS + 2                # <bos>, the brackets, <eos>


def sentences(n: int, *, generator: torch.Generator, stop: float = 0.25) -> torch.Tensor:
    """``n`` random sentences, (n, BLOCK): at every step open (either kind) or close the last open
    bracket with even odds, among the moves that can still be completed in ``MAX_BRACKETS``; when
    nothing is open, end the sentence with probability ``stop`` (never before 2 brackets)."""
    if not 0 < stop < 1:
        raise ValueError(f"stop must be in (0, 1), got {stop}")
    seq = torch.full((n, BLOCK), PAD, dtype=torch.long)
    seq[:, 0] = BOS
    stack = torch.zeros(n, MAX_BRACKETS, dtype=torch.long)   # the kinds of the open brackets
    depth = torch.zeros(n, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    rows = torch.arange(n)
    for i in range(MAX_BRACKETS + 1):                          # i brackets written so far
        u = torch.rand(n, 3, generator=generator)
        left = MAX_BRACKETS - i
        end = ~done & (depth == 0) & ((left == 0) | ((i >= 2) & (u[:, 0] < stop)))
        can_open = depth + 1 <= left - 1
        opens = ~done & ~end & can_open & ((depth == 0) | (u[:, 1] < 0.5))
        closes = ~done & ~end & ~opens
        kind = (u[:, 2] < 0.5).long()
        top = stack[rows, (depth - 1).clamp_min(0)]
        seq[:, i + 1] = torch.where(end, EOS, torch.where(opens, kind, torch.where(closes, top + 2, PAD)))
        stack[rows[opens], depth[opens]] = kind[opens]
        depth = depth + opens.long() - closes.long()
        done |= end
    return seq


def check(seq: torch.Tensor, prompt_len: torch.Tensor | int = 0):
    """Read sentences back. Returns ``(ok, complete)``:

    ``ok[b]``  -- how many tokens after row b's prompt of ``prompt_len[b]`` brackets break no rule
                 (an ``<eos>`` counts when nothing is open; a bracket counts if it closes the last open
                 one, or opens one that can still be closed in time);
    ``complete[b]`` -- the row is a whole sentence: every token fine, ended by ``<eos>``.
    The prompt itself is checked too: a prompt that breaks a rule is refused.
    """
    if seq.dim() != 2 or seq.shape[1] != BLOCK:
        raise ValueError(f"sentences must be (n, {BLOCK}) token ids, got {tuple(seq.shape)}")
    n = seq.shape[0]
    prompt_len = torch.as_tensor(prompt_len).expand(n)
    stack = torch.zeros(n, MAX_BRACKETS + 1, dtype=torch.long)
    depth = torch.zeros(n, dtype=torch.long)
    alive = torch.ones(n, dtype=torch.bool)                   # no rule broken yet
    ended = torch.zeros(n, dtype=torch.bool)
    ok = torch.zeros(n, dtype=torch.long)
    rows = torch.arange(n)
    for i in range(MAX_BRACKETS + 1):
        t = seq[:, i + 1]
        top = stack[rows, (depth - 1).clamp_min(0)]
        is_open = (t == OPEN[0]) | (t == OPEN[1])
        fine = torch.where(t == EOS, depth == 0,
               torch.where(is_open, depth + 1 <= MAX_BRACKETS - i - 1,
               (t >= 2) & (t <= 3) & (depth > 0) & (t - 2 == top)))
        step = alive & ~ended
        if ((i < prompt_len) & step & ~fine).any():
            raise ValueError("a prompt breaks the rules of the language")
        alive = alive & (~step | fine)
        counted = step & fine & (i >= prompt_len)
        ok += counted.long()
        push = step & fine & is_open
        stack[rows[push], depth[push]] = t[push]
        depth = depth + push.long() - (step & fine & ~is_open & (t != EOS)).long()
        ended |= step & fine & (t == EOS)
    return ok, ended & alive


def prompts(seq: torch.Tensor, max_len: int, *, generator: torch.Generator):
    """Cut each sentence to a prompt of its first 0..``max_len`` brackets (fewer than it has).
    Returns ``(prompt, prompt_len)``: (n, BLOCK) with ``<pad>`` after the prompt, and (n,)."""
    brackets = ((seq != PAD) & (seq != BOS) & (seq != EOS)).sum(1)
    cap = torch.minimum(brackets - 1, torch.tensor(max_len)).clamp_min(0)
    prompt_len = (torch.rand(len(seq), generator=generator) * (cap + 1)).long()
    keep = torch.arange(BLOCK) <= prompt_len[:, None]
    return torch.where(keep, seq, PAD), prompt_len


def continuation_mask(seq: torch.Tensor, prompt_len: torch.Tensor) -> torch.Tensor:
    """(n, BLOCK - 1) bool over the positions of ``model(seq[:, :-1])``: True where position j predicts
    a token written after the prompt (j >= prompt_len), up to and including the ``<eos>``; never the
    prompt, never the padding."""
    if seq.dim() != 2 or seq.shape[1] != BLOCK or torch.as_tensor(prompt_len).shape != (len(seq),):
        raise ValueError(f"need sentences (n, {BLOCK}) and one prompt length per row, got {tuple(seq.shape)} and "
                         f"{tuple(torch.as_tensor(prompt_len).shape)}")
    j = torch.arange(BLOCK - 1)
    end = torch.where((seq == EOS).any(1), (seq == EOS).float().argmax(1), torch.tensor(BLOCK - 1))
    return (j >= prompt_len[:, None]) & (j < end[:, None])

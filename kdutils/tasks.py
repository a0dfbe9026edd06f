"""A toy instruction language for context distillation (notebook 06).

A prompt is one instruction token followed by a query of digits and a separator; the answer is the
query transformed by the instruction:

    [REV] 3 1 4 1 [=]  ->  1 4 1 3        [SORT] 3 1 4 1 [=]  ->  1 1 3 4
    [INC] 3 1 4 1 [=]  ->  4 2 5 2        [COPY] 3 1 4 1 [=]  ->  3 1 4 1

Every instruction sees the same kind of query, so a model must read the instruction to know what to
answer. Queries in a batch can have different lengths: rows are then right-padded with ``PAD``, and
``answer_mask`` marks, row by row, only the positions that predict an answer digit (never a pad).
Context distillation fixes one instruction c and trains a student on the bare query x' = the
sequence without its first token; ``student position i`` then lines up with ``teacher position i + 1``.
"""
from __future__ import annotations

import torch

DIGITS = [str(d) for d in range(10)]
INSTRUCTIONS = ["REV", "SORT", "INC", "COPY"]
SEP, PAD = "=", "_"
VOCAB = DIGITS + INSTRUCTIONS + [SEP, PAD]
TOKEN = {t: i for i, t in enumerate(VOCAB)}


def apply(instruction: str, query: torch.Tensor) -> torch.Tensor:
    """The answer digits for a batch of queries (B, n) of digit ids."""
    if instruction == "REV":
        return query.flip(1)
    if instruction == "SORT":
        return query.sort(1).values
    if instruction == "INC":
        return (query + 1) % 10
    if instruction == "COPY":
        return query.clone()
    raise ValueError(f"unknown instruction {instruction!r}; known: {INSTRUCTIONS}")


def queries(n: int, length: int, *, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 10, (n, length), generator=generator)


def prompt(instruction: str | None, query: torch.Tensor, answer: torch.Tensor | None = None) -> torch.Tensor:
    """Token ids: [instruction] query [=] [answer]; ``instruction=None`` gives the bare query x'."""
    parts = []
    if instruction is not None:
        parts.append(torch.full((len(query), 1), TOKEN[instruction]))
    parts += [query, torch.full((len(query), 1), TOKEN[SEP])]
    if answer is not None:
        parts.append(answer)
    return torch.cat(parts, dim=1)


def pad_right(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """Concatenate (n_i, L_i) token blocks into one (sum n_i, width) tensor, right-padded with PAD."""
    out = torch.full((sum(len(r) for r in rows), width), TOKEN[PAD], dtype=torch.long)
    start = 0
    for r in rows:
        if r.shape[1] > width:
            raise ValueError(f"rows of length {r.shape[1]} do not fit in width {width}")
        out[start:start + len(r), :r.shape[1]] = r
        start += len(r)
    return out


def mixed_batch(n: int, lengths: tuple[int, int], *, generator: torch.Generator):
    """Teacher training data: random instructions and query lengths in ``lengths`` (inclusive).

    Returns (tokens, answer_mask), both (n, 2 * max_length + 2); rows are right-padded with PAD and
    ``answer_mask[b, i]`` is True where position i predicts an answer token of row b.
    """
    lo, hi = lengths
    width = 2 * hi + 2
    size = torch.randint(lo, hi + 1, (n,), generator=generator)
    which = torch.randint(0, len(INSTRUCTIONS), (n,), generator=generator)
    blocks, masks = [], []
    for L in range(lo, hi + 1):
        rows = size == L
        if not rows.any():
            continue
        q = queries(int(rows.sum()), L, generator=generator)
        tokens = torch.zeros((len(q), 2 * L + 2), dtype=torch.long)
        for k, name in enumerate(INSTRUCTIONS):
            pick = which[rows] == k
            tokens[pick] = prompt(name, q[pick], apply(name, q[pick]))
        blocks.append(tokens)
        masks.append(answer_mask((len(q), width), prefix=1, length=L))
    order = torch.randperm(n, generator=generator)
    return pad_right(blocks, width)[order], torch.cat(masks)[order]


def answer_mask(shape, *, prefix: int, length: int) -> torch.Tensor:
    """True at the positions whose next token is an answer digit (``prefix`` = 1 with an instruction, 0 without)."""
    mask = torch.zeros(shape, dtype=torch.bool)
    start = prefix + length                      # the separator's position predicts the first answer digit
    mask[:, start:start + length] = True
    return mask


def exact_and_token_accuracy(predicted: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """Fraction of answers entirely right, and of answer digits right."""
    right = predicted == expected
    return right.all(1).float().mean().item(), right.float().mean().item()

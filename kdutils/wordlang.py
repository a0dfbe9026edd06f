"""A small language of English words, written as text: the corpus of notebook 11.

Notebooks 06-08 feed models token ids of their own making. Practitioners' tools start from *text*,
and two models with different tokenizers only share the text, so this language is text: sentences of
words from a fixed lexicon of 30, each word drawn given the previous one (a bigram chain with fixed,
peaked transition probabilities), ending when the chain draws its end symbol (never before
``MIN_WORDS`` words, always by ``MAX_WORDS``):

    "small cat chases the red mouse"        "lazy dog sees a fish then sleeps"

A conversation shows the first ``PROMPT_WORDS`` words as the user's message; the assistant writes the
rest and stops. The next word is random, so a model has a distribution to learn, not one answer, and
a teacher's full next-word distribution says more per example than the one word a sample shows:
the setting where distillation pays (as in notebook 07). Because the chain is known, the true
negative log-likelihood of any text is known too (``nll_per_word``): the floor no model can beat.

The language is fixed (the lexicon and the transition table come from ``LANGUAGE_SEED``); samples
of it are drawn with the caller's generator.
"""
from __future__ import annotations

import torch

WORDS = ("a the cat dog bird fish mouse horse sees chases likes eats finds follows sleeps big small red "
         "green quick lazy happy sleepy under over near behind and then with").split()
END = len(WORDS)                   # the end-of-sentence symbol's index in the transition table
MIN_WORDS, MAX_WORDS, PROMPT_WORDS = 4, 14, 3
LANGUAGE_SEED, SHARPNESS = 0, 2.5


def transition_log_probs() -> torch.Tensor:
    """log p(next | previous): (len(WORDS), len(WORDS) + 1); the last column is the end symbol."""
    g = torch.Generator().manual_seed(LANGUAGE_SEED)
    return (SHARPNESS * torch.randn(len(WORDS), len(WORDS) + 1, generator=g)).log_softmax(-1)


def _allowed(row: torch.Tensor, n_words: int) -> torch.Tensor:
    """The transition row with the end symbol forbidden before MIN_WORDS and forced at MAX_WORDS."""
    row = row.clone()
    if n_words < MIN_WORDS:
        row[..., END] = float("-inf")
    if n_words >= MAX_WORDS:
        row[..., :END] = float("-inf")
        row[..., END] = 0.0
    return row.log_softmax(-1)


def sentences(n: int, *, generator: torch.Generator) -> list[list[str]]:
    """``n`` sentences, each a list of words (the first word uniform over the lexicon)."""
    table = transition_log_probs()
    words = torch.randint(0, len(WORDS), (n,), generator=generator)
    out = [[int(w)] for w in words]
    alive = torch.ones(n, dtype=torch.bool)
    for length in range(1, MAX_WORDS + 1):
        rows = _allowed(table[words], length)
        nxt = torch.multinomial(rows.exp(), 1, generator=generator).squeeze(1)
        for i in alive.nonzero().flatten().tolist():
            if nxt[i] == END:
                alive[i] = False
            else:
                out[i].append(int(nxt[i]))
        words = nxt.clamp_max(END - 1)
        if not alive.any():
            break
    return [[WORDS[w] for w in s] for s in out]


def conversations(n: int, *, generator: torch.Generator) -> list[tuple[str, str]]:
    """``n`` (prompt, answer) pairs of text: the first PROMPT_WORDS words, and the rest of the sentence."""
    return [(" ".join(s[:PROMPT_WORDS]), " ".join(s[PROMPT_WORDS:])) for s in sentences(n, generator=generator)]


def nll_per_word(prompt: str, answer: str) -> float:
    """The true negative log-likelihood (nats) of the answer given the prompt, per answer word, the end
    counted as one more word: the floor for any model's ``-log p(answer, end | prompt) / (words + 1)``."""
    table = transition_log_probs()
    index = {w: i for i, w in enumerate(WORDS)}
    words = [index[w] for w in prompt.split() + answer.split()]
    total = 0.0
    for k in range(PROMPT_WORDS, len(words) + 1):
        row = _allowed(table[words[k - 1]], k)
        total -= float(row[words[k]] if k < len(words) else row[END])
    return total / (len(words) - PROMPT_WORDS + 1)

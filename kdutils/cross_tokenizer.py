r"""Distilling across tokenizers: a teacher and a student that split the same text differently.

Token ids mean nothing outside their tokenizer. Feeding the student's ids to the teacher (TRL #4561)
runs without an error whenever the ids are in range, and the teacher then reads a different text;
a teacher with a larger vocabulary gives logits of another width, and slicing them to fit pairs
unrelated tokens. ``check_same_tokenizer`` refuses both, naming the first tokens that differ. What the
two models share is the **text**: each reads it with its own tokenizer, and the losses below compare
them on it.

**Word projection** (``WordProjection``, exact here). Both tokenizers split at spaces first (their
pre-tokenizer), and no token crosses a word. At the start of word k the teacher gives a distribution
over its tokens; where the teacher's tokens are whole words (checked: ``word_coverage``) that is a
distribution over the next word w, :math:`p_t(w \mid \text{text})`. The student writes w as pieces
:math:`\pi_1(w) \pi_2(w) \dots` of its own vocabulary. The student's next-piece distribution that the
teacher implies, after the student has written the first r pieces :math:`\rho` of the word, is the
teacher's word distribution restricted to the words that begin with :math:`\rho`, pushed onto their
next piece:

.. math::  q(v \mid \text{text}, \rho) = \frac{\sum_{w:\ \pi_{1..r}(w) = \rho,\ \pi_{r+1}(w) = v} p_t(w)}
                                             {\sum_{w:\ \pi_{1..r}(w) = \rho,\ |\pi(w)| > r} p_t(w)}

The product of these conditionals over a word's pieces is exactly :math:`p_t(w)`: the student is taught
the teacher's distribution over *text*. (The general case, tokens that straddle each other's boundaries,
needs alignment of text spans: GOLD in TRL, Minixhofer et al. 2025's approximate likelihood matching.)

**Universal logit distillation** (``uld_loss``; Boizard et al. 2024) needs no alignment of vocabularies:
it compares the two distributions' **sorted** probabilities, the smaller vocabulary padded with zeros,

.. math::  \mathrm{ULD}_i = \sum_{j} \big| p^{\downarrow}_{s,i,j} - p^{\downarrow}_{t,i,j} \big|

(the Wasserstein-1 distance between the two under a cost that makes every token equally far from
every other), pairing the i-th answer token of the student with the i-th of the teacher. It transfers
the teacher's confidence, not which token it prefers.
"""
from __future__ import annotations

import torch

from . import checks


# --------------------------------------------------------------------------- the guard

def check_same_tokenizer(student_tokenizer, teacher_tokenizer) -> None:
    """A ``ValueError`` unless both tokenizers map every token to the same id: the condition for giving
    the teacher the student's ids (or comparing their logits column by column)."""
    s, t = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if s == t:
        return
    differ = sorted((tok for tok in s.keys() | t.keys() if s.get(tok) != t.get(tok)),
                    key=lambda tok: (min(s.get(tok, 1 << 62), t.get(tok, 1 << 62)), tok))[:3]
    shown = ", ".join(f"{tok!r}: {s.get(tok)} (student) vs {t.get(tok)} (teacher)" for tok in differ)
    raise ValueError(f"the student and the teacher use different tokenizers ({len(s):,} vs {len(t):,} tokens; first "
                     f"differences {shown}): never give the teacher the student's token ids. Decode the text and "
                     "re-tokenize it with the teacher's tokenizer, and use a cross-tokenizer loss "
                     "(kdutils.cross_tokenizer.WordProjection or uld_loss)")


# --------------------------------------------------------------------------- word projection

def word_pieces(tokenizer, word: str) -> list[int]:
    """The ids a tokenizer gives one pre-tokenized word ("▁cat" -> ["▁c", "at"])."""
    return [t.id for t in tokenizer.backend_tokenizer.model.tokenize(word)]


class WordProjection:
    """The teacher's next-token distributions as targets over the student's vocabulary (module docstring).

    ``pieces[t]`` holds the student's pieces of teacher token t's string (special tokens map to the
    student's token of the same name), padded with -1."""

    def __init__(self, teacher_tokenizer, student_tokenizer):
        self.teacher_tokenizer, self.student_tokenizer = teacher_tokenizer, student_tokenizer
        s_special = {tok: student_tokenizer.convert_tokens_to_ids(tok) for tok in student_tokenizer.all_special_tokens}
        rows = []
        for tok in teacher_tokenizer.convert_ids_to_tokens(list(range(len(teacher_tokenizer)))):
            if tok in teacher_tokenizer.all_special_tokens or tok in teacher_tokenizer.get_added_vocab():
                if tok not in s_special and tok not in student_tokenizer.get_vocab():
                    raise ValueError(f"the teacher's special token {tok!r} has no counterpart in the student's tokenizer")
                rows.append([student_tokenizer.convert_tokens_to_ids(tok)])
            else:
                rows.append(word_pieces(student_tokenizer, tok))
        width = max(map(len, rows))
        self.pieces = torch.full((len(rows), width), -1, dtype=torch.long)
        for t, row in enumerate(rows):
            self.pieces[t, :len(row)] = torch.tensor(row)
        self.student_size = len(student_tokenizer)

    def word_coverage(self, words) -> float:
        """The fraction of ``words`` that the teacher writes as one token (the projection is exact on those)."""
        words = list(words)
        return sum(len(word_pieces(self.teacher_tokenizer, "▁" + w)) == 1 for w in words) / max(len(words), 1)

    def project(self, teacher_probs: torch.Tensor, prefix: list[int]) -> torch.Tensor:
        """q(. | prefix) over the student's vocabulary from the teacher's probabilities (Vt,) at a word start;
        all zeros when no teacher token is consistent with the prefix."""
        r = len(prefix)
        if r >= self.pieces.shape[1]:
            return torch.zeros(self.student_size)
        keep = self.pieces[:, r] >= 0
        if r:
            keep &= (self.pieces[:, :r] == torch.tensor(prefix)).all(1)
        q = torch.zeros(self.student_size, dtype=teacher_probs.dtype)
        q.index_add_(0, self.pieces[keep, r], teacher_probs[keep])
        total = q.sum()
        return q / total if total > 0 else q

    def targets(self, pairs, teacher_probs: torch.Tensor, teacher_batch: dict, student_batch: dict):
        """(targets, mask): for every student position that predicts an answer token (``labels[:, 1:]``
        not -100), the projected distribution over the student's vocabulary, (N, L_s - 1, V_s), and a mask
        of the positions that have one. ``teacher_probs`` (N, L_t, V_t) are the teacher's next-token
        probabilities on ``teacher_batch``; both batches come from ``hf.encode_chats`` on the same pairs."""
        n, length = student_batch["labels"].shape
        out = torch.zeros(n, length - 1, self.student_size)
        mask = torch.zeros(n, length - 1, dtype=torch.bool)
        s_start = _answer_start(student_batch["labels"])
        t_start = _answer_start(teacher_batch["labels"])
        for b, (_, answer) in enumerate(pairs):
            ti, si = int(t_start[b]) - 1, int(s_start[b]) - 1      # the positions that predict the first answer token
            s_labels = student_batch["labels"][b]
            for word in answer.split() + [None]:                  # None: the end of the answer (EOS)
                s_pieces = [self.student_tokenizer.eos_token_id] if word is None else word_pieces(self.student_tokenizer, "▁" + word)
                t_count = 1 if word is None else len(word_pieces(self.teacher_tokenizer, "▁" + word))
                if s_labels[si + 1: si + 1 + len(s_pieces)].tolist() != s_pieces:
                    raise ValueError(f"the student's tokens of {word or 'EOS'!r} are not where the projection expects "
                                     f"them in row {b}: the batches must come from encode_chats on these pairs")
                for r in range(len(s_pieces)):
                    q = self.project(teacher_probs[b, ti], s_pieces[:r])
                    if q.sum() > 0:
                        out[b, si + r], mask[b, si + r] = q, True
                si, ti = si + len(s_pieces), ti + t_count
        return out, mask


def _answer_start(labels: torch.Tensor) -> torch.Tensor:
    """The index of each row's first labelled token."""
    labelled = labels != checks.IGNORE_INDEX
    if not labelled.any(1).all():
        raise ValueError("every row needs at least one labelled (answer) token")
    return labelled.int().argmax(1)


def kl_to_targets(student_logits, targets, mask, *, reduction: str = "batchmean"):
    r"""KL(q || p_s) per position against target *probabilities* q (0 log 0 = 0), reduced over ``mask``.
    Same gradient as the soft cross-entropy :math:`-\sum_v q_v \log p_{s,v}`."""
    checks.logits("student_logits", student_logits)
    if targets.shape != student_logits.shape:
        raise ValueError(f"targets must have the student logits' shape {tuple(student_logits.shape)}, got {tuple(targets.shape)}")
    mask = checks.mask(mask, student_logits.shape[:-1])
    log_s = checks.log_probs(student_logits, 1.0)
    per = (targets * (targets.clamp_min(1e-30).log() - log_s)).sum(-1)
    return checks.reduce(per, reduction, mask)


# --------------------------------------------------------------------------- universal logit distillation

def uld_loss(student_logits, teacher_logits, *, student_mask, teacher_mask, temperature: float = 1.0,
             reduction: str = "batchmean"):
    """Universal logit distillation (module docstring): student logits (B, L_s, V_s), teacher logits
    (B, L_t, V_t), masks of the positions to pair in each; the k-th masked position of a student row is
    paired with the k-th of the teacher's row, up to the shorter of the two. Mean over the pairs."""
    checks.logits("student_logits", student_logits)
    checks.logits("teacher_logits", teacher_logits)
    temperature = checks.temperature(temperature)
    if student_logits.shape[0] != teacher_logits.shape[0]:
        raise ValueError(f"student and teacher batches differ in size: {student_logits.shape[0]} vs {teacher_logits.shape[0]}")
    s_mask = checks.mask(student_mask, student_logits.shape[:-1])
    t_mask = checks.mask(teacher_mask, teacher_logits.shape[:-1])
    n = torch.minimum(s_mask.sum(1), t_mask.sum(1))[:, None]
    s_keep = s_mask & (s_mask.cumsum(1) <= n)
    t_keep = t_mask & (t_mask.cumsum(1) <= n)
    p_s = checks.log_probs(student_logits[s_keep], temperature).exp().sort(-1, descending=True).values
    p_t = checks.log_probs(teacher_logits.detach()[t_keep], temperature).exp().sort(-1, descending=True).values
    width = max(p_s.shape[-1], p_t.shape[-1])
    p_s = torch.nn.functional.pad(p_s, (0, width - p_s.shape[-1]))
    p_t = torch.nn.functional.pad(p_t, (0, width - p_t.shape[-1]))
    per_pair = (p_s - p_t).abs().sum(-1)
    return checks.reduce(per_pair, reduction, None)

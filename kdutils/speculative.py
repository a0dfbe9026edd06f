r"""Speculative sampling: a small draft model proposes, the large target model verifies.

Leviathan, Kalman and Matias 2023 (arXiv:2211.17192); Chen et al. 2023 (arXiv:2302.01318). At one
position let p be the target's next-token distribution and q the draft's. Draw the draft token
x ~ q and

    accept it with probability   min(1, p(x) / q(x));
    otherwise draw a token from  r(v) = (p(v) - q(v))_+ / sum_u (p(u) - q(u))_+,   the residual.

The token that comes out is distributed exactly as p, whatever q is:

    P(out = v) = q(v) min(1, p(v)/q(v)) + P(reject) r(v) = min(p, q)(v) + (p(v) - q(v))_+ = p(v),

since P(reject) = 1 - sum_u min(p, q)(u) = sum_u (p(u) - q(u))_+. So the draft changes the cost, never
the output. The probability that the draft token is accepted,

    beta = sum_v min(p(v), q(v)) = 1 - TV(p, q),       TV(p, q) = 1/2 sum_v |p(v) - q(v)|,

is what a drafter is trained to raise: the total variation distance decides the speed-up.

One round (``generate``): the draft writes k tokens one at a time; the target scores all of them in a
single call (k + 1 next-token distributions: one per draft token and one after the last); ``verify``
keeps the longest accepted prefix and adds one token, the residual draw at the first rejection, or, when
all k are accepted, a *bonus* token drawn from the target's (k + 1)-th distribution. Each target call
therefore writes between 1 and k + 1 tokens. If every position is accepted independently with
probability beta, a round writes on average

    E[tokens per target call] = (1 - beta^(k+1)) / (1 - beta)                (``expected_tokens``)

and, with a draft call costing c target calls, the wall-clock speed-up over sampling the target alone
is (1 - beta^(k+1)) / ((1 - beta)(k c + 1))                               (``expected_speedup``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import checks


def acceptance_probability(target_probs: torch.Tensor, draft_probs: torch.Tensor) -> torch.Tensor:
    r"""The probability that a token drawn from the draft is accepted, per position:
    :math:`\beta = \sum_v \min(p(v), q(v)) = 1 - \mathrm{TV}(p, q)`. Both are probabilities over the last
    dimension, of the same shape; returns their shape without the last dimension."""
    p, q = checks.probs("target_probs", target_probs), checks.probs("draft_probs", draft_probs)
    if p.shape != q.shape:
        raise ValueError(f"target_probs {tuple(p.shape)} and draft_probs {tuple(q.shape)} must have the same shape")
    return torch.minimum(p, q).sum(-1)


def verify(target_probs: torch.Tensor, draft_probs: torch.Tensor, draft_tokens: torch.Tensor, *,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The accept/resample step of one round, for a batch of B rows.

    ``draft_tokens`` (B, k) were drawn from ``draft_probs`` (B, k, V); ``target_probs`` (B, k + 1, V) are
    the target's distributions at the same k positions and at the one after them. Token i is accepted
    with probability :math:`\min(1, p_i(x_i)/q_i(x_i))` (one uniform draw per token, :math:`u\,q < p`);
    row b keeps its first ``n_accepted[b]`` tokens, those before its first rejection. Returns
    ``(n_accepted, next_token)``, both (B,): ``next_token`` is drawn from the residual
    :math:`(p_i - q_i)_+` at the first rejected position i, or from :math:`p_{k+1}` (the bonus token)
    when all k were accepted. Tokens ``draft_tokens[b, :n_accepted[b]]`` then ``next_token[b]`` are
    distributed as the target's own samples.
    """
    p, q = checks.probs("target_probs", target_probs), checks.probs("draft_probs", draft_probs)
    if draft_tokens.dim() != 2 or draft_tokens.dtype != torch.long or draft_tokens.shape[1] < 1:
        raise ValueError(f"draft_tokens must be (B, k >= 1) token ids (torch.long), got {tuple(draft_tokens.shape)} {draft_tokens.dtype}")
    B, k = draft_tokens.shape
    if q.shape[:2] != (B, k) or p.shape != (B, k + 1, q.shape[-1]):
        raise ValueError(f"with draft_tokens (B, k) = {(B, k)}, draft_probs must be (B, k, V) and target_probs (B, k + 1, V); "
                         f"got {tuple(q.shape)} and {tuple(p.shape)}")
    p_x = p[:, :k].gather(-1, draft_tokens.unsqueeze(-1)).squeeze(-1)            # p_i(x_i), (B, k)
    q_x = q.gather(-1, draft_tokens.unsqueeze(-1)).squeeze(-1)                   # q_i(x_i)
    u = torch.rand(B, k, generator=generator, dtype=p.dtype, device=p.device)
    accepted = u * q_x < p_x                                                     # u < p/q, without dividing
    n_accepted = accepted.long().cumprod(-1).sum(-1)                             # up to the first rejection
    rows = torch.arange(B, device=p.device)
    first_rejected = n_accepted.clamp(max=k - 1)
    residual = (p[rows, first_rejected] - q[rows, first_rejected]).clamp_min(0)
    # a rejection happens only where p(x) < q(x), so there the residual has mass; an all-zero residual
    # (p = q) only occurs in rows that accepted everything, and those draw the bonus token from p_{k+1}
    weights = torch.where((n_accepted == k).unsqueeze(-1) | (residual.sum(-1, keepdim=True) <= 0), p[:, k], residual)
    next_token = torch.multinomial(weights / weights.sum(-1, keepdim=True), 1, generator=generator).squeeze(-1)
    return n_accepted, next_token


def expected_tokens(beta, k: int):
    r"""Tokens one target call writes on average when each draft token is accepted independently with
    probability ``beta``: :math:`1 + \beta + \dots + \beta^k = (1 - \beta^{k+1}) / (1 - \beta)`."""
    beta = torch.as_tensor(beta, dtype=torch.float64)
    return sum(beta ** i for i in range(k + 1))


def expected_speedup(beta, k: int, cost_ratio: float):
    r"""Wall-clock speed-up over sampling the target alone, with a draft call costing ``cost_ratio``
    target calls: one round takes :math:`k c + 1` target-call times and writes ``expected_tokens``."""
    return expected_tokens(beta, k) / (k * cost_ratio + 1)


@dataclass
class Counts:
    """What ``generate`` spent and wrote. Every count is summed over the rows of the batch, so the
    ratios are per row whatever the batch size (one row: the latency of serving one request)."""
    target_calls: int = 0        # calls of the target (each scores up to k + 1 positions of every row)
    draft_calls: int = 0         # calls of the draft (one token of every row per call)
    row_calls: int = 0           # target calls x rows still writing at the call
    judged: int = 0              # draft tokens the target judged: a row's up to its first rejection or <eos>
    accepted: int = 0            # ... of which accepted
    expected_accepted: float = 0.0   # sum over the judged tokens of beta = 1 - TV(p, q) at their position
    accepted_variance: float = 0.0   # sum of beta (1 - beta): the variance of accepted - expected_accepted
    written: int = 0             # tokens written after the prompts (each row's <eos> included, padding not)

    @property
    def acceptance_rate(self) -> float:
        """accepted / judged: the measured chance that a draft token is accepted (the tokens after a
        row's first rejection are never judged)."""
        return self.accepted / max(self.judged, 1)

    @property
    def expected_acceptance(self) -> float:
        """The mean of 1 - TV(p, q) over the judged positions: what ``acceptance_rate`` estimates."""
        return self.expected_accepted / max(self.judged, 1)

    @property
    def tokens_per_target_call(self) -> float:
        """Tokens a row gains per target call (1 for the target sampling alone)."""
        return self.written / max(self.row_calls, 1)


def _next_probs(model, seq, cache, temperature, n_last: int):
    """Next-token probabilities at the last ``n_last`` positions of ``seq``, feeding the model only the
    tokens its KV ``cache`` lacks (``cache`` None: rerun the whole prefix)."""
    if cache is None:
        logits = model(seq)[:, -n_last:]
    else:
        have = cache[0][0].shape[2] if cache else 0
        logits = model.step(seq[:, have:], cache)[:, -n_last:]
    return F.softmax(logits.float() / temperature, dim=-1)


def _truncate(cache, length: int):
    """Forget every cached position from ``length`` on (the tokens a rejection threw away)."""
    if cache:
        cache[:] = [(k[:, :, :length], v[:, :, :length]) for k, v in cache]


def _after_eos(tokens: torch.Tensor, eos: int | None) -> torch.Tensor:
    """True at the positions of ``tokens`` (B, n) that come after an ``eos`` in their row."""
    if eos is None:
        return torch.zeros_like(tokens, dtype=torch.bool)
    is_eos = (tokens == eos).long()
    return (is_eos.cumsum(1) - is_eos) > 0


@torch.no_grad()
def generate(target, draft, prompt: torch.Tensor, n_new: int, *, k: int, temperature: float = 1.0,
             eos: int | None = None, pad: int | None = None, generator: torch.Generator | None = None,
             kv_cache: bool = True) -> tuple[torch.Tensor, Counts]:
    """Continue every row of ``prompt`` (B, L) by up to ``n_new`` tokens sampled from ``target`` at
    ``temperature``, drafting ``k`` tokens a round with ``draft`` (both next-token models such as
    ``models.GPT``; with ``kv_cache`` each runs only the tokens its cache lacks). With ``eos`` a row
    stops after writing it (the rest of the row is ``pad``) and generation stops when every row has.
    Returns the (B, L + n_new) sequences (fewer columns if every row ended early) and the ``Counts``.

    The rows of a batch advance together: a round keeps, for every row, as many tokens as the row still
    writing that accepted fewest (m), then one more: the accepted draft token of a row that accepted it,
    or the row's own residual or bonus draw. Each row's tokens are still the target's samples (a row only
    ever stops early, at a point set by other rows' draws, never by its own later ones). A draft ``eos``
    that is accepted ends its row there: the target's verdicts on tokens after it are not counted.
    """
    temperature = checks.temperature(temperature)
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"k (draft tokens per round) must be an integer >= 1, got {k!r}")
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.dtype != torch.long or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be (B, L >= 1) token ids (torch.long), got "
                         f"{tuple(getattr(prompt, 'shape', ()))} {getattr(prompt, 'dtype', type(prompt).__name__)}")
    if not (isinstance(n_new, int) and n_new >= 1):
        raise ValueError(f"n_new must be an integer >= 1, got {n_new!r}")
    if (eos is None) != (pad is None):
        raise ValueError("pass eos and pad together: the token that ends a row and the one written after it")
    limit = min(getattr(target, "block_size", 1 << 30), getattr(draft, "block_size", 1 << 30))
    if prompt.shape[1] + n_new > limit:
        raise ValueError(f"prompt length {prompt.shape[1]} + n_new {n_new} exceeds the models' block_size {limit}")
    models = (target, draft)
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    use_cache = kv_cache and all(hasattr(m, "step") for m in models)
    t_cache, d_cache = ([], []) if use_cache else (None, None)
    seq, end, counts = prompt.clone(), prompt.shape[1] + n_new, Counts()
    B, rows = len(seq), torch.arange(len(seq))
    done = torch.zeros(B, dtype=torch.bool)

    def append(new: torch.Tensor):
        nonlocal seq
        kept = ~(done[:, None] | _after_eos(new, eos))
        new = torch.where(kept, new, pad if eos is not None else new)
        counts.row_calls += int((~done).sum())
        counts.written += int(kept.sum())
        seq = torch.cat([seq, new], dim=1)
        if eos is not None:
            done.logical_or_((kept & (new == eos)).any(1))

    while seq.shape[1] < end and not done.all():
        kk = min(k, end - seq.shape[1] - 1)     # drafts that can still be kept beside the round's own token
        if kk == 0:                             # one token left: the target alone writes it
            p = _next_probs(target, seq, t_cache, temperature, 1)[:, 0]
            counts.target_calls += 1
            append(torch.multinomial(p, 1, generator=generator))
            break
        drafts, qs = seq, []
        for _ in range(kk):
            q = _next_probs(draft, drafts, d_cache, temperature, 1)[:, 0]
            drafts = torch.cat([drafts, torch.multinomial(q, 1, generator=generator)], dim=1)
            qs.append(q)
        d_tokens, q = drafts[:, seq.shape[1]:], torch.stack(qs, dim=1)
        p = _next_probs(target, drafts, t_cache, temperature, kk + 1)
        n_acc, nxt = verify(p, q, d_tokens, generator=generator)
        # a row whose accepted drafts include an <eos> ends there: it judged up to it, all accepted
        j = torch.arange(kk)
        first_eos = torch.where(d_tokens == eos, j, kk).min(1).values if eos is not None else torch.full((B,), kk)
        ends_in_draft = n_acc > first_eos
        n_judged = torch.where(ends_in_draft, first_eos + 1, (n_acc + 1).clamp(max=kk))
        judged = (j < n_judged[:, None]) & ~done[:, None]
        beta = torch.minimum(p[:, :kk], q).sum(-1)                       # 1 - TV at each drafted position
        counts.judged += int(judged.sum())
        counts.accepted += int((judged & (j < n_acc[:, None])).sum())
        counts.expected_accepted += float(beta[judged].sum())
        counts.accepted_variance += float((beta * (1 - beta))[judged].sum())
        counts.target_calls += 1
        counts.draft_calls += kk
        writing = ~done & ~ends_in_draft
        m = int(n_acc[writing].min()) if writing.any() else kk
        last = torch.where(n_acc > m, d_tokens[rows, min(m, kk - 1)], nxt)
        append(torch.cat([d_tokens[:, :m], last.unsqueeze(1)], dim=1))
        _truncate(t_cache, seq.shape[1] - 1)    # the caches hold every position but the newest token
        _truncate(d_cache, seq.shape[1] - 1)
    for m, was in zip(models, was_training):
        m.train(was)
    return seq, counts

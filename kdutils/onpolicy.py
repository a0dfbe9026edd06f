r"""On-policy distillation: the student writes, the teacher grades every token it wrote (notebook 08).

Off-policy distillation trains the student on sequences someone else wrote (the teacher, or a dataset),
teacher-forced; at generation time the student conditions on its *own* earlier tokens, which it was never
trained on. On-policy distillation (GKD, Agarwal et al. 2024; MiniLLM, Gu et al. 2024) closes the gap:

    1. the student samples continuations y ~ p_s(. | x) of prompts x        (``sample``, no gradient,
                                                                            with a KV cache)
    2. the teacher scores every position of (x, y)                          (``teacher_log_probs``)
    3. the student minimises a per-token divergence on those positions,     (``losses.kl_divergence``
       usually the reverse KL  sum_t KL(p_s(.|x, y<t) || p_t(.|x, y<t)),     with ``mask``)
       masked to the tokens it wrote: never the prompt, never the padding.

The gradient flows through the student's per-token distributions only, as in GKD: the samples are
treated as data (no gradient through the sampling), which is what makes it distillation, not RL.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()   # not inference_mode: the sequences are fed to the student in training next
def sample(model, prompt: torch.Tensor, prompt_len: torch.Tensor, *, eos: int, pad: int,
           temperature: float = 1.0, generator: torch.Generator | None = None,
           kv_cache: bool = True) -> torch.Tensor:
    """Continue every row of ``prompt`` (n, L) after its first ``prompt_len[b] + 1`` tokens (a <bos> and
    the prompt), one token at a time, each drawn from softmax(logits / temperature), until ``eos`` or
    the end of the block; ``pad`` after the end. With ``kv_cache`` (and a model with a ``step`` method,
    such as ``models.GPT``) each step runs only the newest token against the cached keys and values;
    otherwise it reruns the whole prefix. The logits, so the tokens drawn, are the same either way
    (``generation_tokens`` counts the cost of each)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if prompt.dim() != 2 or prompt.dtype != torch.long:
        raise ValueError(f"prompt must be (n, L) token ids (torch.long), got {tuple(prompt.shape)} {prompt.dtype}")
    prompt_len = torch.as_tensor(prompt_len)
    if prompt_len.shape != (len(prompt),):
        raise ValueError(f"prompt_len must hold one length per row, shape ({len(prompt)},), got {tuple(prompt_len.shape)}")
    if len(prompt) and (prompt_len.min() < 0 or prompt_len.max() > prompt.shape[1] - 2):
        raise ValueError(f"prompt lengths must be in [0, {prompt.shape[1] - 2}] (a <bos>, the prompt, room to write), "
                         f"got {int(prompt_len.min())}..{int(prompt_len.max())}")
    was_training = model.training
    model.eval()
    seq = prompt.clone()
    done = torch.zeros(len(seq), dtype=torch.bool)
    cache = [] if kv_cache and hasattr(model, "step") else None
    for j in range(1, seq.shape[1]):                       # the position being written
        if cache is None:
            logits = model(seq[:, :j])[:, -1]              # rerun the prefix
        else:
            logits = model.step(seq[:, j - 1:j], cache)[:, -1]     # only the newest token
        nxt = torch.multinomial(F.softmax(logits.float() / temperature, dim=-1), 1, generator=generator).squeeze(1)
        write = (j > prompt_len) & ~done
        seq[:, j] = torch.where(write, nxt, torch.where(done, torch.full_like(nxt, pad), seq[:, j]))
        done |= write & (nxt == eos)
    model.train(was_training)
    return seq


@torch.inference_mode()
def teacher_log_probs(teacher, seq: torch.Tensor) -> torch.Tensor:
    """The teacher's next-token log-probabilities at every position of ``seq[:, :-1]``: (n, L-1, V),
    computed without autograd (the teacher is a fixed grader); ``.clone()`` makes them usable in a loss."""
    return F.log_softmax(teacher(seq[:, :-1]).float(), dim=-1).clone()


def generation_tokens(n: int, length: int, *, kv_cache: bool = True) -> int:
    """Token positions a model runs to write ``n`` rows of ``length`` tokens (a <bos> given): with a KV
    cache one per step, n * (length - 1); without one, step j reruns the j tokens before it,
    n * (1 + 2 + ... + (length - 1))."""
    return n * (length - 1) if kv_cache else n * (length - 1) * length // 2

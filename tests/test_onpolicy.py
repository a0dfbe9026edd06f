"""kdutils.brackets (the language of notebook 08) and kdutils.onpolicy (sampling, grading, costs)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdutils import brackets as br, losses, onpolicy
from kdutils.models import GPT

O, S, C, Q = 0, 1, 2, 3          # ( [ ) ]


def row(*tokens):
    out = torch.full((1, br.BLOCK), br.PAD, dtype=torch.long)
    out[0, 0] = br.BOS
    out[0, 1:1 + len(tokens)] = torch.tensor(tokens)
    return out


def test_sentences_are_complete_sentences_and_seeded():
    a = br.sentences(3000, generator=torch.Generator().manual_seed(1))
    b = br.sentences(3000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    ok, complete = br.check(a)
    assert complete.all(), "every generated sentence reads back as complete"
    n = ((a >= 0) & (a <= 3)).sum(1)
    assert n.min() >= 2 and n.max() <= br.MAX_BRACKETS and (n % 2 == 0).all()
    assert torch.equal(ok, n + 1), "every bracket and the <eos> break no rule"
    assert (n == br.MAX_BRACKETS).any() and (n < 8).any(), "short and long sentences both occur"
    with pytest.raises(ValueError, match="stop"):
        br.sentences(2, generator=torch.Generator(), stop=1.0)


@pytest.mark.parametrize("tokens, ok, complete", [
    ((O, S, Q, C, br.EOS), 5, True),
    ((O, S, C, Q, br.EOS), 2, False),            # ) closes [: the wrong kind
    ((C,), 0, False),                            # a close with nothing open
    ((O, br.EOS), 1, False),                     # <eos> with a bracket open
    ((O, br.PAD, C, br.EOS), 1, False),          # a pad written mid-sentence
    ((O, C), 2, False),                          # no <eos>: not complete
])
def test_check_counts_tokens_before_the_first_broken_rule(tokens, ok, complete):
    got_ok, got_complete = br.check(row(*tokens))
    assert (int(got_ok), bool(got_complete)) == (ok, complete)


def test_check_an_open_that_cannot_be_closed_in_time():
    opens = (O,) * 12 + (C,) * 12 + (br.EOS,)
    assert br.check(row(*opens))[1].item(), "12 opened and closed in 24 fits"
    late = (O, C) * 6 + (O,) * 7                 # 12 brackets written, 7 open: 12 left can close only 12
    ok, _ = br.check(row(*late))
    assert int(ok) == 12 + 6, "the 7th open cannot be closed in the 5 positions left after it"


def test_check_prompts_and_bad_input():
    seq = row(O, S, Q, C, br.EOS)
    ok, complete = br.check(seq, torch.tensor([2]))
    assert int(ok) == 3 and complete.item(), "only the tokens after the 2-bracket prompt count"
    with pytest.raises(ValueError, match="prompt breaks"):
        br.check(row(C, O), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"\(n, 26\)"):
        br.check(torch.zeros(2, 10, dtype=torch.long))


def test_prompts_and_the_continuation_mask():
    g = torch.Generator().manual_seed(3)
    seq = br.sentences(500, generator=g)
    prompt, plen = br.prompts(seq, 6, generator=g)
    n = ((seq >= 0) & (seq <= 3)).sum(1)
    assert (plen <= 6).all() and (plen < n).all() and (plen == 0).any() and (plen == 6).any()
    j = torch.arange(br.BLOCK)
    assert torch.equal(prompt[j <= plen[:, None]], seq[j <= plen[:, None]]) and (prompt[j > plen[:, None]] == br.PAD).all()
    mask = br.continuation_mask(seq, plen)
    eos = (seq == br.EOS).float().argmax(1)
    assert torch.equal(mask.sum(1), eos - plen), "from the last prompt token up to the position predicting <eos>"
    with pytest.raises(ValueError, match="one prompt length per row"):
        br.continuation_mask(seq, plen[:3])
    b = 0
    assert not mask[b, :plen[b]].any() and mask[b, plen[b]] and mask[b, eos[b] - 1] and not mask[b, eos[b]:].any()


class Scripted(nn.Module):
    """A 'model' that always predicts the token ``script[position + 1]`` (a fixed sentence)."""
    def __init__(self, script):
        super().__init__()
        self.script, self.w = script, nn.Parameter(torch.zeros(()))
        self.positions = 0

    def forward(self, idx):
        self.positions += idx.numel()
        logits = torch.full((*idx.shape, len(br.VOCAB)), -1e4)
        nxt = self.script[0, 1:idx.shape[1] + 1]
        logits[:, torch.arange(idx.shape[1]), nxt] = 0.0
        return logits + self.w


def test_sample_keeps_the_prompt_stops_at_eos_and_counts_its_cost():
    script = row(O, S, Q, C, br.EOS)
    model = Scripted(script).train()
    prompt = row(O, S).expand(3, -1).clone()
    plen = torch.tensor([2, 2, 2])
    out = onpolicy.sample(model, prompt, plen, eos=br.EOS, pad=br.PAD, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, script.expand(3, -1)), "the prompt kept, the script continued, <pad> after <eos>"
    assert model.training, "the model's training mode is restored"
    assert model.positions == onpolicy.generation_tokens(3, br.BLOCK, kv_cache=False), \
        "a model without a step method has no KV cache: step j reruns j positions"
    other = row(C, C).expand(3, -1).clone()       # a different prompt is kept as given, even if the model disagrees
    assert torch.equal(onpolicy.sample(model, other, plen, eos=br.EOS, pad=br.PAD)[:, :3], other[:, :3])
    with pytest.raises(ValueError, match="temperature"):
        onpolicy.sample(model, prompt, plen, eos=br.EOS, pad=br.PAD, temperature=0)
    for bad_prompt, bad_len, words in [(prompt[0], plen, "prompt must be"), (prompt.float(), plen, "prompt must be"),
                                       (prompt, plen[:2], "one length per row"), (prompt, torch.tensor([2, 2, 25]), "prompt lengths"),
                                       (prompt, torch.tensor([2, -1, 2]), "prompt lengths")]:
        with pytest.raises(ValueError, match=words):
            onpolicy.sample(model, bad_prompt, bad_len, eos=br.EOS, pad=br.PAD)


def test_sample_is_seeded_and_samples_the_model():
    torch.manual_seed(0)
    model = GPT(len(br.VOCAB), br.BLOCK, n_layer=1, d_model=16)
    prompt = row().expand(2000, -1).clone()
    plen = torch.zeros(2000, dtype=torch.long)
    a = onpolicy.sample(model, prompt, plen, eos=br.EOS, pad=br.PAD, generator=torch.Generator().manual_seed(5))
    b = onpolicy.sample(model, prompt, plen, eos=br.EOS, pad=br.PAD, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with torch.no_grad():
        p_first = F.softmax(model(prompt[:1, :1])[0, -1], -1)
    freq = torch.bincount(a[:, 1], minlength=len(br.VOCAB)).float() / len(a)
    assert (freq - p_first).abs().max() < 0.05, "the first token follows the model's distribution"
    cold = onpolicy.sample(model, prompt[:50], plen[:50], eos=br.EOS, pad=br.PAD, temperature=1e-3)
    assert (cold[:, 1] == p_first.argmax()).all(), "a temperature near 0 is greedy"


def test_teacher_log_probs_are_a_fixed_grade():
    torch.manual_seed(0)
    teacher = GPT(len(br.VOCAB), br.BLOCK, n_layer=1, d_model=16)
    seq = br.sentences(4, generator=torch.Generator().manual_seed(0))
    lp = onpolicy.teacher_log_probs(teacher, seq)
    assert lp.shape == (4, br.BLOCK - 1, len(br.VOCAB)) and not lp.requires_grad
    assert torch.allclose(lp, F.log_softmax(teacher(seq[:, :-1]), -1), atol=1e-6)
    z = torch.randn(4, br.BLOCK - 1, len(br.VOCAB), requires_grad=True)
    losses.kl_divergence(z, lp, direction="reverse").backward()   # usable in a loss outside inference mode
    assert z.grad is not None


def test_generation_tokens():
    assert onpolicy.generation_tokens(1, 4, kv_cache=False) == 1 + 2 + 3
    assert onpolicy.generation_tokens(10, 26, kv_cache=False) == 10 * 25 * 26 // 2
    assert onpolicy.generation_tokens(10, 26) == 10 * 25


def test_kv_cache_gives_the_same_logits_and_tokens_as_rerunning_the_prefix():
    torch.manual_seed(0)
    model = GPT(len(br.VOCAB), br.BLOCK, n_layer=2, d_model=32).eval()
    seq = br.sentences(6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(seq)
        cache = []
        one_by_one = torch.cat([model.step(seq[:, j:j + 1], cache) for j in range(seq.shape[1])], dim=1)
        cache = []                                  # a prefill of 5 tokens, then two blocks of several at once
        chunks = torch.cat([model.step(seq[:, :5], cache), model.step(seq[:, 5:9], cache), model.step(seq[:, 9:], cache)], 1)
    assert torch.allclose(one_by_one, full, atol=1e-5) and torch.allclose(chunks, full, atol=1e-5)
    with pytest.raises(ValueError, match="exceeds block_size"):
        model.step(seq[:, :1], cache)
    prompt, plen = br.prompts(br.sentences(300, generator=torch.Generator().manual_seed(2)), 6,
                              generator=torch.Generator().manual_seed(3))
    cached = onpolicy.sample(model, prompt, plen, eos=br.EOS, pad=br.PAD, generator=torch.Generator().manual_seed(4))
    rerun = onpolicy.sample(model, prompt, plen, eos=br.EOS, pad=br.PAD, generator=torch.Generator().manual_seed(4),
                            kv_cache=False)
    assert torch.equal(cached, rerun), "the same tokens, drawn with the same generator"
    assert model.training is False

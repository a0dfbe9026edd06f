"""kdutils.speculative: the output is the target's distribution whatever the draft, the acceptance
probability is 1 - TV, the KV-cached sampler equals the uncached one."""
import pytest
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats

from kdutils import models, speculative

LEVEL = 1e-3      # a seeded test: a p-value under this would mean the sampler is not the target's


def chi_square_p(tokens: torch.Tensor, expected: torch.Tensor) -> float:
    """p-value of the chi-square goodness-of-fit test of ``tokens`` against the probabilities
    ``expected``, the cells expected fewer than 5 times merged into one (the test's approximation)."""
    n = len(tokens)
    counts = torch.bincount(tokens, minlength=len(expected)).double()
    exp = expected.double() / expected.double().sum() * n
    big = exp >= 5
    obs, want = counts[big].tolist(), exp[big].tolist()
    if (~big).any():
        obs.append(float(counts[~big].sum()))
        want.append(float(exp[~big].sum()))
    return float(scipy_stats.chisquare(obs, want).pvalue)


def rows(dist: torch.Tensor, n: int) -> torch.Tensor:
    return dist.expand(n, *dist.shape).contiguous()


P = torch.tensor([0.70, 0.20, 0.10])          # the source's quiz distribution (a1 q5, q6)


def test_acceptance_probability_is_one_minus_total_variation():
    torch.manual_seed(0)
    p = torch.distributions.Dirichlet(torch.ones(7)).sample((50,))
    q = torch.distributions.Dirichlet(torch.full((7,), 0.3)).sample((50,))
    tv = 0.5 * (p - q).abs().sum(-1)
    assert torch.allclose(speculative.acceptance_probability(p, q), 1 - tv, atol=1e-6)
    assert torch.allclose(speculative.acceptance_probability(p, p), torch.ones(50))
    disjoint = speculative.acceptance_probability(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert float(disjoint) == 0.0
    quiz = speculative.acceptance_probability(P, torch.tensor([0.6, 0.25, 0.15]))
    assert abs(float(quiz) - 0.9) < 1e-6      # min: 0.6 + 0.2 + 0.1


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="probabilities, not logits"):
        speculative.acceptance_probability(torch.tensor([2.0, -1.0, 0.5]).abs(), P)
    with pytest.raises(ValueError, match="same shape"):
        speculative.acceptance_probability(P, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="NaN"):
        speculative.acceptance_probability(torch.tensor([float("nan"), 0.5, 0.5]), P)
    with pytest.raises(ValueError, match="target_probs"):
        speculative.verify(rows(P, 4)[:, None], rows(P, 4)[:, None], torch.zeros(4, 1, dtype=torch.long))
    target, draft = models.GPT(5, 8, d_model=16), models.GPT(5, 8, d_model=16)
    prompt = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        speculative.generate(target, draft, prompt, 2, k=2, temperature=0.0)
    with pytest.raises(ValueError, match="k"):
        speculative.generate(target, draft, prompt, 2, k=0)
    with pytest.raises(ValueError, match="block_size"):
        speculative.generate(target, draft, prompt, 6, k=2)


def test_verify_outputs_the_target_distribution_and_accepts_at_one_minus_tv():
    n, g = 40_000, torch.Generator().manual_seed(0)
    q = torch.tensor([0.2, 0.3, 0.5])         # a poor draft for P
    draft = torch.multinomial(rows(q, n), 1, generator=g)
    n_acc, nxt = speculative.verify(rows(torch.stack([P, P]), n), rows(q, n)[:, None], draft, generator=g)
    out = torch.where(n_acc == 1, draft[:, 0], nxt)
    assert chi_square_p(out, P) > LEVEL
    beta = float(speculative.acceptance_probability(P, q))
    se = (beta * (1 - beta) / n) ** 0.5
    assert abs(float((n_acc == 1).double().mean()) - beta) < 4 * se

    # the test can tell: resampling from the draft instead of the residual is the classic mistake
    wrong = torch.where(n_acc == 1, draft[:, 0], torch.multinomial(rows(q, n), 1, generator=g)[:, 0])
    assert chi_square_p(wrong, P) < LEVEL


def test_verify_over_k_positions_keeps_each_position_the_target_s_and_adds_the_bonus():
    """Independent positions: the token a row writes at position j (a kept draft token, its residual
    draw, or the bonus token after k acceptances) is distributed as p_j."""
    n, k, g = 30_000, 3, torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    p = torch.distributions.Dirichlet(torch.ones(6)).sample((k + 1,))
    q = torch.distributions.Dirichlet(torch.ones(6)).sample((k,))
    draft = torch.stack([torch.multinomial(rows(q[i], n), 1, generator=g)[:, 0] for i in range(k)], dim=1)
    n_acc, nxt = speculative.verify(rows(p, n), rows(q, n), draft, generator=g)
    assert ((0 <= n_acc) & (n_acc <= k)).all()
    for j in range(k + 1):
        reached = n_acc >= j
        token = torch.where(n_acc[reached] > j, draft[reached, min(j, k - 1)], nxt[reached])
        assert chi_square_p(token, p[j]) > LEVEL, f"position {j}"
    beta = speculative.acceptance_probability(p[:k], q)
    assert abs(float((n_acc >= 1).double().mean()) - float(beta[0])) < 4 * (0.25 / n) ** 0.5


def test_a_draft_equal_to_the_target_is_always_accepted():
    n, g = 1000, torch.Generator().manual_seed(2)
    draft = torch.multinomial(rows(P, n), 2, replacement=True, generator=g)
    n_acc, _ = speculative.verify(rows(torch.stack([P, P, P]), n), rows(torch.stack([P, P]), n), draft, generator=g)
    assert (n_acc == 2).all()


def sharp_gpt(seed: int, scale: float = 6.0) -> models.GPT:
    """A random small GPT whose next-token distributions depend strongly on the context."""
    torch.manual_seed(seed)
    m = models.GPT(5, 8, n_layer=1, n_head=2, d_model=16).double()
    with torch.no_grad():
        m.head.weight.mul_(scale)
    return m.eval()


def two_token_distribution(model, prompt):
    """The exact probability of every pair (a, b) of the first two tokens the model samples after ``prompt``."""
    with torch.no_grad():
        first = F.softmax(model(prompt[None])[0, -1], -1)
        seqs = torch.cat([prompt.expand(5, -1), torch.arange(5)[:, None]], dim=1)
        second = F.softmax(model(seqs)[:, -1], -1)
    return (first[:, None] * second).flatten()


def test_generate_samples_the_target_whatever_the_draft():
    target, draft = sharp_gpt(0), sharp_gpt(1)
    prompt = torch.tensor([0, 3])
    n, g = 6000, torch.Generator().manual_seed(3)
    seq, counts = speculative.generate(target, draft, prompt.expand(n, -1).contiguous(), 4, k=3, generator=g)
    assert seq.shape == (n, 6) and (seq[:, :2] == prompt).all()
    pairs = seq[:, 2] * 5 + seq[:, 3]
    expected = two_token_distribution(target, prompt)
    assert chi_square_p(pairs, expected) > LEVEL
    # the test has the power to tell: the draft's own samples are not the target's
    own, _ = speculative.generate(draft, draft, prompt.expand(n, -1).contiguous(), 4, k=3, generator=g)
    assert chi_square_p(own[:, 2] * 5 + own[:, 3], expected) < LEVEL
    assert 0 < counts.acceptance_rate < 1 and 1 <= counts.tokens_per_target_call <= 4
    assert counts.written == 4 * n and counts.row_calls == n * counts.target_calls
    assert counts.draft_calls >= counts.target_calls
    # the measured acceptance is 1 - TV at the positions judged, within its sampling error
    assert abs(counts.accepted - counts.expected_accepted) < 4 * counts.accepted_variance ** 0.5


def test_generate_with_the_target_as_its_own_draft_accepts_everything():
    target = sharp_gpt(0)
    seq, counts = speculative.generate(target, target, torch.zeros(50, 1, dtype=torch.long), 7, k=2,
                                       generator=torch.Generator().manual_seed(4))
    assert counts.acceptance_rate == 1.0 and counts.accepted == counts.judged
    assert counts.expected_acceptance == pytest.approx(1.0)
    assert counts.target_calls == 3           # rounds of 3 tokens, 3 and 1 (the last written by the target alone)
    assert counts.tokens_per_target_call == pytest.approx(7 / 3)


def test_kv_cached_generation_equals_uncached():
    target, draft = sharp_gpt(0), sharp_gpt(1)
    prompt = torch.tensor([[0, 3], [1, 1], [4, 2]]).repeat(20, 1)
    cached, c1 = speculative.generate(target, draft, prompt, 6, k=3, generator=torch.Generator().manual_seed(5))
    rerun, c2 = speculative.generate(target, draft, prompt, 6, k=3, generator=torch.Generator().manual_seed(5),
                                     kv_cache=False)
    assert torch.equal(cached, rerun)
    assert (c1.judged, c1.accepted, c1.written, c1.target_calls) == (c2.judged, c2.accepted, c2.written, c2.target_calls)
    assert c1.expected_accepted == pytest.approx(c2.expected_accepted)


def target_sentences(model, prompt, n_new, eos, pad, generator):
    """The target's own sampler, one token at a time, stopping each row at ``eos`` (the reference)."""
    seq, done = prompt.clone(), torch.zeros(len(prompt), dtype=torch.bool)
    with torch.no_grad():
        for _ in range(n_new):
            nxt = torch.multinomial(F.softmax(model(seq)[:, -1], -1), 1, generator=generator)[:, 0]
            seq = torch.cat([seq, torch.where(done, pad, nxt)[:, None]], dim=1)
            done |= nxt == eos
    return seq


def test_generate_stops_a_row_at_eos_and_still_samples_the_target():
    """With eos, a row ends where the target would end it: the whole sentence (up to and with its eos)
    has the distribution of the target's own sampler, padding follows, nothing after an eos is counted."""
    EOS, PAD = 4, 0                           # a padding id the models may also write: counted by position, not by id
    target, draft = sharp_gpt(2, scale=3.0), sharp_gpt(3, scale=3.0)
    n, g = 8000, torch.Generator().manual_seed(7)
    prompt = torch.zeros(n, 1, dtype=torch.long)
    seq, counts = speculative.generate(target, draft, prompt, 4, k=2, eos=EOS, pad=PAD, generator=g)
    after = speculative._after_eos(seq[:, 1:], EOS)
    assert after.any() and (seq[:, 1:][after] == PAD).all()
    assert counts.written == int((~after).sum())
    assert abs(counts.accepted - counts.expected_accepted) < 4 * counts.accepted_variance ** 0.5
    ref = target_sentences(target, prompt, 4, EOS, PAD, g)
    code = lambda s: [tuple(r) for r in s[:, 1:].tolist()]
    cells = sorted(set(code(seq)) | set(code(ref)))
    index = {c: i for i, c in enumerate(cells)}
    table = torch.zeros(2, len(cells), dtype=torch.float64)
    for row, sample in enumerate((seq, ref)):
        for c in code(sample):
            table[row, index[c]] += 1
    big = table.sum(0) >= 10
    table = torch.cat([table[:, big], table[:, ~big].sum(1, keepdim=True)], dim=1)
    assert scipy_stats.chi2_contingency(table.numpy()).pvalue > LEVEL
    # and the test can tell: the draft's own sentences are not the target's
    other = target_sentences(draft, prompt, 4, EOS, PAD, g)
    table2 = torch.zeros(2, len(cells) + 1, dtype=torch.float64)
    for row, sample in enumerate((other, ref)):
        for c in code(sample):
            table2[row, index.get(c, len(cells))] += 1
    assert scipy_stats.chi2_contingency(table2[:, table2.sum(0) > 0].numpy()).pvalue < LEVEL


def test_generate_refuses_eos_without_pad():
    target = sharp_gpt(0)
    with pytest.raises(ValueError, match="eos and pad"):
        speculative.generate(target, target, torch.zeros(2, 1, dtype=torch.long), 3, k=2, eos=4)


def test_expected_tokens_and_speedup():
    for beta in (0.0, 0.3, 0.8, 0.95):
        for k in (1, 2, 4, 8):
            closed = (1 - beta ** (k + 1)) / (1 - beta)
            assert float(speculative.expected_tokens(beta, k)) == pytest.approx(closed)
            assert float(speculative.expected_speedup(beta, k, 0.1)) == pytest.approx(closed / (0.1 * k + 1))
    assert float(speculative.expected_tokens(1.0, 4)) == 5
    # against a simulation of independent acceptances: tokens per round = min(first rejection, k) + 1
    g = torch.Generator().manual_seed(6)
    acc = torch.rand(200_000, 4, generator=g) < 0.7
    per_round = acc.long().cumprod(-1).sum(-1) + 1
    assert float(per_round.double().mean()) == pytest.approx(float(speculative.expected_tokens(0.7, 4)), abs=0.01)


def test_probabilities_are_checked_like_the_losses_inputs():
    for bad, says in [([0.7, 0.2, 0.1], "tensor of probabilities"), (torch.tensor([1, 0, 0]), "floating-point"),
                      (torch.tensor([0.9, 0.3, -0.2]), "negative"), (torch.tensor([0.5, 0.2, 0.1]), "sum to 1")]:
        with pytest.raises(ValueError, match=says):
            speculative.acceptance_probability(bad, P)

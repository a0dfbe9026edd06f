"""kdutils.hf, kdutils.cross_tokenizer and kdutils.wordlang: the practitioners' tools, offline (notebook 11)."""
import math
import subprocess
import sys

import pytest
import torch

hf = pytest.importorskip("kdutils.hf")
import transformers  # noqa: E402

from kdutils import cross_tokenizer as CT, losses, wordlang  # noqa: E402


@pytest.fixture(scope="module")
def corpus():
    return [f"{p} {a}" for p, a in wordlang.conversations(400, generator=torch.Generator().manual_seed(0))]


@pytest.fixture(scope="module")
def tokenizers():
    from kdutils import zoo
    return zoo.word_tokenizer(129, seed=1), zoo.word_tokenizer(64, seed=0)     # notebook 11's: teacher (words whole), student


def test_a_hub_call_fails_offline():
    with pytest.raises(OSError):
        transformers.AutoTokenizer.from_pretrained("openai-community/gpt2")


@pytest.mark.slow
def test_the_library_never_imports_transformers():
    code = ("import sys, kdutils, kdutils.losses, kdutils.token_losses, kdutils.zoo, kdutils.cross_tokenizer, "
            "kdutils.wordlang, kdutils.train; assert 'transformers' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_wordlang_sentences_and_their_true_likelihood():
    pairs = wordlang.conversations(300, generator=torch.Generator().manual_seed(3))
    for p, a in pairs:
        words = (p + " " + a).split()
        assert wordlang.MIN_WORDS <= len(words) <= wordlang.MAX_WORDS and set(words) <= set(wordlang.WORDS)
    # the empirical NLL of samples estimates the language's entropy, which the table gives exactly for the first step
    table = wordlang.transition_log_probs()
    assert torch.allclose(table.exp().sum(1), torch.ones(len(wordlang.WORDS)))
    nll = [wordlang.nll_per_word(p, a) for p, a in pairs]
    assert all(0 < x < 10 for x in nll)
    with pytest.raises(KeyError):
        wordlang.nll_per_word("the cat sees", "a unicorn")


def test_tokenizers_have_a_chat_template_and_a_pad_distinct_from_eos(tokenizers):
    tok_t, tok_s = tokenizers
    for tok in tokenizers:
        assert tok.pad_token_id != tok.eos_token_id
        assert tok.apply_chat_template(hf.chat("the cat sees", "a dog"), tokenize=False) == "<user>the cat sees<assistant>a dog<eos>"
    assert all(len(CT.word_pieces(tok_t, "▁" + w)) == 1 for w in wordlang.WORDS)
    assert sum(len(CT.word_pieces(tok_s, "▁" + w)) for w in wordlang.WORDS) > 1.5 * len(wordlang.WORDS)
    same = hf.train_tokenizer(["a b"], 10, pad_is_eos=True)
    assert same.pad_token_id == same.eos_token_id


def test_encode_chats_labels_the_answer_and_its_eos_only(tokenizers):
    tok = tokenizers[1]
    b = hf.encode_chats(tok, [("the cat sees", "a dog"), ("a red fish", "eats the big mouse then")], length=40)
    for row in range(2):
        ids, labels, att = b["input_ids"][row], b["labels"][row], b["attention_mask"][row]
        n = int(att.sum())
        labelled = (labels != -100).nonzero().flatten()
        assert labelled.max() == n - 1 and labels[n - 1] == tok.eos_token_id           # the EOS is learned
        assert (ids[labelled] == labels[labelled]).all() and (ids[n:] == tok.pad_token_id).all()
        assert tok.decode(ids[labelled[0]:n], skip_special_tokens=True).strip() == ["a dog", "eats the big mouse then"][row]
    with pytest.raises(ValueError, match="does not fit"):
        hf.encode_chats(tok, [("the cat sees", "a dog")], length=5)


def test_masking_pad_by_id_drops_every_eos_when_pad_is_eos(corpus):
    tok = hf.train_tokenizer(corpus, 60, pad_is_eos=True)
    b = hf.encode_chats(tok, wordlang.conversations(20, generator=torch.Generator().manual_seed(4)), length=80)
    assert (b["labels"] == tok.eos_token_id).sum() == 20
    assert (hf.mask_pad_by_id(b, tok.pad_token_id)["labels"] == tok.eos_token_id).sum() == 0


def test_distillation_loss_sum_is_the_course_loss_on_shifted_labelled_positions():
    g = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(3, 7, 11, generator=g), torch.randn(3, 7, 11, generator=g)
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[:, :2] = -100; labels[2, 5:] = -100
    total, count = hf.distillation_loss_sum(z_s, z_t, labels, temperature=2.0, alpha=0.3)
    mask = labels[:, 1:] != -100
    expected = losses.distillation_loss(z_s[:, :-1], z_t[:, :-1], labels[:, 1:], temperature=2.0, alpha=0.3, mask=mask)
    assert count == mask.sum() and torch.isclose(total / count, expected)
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        hf.distillation_loss_sum(z_s, torch.randn(3, 7, 12), labels)
    with pytest.raises(ValueError, match="leading shape"):
        hf.distillation_loss_sum(z_s, z_t, labels[:, :5])


def test_trainer_accumulation_is_exact_only_with_num_items_in_batch(tokenizers, tmp_path):
    tok = tokenizers[1]
    pairs = wordlang.conversations(16, generator=torch.Generator().manual_seed(5))
    data = hf.ListDataset(hf.encode_chats(tok, pairs, length=80))
    teacher = hf.causal_lm(tok, n_layer=1, n_embd=16, seed=1)

    def weights(batch, accumulate, micro_batch_mean=False):
        student = hf.causal_lm(tok, n_layer=1, n_embd=16, seed=0)
        args = hf.training_args(tmp_path, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulate,
                                max_steps=2, learning_rate=1e-3)
        trainer = hf.DistillationTrainer(model=student, args=args, train_dataset=data, teacher=teacher,
                                         temperature=2.0, alpha=0.5, micro_batch_mean=micro_batch_mean)
        trainer.remove_callback(transformers.PrinterCallback)
        trainer.train()
        return torch.cat([p.detach().flatten() for p in student.parameters()])

    one = weights(8, 1)
    exact, wrong = (weights(4, 2) - one).abs().max(), (weights(4, 2, micro_batch_mean=True) - one).abs().max()
    assert exact < 1e-5 and wrong > 100 * max(exact, 1e-7), (exact, wrong)


def test_course_generalized_jsd_equals_trl_at_every_beta_and_temperature():
    gkd = pytest.importorskip("trl.experimental.gkd")
    g = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(2, 6, 9, generator=g, dtype=torch.float64), 2 * torch.randn(2, 6, 9, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 9, (2, 6), generator=g)
    labels[:, :2] = -100
    keep = labels != -100
    for beta in (0.0, 0.1, 0.5, 0.9, 1.0):
        for T in (1.0, 2.0):
            theirs = gkd.GKDTrainer.generalized_jsd_loss(z_s, z_t, labels=labels, beta=beta, temperature=T)
            ours = losses.generalized_jsd(z_s, z_t, beta=beta, temperature=T, mask=keep)
            assert torch.isclose(theirs, ours, rtol=0, atol=1e-12), (beta, T)
            mean = gkd.GKDTrainer.generalized_jsd_loss(z_s, z_t, labels=labels, beta=beta, temperature=T, reduction="mean")
            assert torch.isclose(mean, ours / 9)                # TRL's "mean" also averages over the vocabulary


def test_check_same_tokenizer_refuses_different_vocabularies(tokenizers):
    tok_t, tok_s = tokenizers
    CT.check_same_tokenizer(tok_s, tok_s)
    with pytest.raises(ValueError, match="different tokenizers.*re-tokenize"):
        CT.check_same_tokenizer(tok_s, tok_t)


def test_word_projection_is_the_teachers_word_distribution_through_the_students_pieces(tokenizers):
    tok_t, tok_s = tokenizers
    proj = CT.WordProjection(tok_t, tok_s)
    assert proj.word_coverage(wordlang.WORDS) == 1.0
    g = torch.Generator().manual_seed(0)
    words = torch.tensor([tok_t.convert_tokens_to_ids("▁" + w) for w in wordlang.WORDS] + [tok_t.eos_token_id])
    p = torch.zeros(len(tok_t)).index_copy(0, words, torch.rand(len(words), generator=g, dtype=torch.float64).float())
    p /= p.sum()
    for w in wordlang.WORDS:
        pieces = CT.word_pieces(tok_s, "▁" + w)
        prob = math.prod(proj.project(p, pieces[:r])[pieces[r]].item() for r in range(len(pieces)))
        assert math.isclose(prob, p[tok_t.convert_tokens_to_ids("▁" + w)].item(), rel_tol=1e-4)
    assert torch.isclose(proj.project(p, [])[tok_s.eos_token_id], p[tok_t.eos_token_id])
    # targets on a batch: distributions at exactly the student's answer positions
    pairs = wordlang.conversations(5, generator=torch.Generator().manual_seed(6))
    b_s, b_t = hf.encode_chats(tok_s, pairs, length=80), hf.encode_chats(tok_t, pairs, length=80)
    probs = torch.rand(5, 80, len(tok_t), generator=g).softmax(-1)
    q, mask = proj.targets(pairs, probs, b_t, b_s)
    assert torch.equal(mask, b_s["labels"][:, 1:] != -100)
    assert torch.allclose(q[mask].sum(-1), torch.ones(int(mask.sum())))
    with pytest.raises(ValueError, match="not where the projection expects"):
        proj.targets(list(reversed(pairs)), probs, b_t, b_s)


def test_kl_to_targets_is_the_kl_to_the_teachers_probabilities():
    g = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(4, 5, 7, generator=g), torch.randn(4, 5, 7, generator=g)
    mask = torch.rand(4, 5, generator=g) > 0.3
    assert torch.isclose(CT.kl_to_targets(z_s, z_t.softmax(-1), mask), losses.kl_divergence(z_s, z_t, mask=mask), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        CT.kl_to_targets(z_s, z_t.softmax(-1)[..., :6], mask)


def test_uld_compares_sorted_probabilities_paired_in_order_up_to_the_shorter():
    g = torch.Generator().manual_seed(0)
    z_t = torch.randn(2, 6, 9, generator=g)
    perm = torch.randperm(9, generator=g)
    z_s = torch.cat([z_t[..., perm], torch.full((2, 6, 3), -1e4)], -1)      # another vocabulary, the same sorted probs
    m = torch.ones(2, 6, dtype=torch.bool)
    assert CT.uld_loss(z_s, z_t, student_mask=m, teacher_mask=m) < 1e-6
    # pairing: the k-th masked position of each; the student's extra positions are dropped
    s_mask = torch.zeros(2, 6, dtype=torch.bool); s_mask[:, 2:] = True
    t_mask = torch.zeros(2, 6, dtype=torch.bool); t_mask[:, :3] = True
    got = CT.uld_loss(z_s, z_t, student_mask=s_mask, teacher_mask=t_mask)
    p_s = z_s[:, 2:5].softmax(-1).sort(-1, descending=True).values
    p_t = torch.nn.functional.pad(z_t[:, :3].softmax(-1).sort(-1, descending=True).values, (0, 3))
    assert torch.isclose(got, (p_s - p_t).abs().sum(-1).mean(), atol=1e-6)

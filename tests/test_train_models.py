import pandas as pd
import pytest
import torch

from kdutils import diagnose, losses, metrics, models, runtime, train


def toy(n=400, d=10, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    return centers[y] + torch.randn(n, d, generator=g) * 0.5, y


def test_model_shapes_and_parameter_counts():
    assert models.MNIST1DCNN()(torch.randn(5, 40)).shape == (5, 10)
    assert models.MNIST1DCNN(in_channels=2)(torch.randn(5, 2, 40)).shape == (5, 10)
    assert models.MLP()(torch.randn(5, 40)).shape == (5, 10)
    assert models.DigitsCNN()(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert models.digits_mlp()(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    # the MNIST-1D paper's baselines: 40*100+100 + 100*100+100 + 100*10+10 for the MLP
    assert models.num_parameters(models.MLP()) == 15210
    assert models.num_parameters(models.MNIST1DCNN()) == (25 * 5 + 25) + 2 * (25 * 25 * 3 + 25) + (125 * 10 + 10)
    assert models.num_parameters(models.MLP(depth=0)) == 410


def test_fit_supervised_learns_and_is_deterministic():
    x, y = toy()
    runs = []
    for _ in range(2):
        runtime.seed_everything(0)
        m = models.MLP(10, 3, hidden=16)
        r = train.fit(m, x, y, epochs=5, eval_sets={"train": (x, y)}, seed=3, progress=False)
        runs.append((r.history, [p.detach().clone() for p in m.parameters()], r))
    (h, w, r), (h2, w2, _) = runs
    assert isinstance(h, pd.DataFrame) and list(h.columns) == ["epoch", "step", "train_loss", "train_acc"]
    assert h.train_acc.iloc[-1] > 0.95 and h.train_loss.iloc[-1] < h.train_loss.iloc[0]
    assert all(torch.equal(a, b) for a, b in zip(w, w2)), "same seed, same weights"
    assert r.fed.shape == (100, 10) and r.steps == 5 * 4     # 400 rows, batches of 100
    assert r.objective == "cross-entropy on the labels (no teacher)"
    assert r.seed == 3, "the run records the seed that ordered its batches"


def test_distil_matches_teacher_and_uses_teacher_inputs():
    x, y = toy()
    runtime.seed_everything(0)
    teacher = models.MLP(10, 3, hidden=32)
    train.fit(teacher, x, y, epochs=10, progress=False)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.zero_grad(set_to_none=True)   # clear what its own training left
    student = models.MLP(10, 3, hidden=8)
    train.distil(student, x, teacher=teacher, temperature=2.0, epochs=20, progress=False)
    zt, zs = train.predict(teacher, x), train.predict(student, x)
    assert metrics.top1_agreement(zs, zt) > 0.95
    assert teacher.training is False, "the teacher is left in eval mode"
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "distillation must not change the teacher's weights"
    assert all(p.grad is None for p in teacher.parameters()), "no gradient flows into the teacher"
    # the teacher can read different inputs from the student (x vs x'): here a permuted copy
    perm = x[:, torch.randperm(10)]
    s2 = models.MLP(10, 3, hidden=8)
    h = train.distil(s2, perm, teacher=teacher, teacher_x=x, epochs=20, progress=False)
    fed = h.fed
    assert h.objective.startswith("distillation: 1 * T^2 * KL") and "T = 4" in h.objective, h.objective
    assert any(torch.equal(row, p) for row in fed[:1] for p in perm), "the student was fed x', not x"
    assert metrics.top1_agreement(train.predict(s2, perm), zt) > 0.9


def test_distil_transfer_set_and_custom_loss():
    x, y = toy()
    xt, _ = toy(n=600, seed=1)
    runtime.seed_everything(0)
    teacher = models.MLP(10, 3, hidden=32)
    train.fit(teacher, x, y, epochs=10, progress=False)
    seen = []

    def loss_fn(s, t, labels):
        seen.append((labels == -100).sum().item())
        return losses.kl_divergence(s, t, direction="reverse")

    student = models.MLP(10, 3, hidden=8)
    train.distil(student, x[:50], y[:50], teacher=teacher, transfer_x=xt, loss_fn=loss_fn, epochs=2, progress=False)
    assert sum(seen) == 2 * 600, "every transfer row is unlabeled (-100), every epoch"


def test_fit_rejects_bad_configuration():
    x, y = toy()
    m = models.MLP(10, 3)
    with pytest.raises(ValueError, match="labels"):
        train.fit(m, x, None, progress=False)
    with pytest.raises(ValueError, match="rows"):
        train.fit(m, x, y[:10], progress=False)
    with pytest.raises(ValueError, match="schedule"):
        train.fit(m, x, y, schedule="step", progress=False)
    with pytest.raises(ValueError, match="not both"):
        train.fit(m, x, y, epochs=2, steps=5, progress=False)
    # a teacher's options given to fit, or a misspelt option, would be silently ignored: refused, named
    for option in ("teacher", "transfer_x", "alpha", "loss_fn"):
        with pytest.raises(TypeError, match=f"{option}.*train.distil"):
            train.fit(m, x, y, **{option: m}, progress=False)
    with pytest.raises(TypeError, match="unknown option.*epoch\\b"):
        train.distil(m, x, y, teacher=m, epoch=3, progress=False)
    with pytest.raises(ValueError, match="teacher_x"):
        train.distil(m, x, y, teacher=m, teacher_x=x[:5], progress=False)
    with pytest.raises(ValueError, match="transfer_teacher_x"):
        train.distil(m, x, y, teacher=m, transfer_teacher_x=x, progress=False)
    with pytest.raises(ValueError, match="rows"):
        train.distil(m, x, y[:10], teacher=m, progress=False)
    with pytest.raises(ValueError, match="ignored"):
        train.distil(m, x, y, teacher=m, loss_fn=lambda s, t, lab: s.sum(), temperature=2.0, progress=False)
    with pytest.raises(ValueError, match="alpha = 1"):
        train.distil(m, x, None, teacher=m, alpha=0.5, progress=False)


def test_fit_steps_are_exact_and_match_across_data_sizes():
    x, y = toy()                                   # 400 rows: 4 batches of 100 per epoch
    for n, steps in [(400, 7), (50, 7), (400, 1)]:
        m = models.MLP(10, 3, hidden=8)
        r = train.fit(m, x[:n], y[:n], steps=steps, schedule="cosine", progress=False,
                      eval_sets={"train": (x, y)})
        assert r.steps == steps, (n, steps)
        assert len(r.history) == -(-steps // -(-n // 100)), "one history row per (possibly partial) epoch"


def test_diagnose_flags_a_different_input_distribution():
    g = torch.Generator().manual_seed(0)
    deploy = torch.stack([torch.randn(200, 40, generator=g), torch.zeros(200, 40)], 1)  # second sensor absent
    same = torch.stack([torch.randn(200, 40, generator=g), torch.zeros(200, 40)], 1)
    wrong = torch.stack([torch.randn(200, 40, generator=g), torch.randn(200, 40, generator=g)], 1)
    good = diagnose.check_student_inputs(same, deploy)
    bad = diagnose.check_student_inputs(wrong, deploy)
    assert good["ok"] and good["two_sample_auc"] < 0.7
    assert not bad["ok"] and bad["two_sample_auc"] > 0.9
    assert {"statistic": "std", "channel": 1} in bad["flagged"]
    with pytest.raises(ValueError, match="unlike the deployment"):
        diagnose.check_student_inputs(wrong, deploy, raise_on_mismatch=True)
    with pytest.raises(ValueError, match="different shapes"):
        diagnose.compare_inputs(wrong, deploy[:, :1])


def test_tasks_variable_length_batches_are_padded_and_masked():
    from kdutils import tasks
    g = torch.Generator().manual_seed(0)
    tokens, mask = tasks.mixed_batch(64, (2, 5), generator=g)
    assert tokens.shape == mask.shape == (64, 12)
    pad, sep = tasks.TOKEN[tasks.PAD], tasks.TOKEN[tasks.SEP]
    for row, m in zip(tokens, mask):
        L = int((row == sep).nonzero()[0]) - 1                     # instruction, L digits, '='
        assert 2 <= L <= 5 and m.sum() == L
        assert (row[2 * L + 2:] == pad).all() and not (row[:2 * L + 2] == pad).any()
        assert m.nonzero().flatten().tolist() == list(range(L + 1, 2 * L + 1))   # never a pad position
        instr = tasks.INSTRUCTIONS[int(row[0]) - 10]
        q = row[1:L + 1][None]
        assert torch.equal(row[L + 2:2 * L + 2], tasks.apply(instr, q)[0]), "the answer follows the instruction"
    gpt = models.GPT(len(tasks.VOCAB), 12, n_layer=1, d_model=16)
    assert gpt(tokens).shape == (64, 12, len(tasks.VOCAB))
    with pytest.raises(ValueError, match="block_size"):
        gpt(torch.zeros(1, 13, dtype=torch.long))


def test_fit_steps_is_adamw_one_cycle_on_the_callers_loss_and_next_token_training_is_built_on_it():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 11, (64, 9), generator=g)
    keep = torch.rand(64, 8, generator=g) < 0.7

    def model_():
        runtime.seed_everything(0)
        return models.GPT(11, 9, n_layer=1, n_head=2, d_model=16)

    # the loop written out: AdamW, one-cycle, zero_grad / backward / step / schedule step
    mine = model_()
    opt = torch.optim.AdamW(mine.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=12)
    expected = []
    for step in range(12):
        rows = slice(4 * step, 4 * step + 16)
        loss = torch.nn.functional.cross_entropy(mine(tokens[rows, :-1])[keep[rows]], tokens[rows, 1:][keep[rows]])
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        expected.append(loss.item())
    ref = model_()
    curve = train.fit_steps(ref, lambda step: train.next_token_loss(ref, tokens[4 * step:4 * step + 16], keep[4 * step:4 * step + 16]), 12)
    assert curve == expected, "one loss per step, the losses of the loop written out"
    assert all(torch.equal(a, b) for a, b in zip(mine.parameters(), ref.parameters()))
    # fit_next_token draws its batches from the generator it is given, one per step
    a, b = model_(), model_()
    draw = lambda gen: (tokens[torch.randint(0, 64, (16,), generator=gen)], torch.ones(16, 8, dtype=torch.bool))
    train.fit_next_token(a, draw, 5, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    train.fit_steps(b, lambda step: train.next_token_loss(b, *draw(gen)), 5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="steps"):
        train.fit_steps(a, lambda step: None, 0)


def test_gpt_logits_are_its_head_on_its_hidden_states():
    runtime.seed_everything(0)
    m = models.GPT(13, 8, n_layer=2, n_head=2, d_model=16)
    x = torch.randint(0, 13, (3, 8))
    h = m.hidden(x)
    assert h.shape == (3, 8, 16) and torch.equal(m.head(h), m(x))
    with pytest.raises(ValueError, match="block_size"):
        m.hidden(torch.zeros(1, 9, dtype=torch.long))

"""Submissions an instructor actually receives, written for the grading tests.

Each builder writes one submission (or one LMS layout) into a folder and returns the row name the
grader should give it. They start from the autograder's solution notebook or the student version
that ``otter assign`` wrote, and edit cells by a marker they contain, so they follow the assignment
when its wording changes (a marker that is gone fails the test loudly).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import nbformat


def edit(src: Path, dst: Path, edits=(), *, append=(), drop_grader=False):
    """Copy a notebook, replacing ``old`` by ``new`` in the first code cell containing ``marker``
    for each ``(marker, old, new)``, and appending code cells ``append``."""
    nb = nbformat.read(src, as_version=4)
    for marker, old, new in edits:
        cells = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
        assert cells and old in cells[0].source, f"fixture edit {old!r} not found in {src.name}"
        cells[0].source = cells[0].source.replace(old, new)
    for code in append:
        nb.cells.append(nbformat.v4.new_code_cell(code))
    if drop_grader:
        nb.cells = [c for c in nb.cells if "grader" not in c.source]
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dst)
    return dst


def fresh_notebook(src: Path, dst: Path):
    """The solution's code pasted into a new notebook: no otter metadata, no set-up, no grader cells."""
    old = nbformat.read(src, as_version=4)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.source) for c in old.cells
                if c.cell_type == "code" and "grader" not in c.source and "importlib.util" not in c.source]
    nbformat.write(nb, dst)
    return dst


def rename_functional(src: Path, dst: Path, alias: str):
    """The same notebook written with ``import torch.nn.functional as <alias>`` instead of ``F``."""
    import re

    nb = nbformat.read(src, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            c.source = re.sub(r"\bF\.", f"{alias}.", c.source.replace("import torch.nn.functional as F",
                                                                     f"import torch.nn.functional as {alias}"))
    assert any(f"as {alias}" in c.source for c in nb.cells), f"no `import torch.nn.functional as F` in {src.name}"
    nbformat.write(nb, dst)
    return dst


def as_nbformat_v3(src: Path, dst: Path):
    """The same notebook saved in the older nbformat 3 layout (cells inside worksheets)."""
    nb = nbformat.convert(nbformat.read(src, as_version=4), 3)
    assert "worksheets" in nb and "cells" not in nb
    nbformat.write(nb, dst, version=3)
    return dst


def zip_of(dst: Path, members: dict[str, Path]):
    with zipfile.ZipFile(dst, "w") as z:
        for name, path in members.items():
            z.write(path, name)
    return dst


A1 = "a1_kd_losses"
KL_LINE = 'return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")'

# classic mistakes in Question 1's kl_divergence: (marker, old, new)
A1_KL_BUGS = {
    "bug_swapped_args": ("F.kl_div(log_p_s, log_p_t,", "F.kl_div(log_p_t, log_p_s,"),
    "bug_probs_for_logprobs": (KL_LINE, 'return F.kl_div(log_p_s.exp(), log_p_t.exp(), reduction="batchmean")'),
    "bug_reduction_mean": ('reduction="batchmean"', 'reduction="mean"'),
    "bug_reduction_sum": ('reduction="batchmean"', 'reduction="sum"'),
    "bug_softmax_twice": ("F.log_softmax(student_logits / T, dim=-1)", "F.log_softmax(F.softmax(student_logits / T, dim=-1), dim=-1)"),
    "bug_t_student_only": ("F.log_softmax(teacher_logits / T, dim=-1)", "F.log_softmax(teacher_logits, dim=-1)"),
    "bug_log_of_softmax": (KL_LINE, "p_t = F.softmax(teacher_logits / T, -1)\n"
                           "    return (p_t * (torch.log(p_t) - torch.log(F.softmax(student_logits / T, -1)))).sum(-1).mean()"),
    "bug_constant": (KL_LINE, "return torch.tensor(0.1, dtype=torch.float64)"),
    "bug_total_variation": (KL_LINE, "return 0.5 * (log_p_t.exp() - log_p_s.exp()).abs().sum(-1).mean()"),
    "bug_nan": (KL_LINE, "return torch.tensor(float('nan'))"),
    "bug_numpy_no_grad": (KL_LINE, "import numpy as np\n"
                          "    ls, lt = log_p_s.detach().numpy(), log_p_t.detach().numpy()\n"
                          "    return float((np.exp(lt) * (lt - ls)).sum(-1).mean())"),
}
A1_OTHER_BUGS = {   # (marker, old, new)
    "bug_no_t_squared": ("def distillation_loss", "alpha * T * T * soft", "alpha * soft"),
    "bug_divided_by_t": ("def distillation_loss", "alpha * T * T * soft", "alpha * soft / T"),
    "bug_q7_scaled_by_t": ("temperatures = [", "scaled = {T: T**2 * n", "scaled = {T: T * n"),
}


A2, A3, A4 = "a2_wrong_dataset", "a3_distill_and_report", "a4_context_distillation"
A5 = "a5_feature_distillation"
A5_HINT = "def hint_term"
A5_BUGS = {   # the classic feature-distillation mistakes: (marker, old, new)
    "bug_regressor_on_teacher": (A5_HINT, "return ((mapped - teacher_map.detach()) ** 2).mean()",
                                 "return ((student_map - regressor(teacher_map.detach())) ** 2).mean()"),
    "bug_teacher_not_detached": (A5_HINT, "teacher_map.detach()) ** 2", "teacher_map) ** 2"),
    "bug_broadcasts": (A5_HINT, "    if mapped.shape != teacher_map.shape:\n        raise", "    if False:\n        raise"),
    "bug_attention_not_normalised": ("def attention", "return q / q.norm(dim=1, keepdim=True)", "return q"),
    "bug_attention_teacher_not_detached": ("def at_term", "attention(teacher_map.detach())", "attention(teacher_map)"),
}
A6 = "a6_find_the_bug"
A6_BUGS = {   # each function with its shipped bug put back: bug -> (the question it costs, the name its feedback gives,
              #                                                   and the edit (marker, old, new))
    "bug_log_space_mixture": ("q1", "log-space mixture", "def generalized_jsd",
                              "log_m = torch.logsumexp(torch.stack([log_p_t + math.log(beta), log_p_s + math.log(1 - beta)]), dim=0)",
                              "log_m = beta * log_p_t + (1 - beta) * log_p_s"),
    "bug_beta_swapped": ("q2", "beta swapped", "def gkd_divergence",
                         "        return kl_rows(log_p_t, log_p_s)  # SOLUTION NO PROMPT\n", "        return kl_rows(log_p_s, log_p_t)\n"),
    "bug_hard_label_added": ("q3", "hard-label cross-entropy added", "def kd_loss",
                             "    return kd  # SOLUTION NO PROMPT", "    return student_out.loss + kd"),
    "bug_sampling_temperature": ("q4", "sampling temperature used", "def rollout_kl",
                                 'tau = cfg["kd_temperature"]', 'tau = cfg["sampling_temperature"]'),
    "bug_micro_batch_mean": ("q5", "per-micro-batch normalisation", "def accumulate",
                             "loss = (per_token * mask).sum() / n_tokens",
                             "loss = (per_token * mask).sum() / mask.sum() / len(micro_batches)"),
    "bug_padding_in_mean": ("q6", "padding in the mean", "def token_kl",
                            "return (per_token * mask).sum() / mask.sum()  # SOLUTION NO PROMPT", "return (per_token * mask).mean()"),
    "bug_clamped_truncated_kl": ("q7", "clamp on a truncated KL", "def topk_kl",
                                 "    return kept + p_tail * (p_tail.log() - q_tail.log())", "    return kept.clamp(min=0.0)"),
}
A6_HELD_OUT = {   # fixes that look right and are not: (what they must cost, the edit)
    "held_out_value_only_fix": ({"q3": 0.0}, ("def kd_loss", "    return kd  # SOLUTION NO PROMPT",
                                              "    return student_out.loss + kd - student_out.loss.detach()")),
    "held_out_beta_flip_middle": ({"q2": 1.0}, ("def gkd_divergence",
                                                "    return generalized_jsd(student_logits, teacher_logits, beta=beta)",
                                                "    return generalized_jsd(student_logits, teacher_logits, beta=1 - beta)")),
}
A6_FAIR = [   # correct, written differently: the mixture in probability space, the tail bucket via kdutils, a fix by a helper
    ("def generalized_jsd",
     "log_m = torch.logsumexp(torch.stack([log_p_t + math.log(beta), log_p_s + math.log(1 - beta)]), dim=0)",
     "log_m = (beta * log_p_t.exp() + (1 - beta) * log_p_s.exp()).log()"),
    ("def topk_kl", "    return kept + p_tail * (p_tail.log() - q_tail.log())",
     "    from kdutils import token_losses\n"
     "    return token_losses.topk_kl_divergence(student_logits, topk_indices, topk_log_probs, reduction='none')"),
    ("def token_kl", "return (per_token * mask).sum() / mask.sum()  # SOLUTION NO PROMPT", "return per_token[mask.bool()].mean()"),
]
# broken: the cell of Question 5 raises (a half-finished edit), and Question 1's fix calls a name that does not exist
A6_BROKEN = [("def accumulate", "    total = 0.0\n", "    total = 0.0\n    raise NotImplementedError('todo')\n"),
             ("def generalized_jsd", "log_m = torch.logsumexp(", "log_m = torch.log_sum_exp(")]
A2_FIX = 'fixed_student, fixed_run = distil_student(simplify(x_train), simplify(x_pool))'
A2_BUGS = {   # Question 2's fix done wrong: (old, new) in the cell that trains fixed_student
    "bug_no_teacher": (A2_FIX, "fixed_student = sensors.student(seed=0)\n"
                       "fixed_run = train.fit(fixed_student, simplify(x_train), y_train, epochs=4, lr=4e-2, seed=0, progress=False)"),
    "bug_test_leak": (A2_FIX, "fixed_student, fixed_run = sensors.distil(teacher, simplify(torch.cat([x_train, x_test])), "
                      "torch.cat([y_train, y_test]), teacher_x=torch.cat([x_train, x_test]), transfer_x=simplify(x_pool), "
                      "transfer_teacher_x=x_pool, temperature=4.0, alpha=0.9, epochs=4, lr=4e-2, seed=0, progress=False)"),
}
A3_Q1 = "student = models.MLP()\ntrain.distil(student"
A3_BUGS = {   # (marker, old, new)
    "bug_teacher_as_student": ("T_choice, alpha_choice =", "student = models.MLP()\ntrain.distil(student,",
                               "student = models.MLP()\ntrain.distil(models.MLP(),"),
    "bug_target_lowered": ("T_choice, alpha_choice =", "T_choice, alpha_choice = 4.0, 0.9",
                           "TARGET = 0.5\nT_choice, alpha_choice = 4.0, 0.0"),
}
A3_BUGS["bug_teacher_as_student"] = ("T_choice, alpha_choice =",
                                     "student = models.MLP()\ntrain.distil(student, mnist.x_train, mnist.y_train, "
                                     "teacher=teacher, transfer_x=x_transfer,\n"
                                     "             temperature=T_choice, alpha=alpha_choice, epochs=6, lr=2e-2, "
                                     "schedule=\"cosine\", seed=0, progress=False)",
                                     "class Student(models.MLP):          # a wrapper that answers with the teacher\n"
                                     "    def forward(self, x):\n        return teacher(x)\nstudent = Student()")
A3_FAIR = [   # correct, written differently: a two-panel horizontal-bar figure; a later experiment reusing `student`
    ("fig = ax.get_figure()",
     'ax = report_table.plot.bar(rot=0, ylim=(0, 1), title="Accuracy and agreement with the teacher")\nfig = ax.get_figure()',
     'fig, axes = plt.subplots(1, 2, figsize=(8, 3))\nfor ax, col in zip(axes, ["accuracy", "agreement"]):\n'
     '    ax.barh(list(report_table.index), report_table[col].astype(float))\n    ax.set_title(col)'),
]
A3_FAIR_APPEND = ["# my own experiment for Question 4: what does 1 epoch give?\nruntime.seed_everything(1)\nstudent = models.MLP()\n"
                  "train.fit(student, mnist.x_train, mnist.y_train, epochs=1, seed=1, progress=False)\n"
                  "report_table = report_table * 0"]


# correct work, then a cell after Question 3 that retrains `student` with alpha = 0 to explore Question 4:
# Question 5 is still graded against the student Question 1 was graded with
A3_EXPLORES_Q4 = [('grader.check("q3")', 'grader.check("q3")', """grader.check("q3")
# exploring Question 4: what does alpha = 0 do? (the name `student` now holds another model)
runtime.seed_everything(0)
student = models.MLP()
train.distil(student, mnist.x_train, mnist.y_train, teacher=teacher, transfer_x=x_transfer,
             temperature=T_choice, alpha=0.0, epochs=6, lr=2e-2, schedule="cosine", seed=0, progress=False)""")]


# a2's Question 1 check run on rows of the training set, not on the batch the loop fed
A2_CHECKS_X_TRAIN = [("buggy_check = diagnose", "diagnose.check_student_inputs(buggy_run.fed,",
                      "diagnose.check_student_inputs(x_train[:200],")]
# Question 1's student trained on the training and the test rows (a leak that inflates its test accuracy)
A3_TEST_LEAK = [("train.distil(student, mnist.x_train", "train.distil(student, mnist.x_train, mnist.y_train,",
                 "train.distil(student, torch.cat([mnist.x_train, mnist.x_test]), torch.cat([mnist.y_train, mnist.y_test]),")]


def a3_typed_numbers(sol: Path, dst: Path):
    """Question 2's table typed in from a printed run (three decimals), the way a student copies output.
    (Run with KD_CACHE_DIR at the autograder's cache, so the teacher is the one graded against.)"""
    import torch

    from kdutils import data, metrics, runtime, train, zoo, models
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # as the notebook does: the same arithmetic, the same numbers
    mnist = data.load_mnist1d()
    x_transfer = data.mnist1d_transfer_set(10000, seed=777)
    teacher, scratch = zoo.mnist1d_cnn(), zoo.mnist1d_mlp()
    runtime.seed_everything(0)
    student = models.MLP()
    train.distil(student, mnist.x_train, mnist.y_train, teacher=teacher, transfer_x=x_transfer, temperature=4.0,
                 alpha=0.9, epochs=6, lr=2e-2, schedule="cosine", seed=0, progress=False)
    z_t = train.predict(teacher, mnist.x_test)
    rows = {}
    for name, m in [("teacher", teacher), ("scratch student", scratch), ("distilled student", student)]:
        z = train.predict(m, mnist.x_test)
        rows[name] = {"accuracy": round(metrics.accuracy(z, mnist.y_test), 3), "agreement": round(metrics.top1_agreement(z, z_t), 3)}
    torch.set_num_threads(threads)
    typed = f"report_table = pd.DataFrame({rows!r}).T"
    return edit(sol, dst, [("report_table = pd.DataFrame(rows).T", "report_table = pd.DataFrame(rows).T", typed)])


A7 = "a7_speculative_decoding"
A7_ROUNDS, A7_COST = "def speculative_rounds", "def expected_tokens"
A7_BUGS = {   # the classic speculative-sampling mistakes: bug -> (what it costs, the name the feedback gives, (marker, old, new))
    "bug_unclipped": ({"q1": 1.0}, "p/q unclipped", ("def accept_probability", "return (p[x] / q[x]).clamp(max=1.0)",
                                                     "return p[x] / q[x]")),
    "bug_resample_from_q": ({"q2": 2.0}, "resampled from q", (A7_ROUNDS, "residual = (p[i] - q[i]).clamp(min=0)",
                                                              "residual = q[i]")),
    "bug_no_bonus_token": ({"q2": 2.0}, "bonus token forgotten", (A7_ROUNDS,
                                                                  "written.append(int(torch.multinomial(p[k], 1, generator=g)))",
                                                                  "pass")),
    "bug_kept_after_rejection": ({"q2": 2.0}, "kept drafts after a rejection", (A7_ROUNDS, "            break\n",
                                                                               "            continue\n")),
    "bug_bonus_not_counted": ({"q3": 1.0}, "bonus token not counted", (A7_COST, "for j in range(k + 1)", "for j in range(k)")),
}

A8 = "a8_trainer_and_tokenizers"
A8_LOSS, A8_GUARD, A8_PROJECT = "def distillation_loss", "def check_same_vocab", "def project"
A8_BUGS = {   # the classic mistakes of a Trainer's loss and of a cross-tokenizer step: bug -> (what it costs, the name the
    # feedback gives (None: the value is simply wrong), (marker, old, new))
    "bug_not_shifted": ({"q1": 1.0}, "labels not shifted",
                        (A8_LOSS, "z_s, z_t, y = student_logits[:, :-1], teacher_logits[:, :-1].detach(), labels[:, 1:]",
                         "z_s, z_t, y = student_logits, teacher_logits.detach(), labels")),
    "bug_minus100_in_the_loss": ({"q1": 1.0}, "-100 in the loss",
                                 (A8_LOSS, "keep = y != -100", "keep = torch.ones_like(y, dtype=torch.bool)")),
    "bug_temperature_on_student_only": ({"q1": 2.0}, "temperature on the student only",
                                        (A8_LOSS, "F.log_softmax(z_t[keep] / T, -1)", "F.log_softmax(z_t[keep], -1)")),
    "bug_no_t_squared": ({"q1": 2.0}, "T^2 missing", (A8_LOSS, "alpha * T * T * soft", "alpha * soft")),
    "bug_micro_batch_mean": ({"q1": 3.0}, "each micro-batch's own mean",
                             (A8_LOSS, "n = keep.sum() if num_items_in_batch is None else num_items_in_batch", "n = keep.sum()")),
    "bug_teacher_not_detached": ({"q1": 3.0}, None, (A8_LOSS, "teacher_logits[:, :-1].detach()", "teacher_logits[:, :-1]")),
    "bug_sizes_compared": ({"q2": 2.0}, "sizes compared, not tokens",
                           (A8_GUARD, "if differ:", "if len(student_vocab) != len(teacher_vocab):\n        differ = differ or ['?']")),
    "bug_not_renormalised": ({"q2": 2.0}, "not renormalised", (A8_PROJECT, "return q / total if total > 0 else q", "return q")),
    "bug_prefix_ignored": ({"q2": 2.0}, "prefix ignored",
                           (A8_PROJECT, "if len(ids) > r and list(ids[:r]) == list(prefix):\n            q[ids[r]] += teacher_probs[t]",
                            "q[ids[0]] += teacher_probs[t]")),
}

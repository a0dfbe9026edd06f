r"""Is the student trained on what it will see when deployed?

The distillation objective of the source material sums over the *simplified* inputs D':

    theta_hat = argmin_theta  sum_{x' in D'}  KL( p_t(. | x) || p_s(. | x') )

A pipeline that feeds the student the teacher's inputs x instead trains without error, with a
*lower* loss, and fails at deployment. These checks compare what a training step actually fed the
student (``result.fed``, or the ``FitResult`` itself, from ``kdutils.train.fit`` or ``distil``) with a sample of deployment
inputs:

* ``compare_inputs``: per-channel mean, std, fraction of exact zeros, min and max side by side, with
  the standardised difference |a - b| / pooled std of each statistic's values over examples.
* ``two_sample_auc``: a classifier two-sample test. A logistic regression on the raw values and
  the per-channel statistics tries to tell the two samples apart; cross-validated ROC AUC near 0.5 means
  it cannot (same distribution), near 1.0
  means the student was fed something else.
* ``check_student_inputs``: both, with a verdict, raising ``ValueError`` on request.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def _channels(x: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N, channels, features): 3-D inputs keep their channels, the rest are one channel."""
    x = getattr(x, "fed", x)   # a kdutils.train.FitResult, or a tensor
    x = torch.as_tensor(x).detach().float().cpu()
    if x.dim() < 2:
        raise ValueError(f"expected a batch of inputs (N, ...), got shape {tuple(x.shape)}")
    return x.reshape(len(x), x.shape[1], -1) if x.dim() >= 3 else x.reshape(len(x), 1, -1)


def _per_example_stats(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"mean": x.mean(-1), "std": x.std(-1, unbiased=False), "fraction zero": (x == 0).float().mean(-1),
            "min": x.min(-1).values, "max": x.max(-1).values}


def compare_inputs(fed, deploy, *, threshold: float = 1.0) -> pd.DataFrame:
    """Side-by-side input statistics per channel; ``flag`` marks a standardised difference > threshold."""
    a, b = _channels(fed), _channels(deploy)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"inputs have different shapes per example: fed {tuple(a.shape[1:])} vs deployment {tuple(b.shape[1:])}")
    rows = []
    sa, sb = _per_example_stats(a), _per_example_stats(b)
    for name in sa:
        for c in range(a.shape[1]):
            va, vb = sa[name][:, c], sb[name][:, c]
            pooled = torch.sqrt((va.var(unbiased=False) + vb.var(unbiased=False)) / 2).item()
            diff = abs(va.mean().item() - vb.mean().item())
            std_diff = diff / pooled if pooled > 1e-8 else (0.0 if diff < 1e-8 else float("inf"))
            rows.append({"statistic": name, "channel": c, "fed to student": va.mean().item(),
                         "deployment": vb.mean().item(), "standardised difference": std_diff,
                         "flag": bool(std_diff > threshold)})
    return pd.DataFrame(rows)


def two_sample_auc(fed, deploy, *, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated ROC AUC of a logistic regression telling ``fed`` from ``deploy`` (0.5 = indistinguishable)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = _channels(fed), _channels(deploy)
    n = min(len(a), len(b))
    if n < 2 * folds:
        raise ValueError(f"need at least {2 * folds} examples in each sample, got {len(a)} and {len(b)}")
    both = torch.cat([a[:n], b[:n]])
    # raw values plus per-channel summaries, so that a difference in spread is as visible as a shift
    stats = torch.cat(list(_per_example_stats(both).values()), dim=1)
    X = torch.cat([both.reshape(2 * n, -1), stats], dim=1).numpy()
    y = np.r_[np.zeros(n), np.ones(n)]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, X, y, cv=cv, scoring="roc_auc").mean())


def check_student_inputs(fed, deploy, *, auc_threshold: float = 0.75, raise_on_mismatch: bool = False) -> dict:
    """Run both checks; ``ok`` is False when the student's inputs look unlike deployment inputs.
    ``rows_checked``: how many of the student's inputs were examined (all of ``fed``)."""
    table = compare_inputs(fed, deploy)
    auc = two_sample_auc(fed, deploy)
    ok = auc <= auc_threshold and not table.flag.any()
    verdict = {"ok": ok, "two_sample_auc": auc, "flagged": table[table.flag][["statistic", "channel"]].to_dict("records"),
               "rows_checked": len(fed)}
    if raise_on_mismatch and not ok:
        raise ValueError(f"the student was trained on inputs unlike the deployment inputs "
                         f"(two-sample AUC {auc:.2f}; flagged statistics: {verdict['flagged']})")
    return verdict

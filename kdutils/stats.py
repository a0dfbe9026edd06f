r"""Is a difference between two training recipes real? Comparisons over seeds.

A run of a recipe is one draw: its seed fixes the student's initial weights and the order of its
batches, and a different seed gives a different number. So an experiment runs each *arm* (recipe)
at several seeds and asks whether the gap between arms is larger than the seed-to-seed noise.

* ``compare_seeds(a, b)``: the difference of the means, a confidence interval for it and its p-value,
  from Welch's t (unpaired) or the t of the per-seed differences (``paired=True``: the arms were run at
  the same seeds, so what a seed fixes is shared and cancels).
* ``holm(p_values)``: which of several comparisons survive Holm's correction. A verdict drawn from
  many comparisons at 5% each would find a "winner" in pure noise; Holm keeps the chance of any false
  verdict among them at 5%.
* ``equivalent(a, b, margin=...)``: "no difference" shown, not assumed: the two one-sided tests
  (TOST) at 5%, i.e. the 90% interval of the difference lies inside ``[-margin, margin]``. A
  difference that is merely not significant is not shown to be absent.

The t quantiles come from ``scipy.stats`` (a dependency of scikit-learn, so always installed here).
"""
from __future__ import annotations

import numpy as np
from scipy import stats as _scipy


def _per_seed(a, b, paired: bool):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or b.ndim != 1 or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 per-seed values for each arm, got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-seed values must be finite")
    if paired and len(a) != len(b):
        raise ValueError(f"paired comparison needs one value per seed in each arm, got {len(a)} and {len(b)}")
    return a, b


def _difference(a, b, paired: bool):
    """(d, standard error of d, degrees of freedom)."""
    if paired:
        d = a - b
        return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))), len(d) - 1
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se2 = va + vb
    # Welch-Satterthwaite degrees of freedom (equal to n_a + n_b - 2 only when both terms are equal
    # and n_a = n_b; smaller otherwise)
    df = se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if se2 > 0 else len(a) + len(b) - 2
    return float(a.mean() - b.mean()), float(np.sqrt(se2)), float(df)


def compare_seeds(a, b, *, paired: bool = False, level: float = 0.95) -> dict:
    r"""Is arm ``a`` different from arm ``b``, given each one's results over several seeds?

    ``a`` and ``b`` are per-seed values (at least 2 each). With :math:`d = \bar a - \bar b`:

    * unpaired (Welch): :math:`\mathrm{se} = \sqrt{s_a^2/n_a + s_b^2/n_b}` with the Welch-Satterthwaite
      degrees of freedom :math:`\nu = \mathrm{se}^4 / \big(\frac{(s_a^2/n_a)^2}{n_a-1} + \frac{(s_b^2/n_b)^2}{n_b-1}\big)`;
    * ``paired=True`` (the same seeds, in the same order, for both arms): the per-seed differences
      :math:`d_i = a_i - b_i`, :math:`\mathrm{se} = s_d/\sqrt n`, :math:`\nu = n - 1`.

    Returns ``difference`` :math:`d`, ``noise`` :math:`t_{(1+\text{level})/2,\,\nu}\,\mathrm{se}` (the
    half-width of the ``level`` confidence interval), ``low``/``high`` (the interval), ``df``,
    ``p_value`` (two-sided, :math:`H_0: d = 0`) and ``exceeds_noise`` (:math:`|d| >` noise, i.e. the
    interval excludes 0). With 3 seeds the noise is about 2.5 standard errors; with 2 seeds, 4.3 or more.
    Two arms with identical values at every seed have zero noise and differ only if :math:`d \ne 0`.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a, b = _per_seed(a, b, paired)
    d, se, df = _difference(a, b, paired)
    noise = float(_scipy.t.ppf((1 + level) / 2, df) * se)
    p = float(2 * _scipy.t.sf(abs(d) / se, df)) if se > 0 else (1.0 if d == 0 else 0.0)
    return {"difference": d, "noise": noise, "low": d - noise, "high": d + noise, "df": df, "p_value": p,
            "exceeds_noise": abs(d) > noise}


def holm(p_values, *, alpha: float = 0.05) -> list[bool]:
    r"""Holm's step-down correction: which hypotheses are rejected, keeping the family-wise error at ``alpha``.

    Sort the m p-values :math:`p_{(1)} \le \dots \le p_{(m)}`; reject :math:`H_{(k)}` while
    :math:`p_{(k)} \le \alpha / (m - k + 1)`, and stop at the first that fails. Returned in the input's
    order (a dict of p-values gives a dict of verdicts).
    """
    if isinstance(p_values, dict):
        return dict(zip(p_values, holm(list(p_values.values()), alpha=alpha)))
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p-values must be a flat list of numbers in [0, 1], got {p_values!r}")
    rejected = np.zeros(len(p), dtype=bool)
    for k, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (len(p) - k):
            break
        rejected[i] = True
    return rejected.tolist()


def equivalent(a, b, *, margin: float, paired: bool = False, alpha: float = 0.05) -> dict:
    r"""Are arms ``a`` and ``b`` the same within ``margin``? The two one-sided tests (TOST).

    "Equivalent" means both :math:`d > -\text{margin}` and :math:`d < \text{margin}` are shown at level
    ``alpha``: the :math:`1 - 2\alpha` (90%) confidence interval of :math:`d` lies inside
    :math:`(-\text{margin}, \text{margin})`. Returns ``difference``, ``low``, ``high`` (that interval),
    ``margin`` and ``equivalent``. Few seeds give a wide interval, so equivalence then needs a wide
    margin: the margin says how small a difference the experiment can rule out.
    """
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    r = compare_seeds(a, b, paired=paired, level=1 - 2 * alpha)
    return {"difference": r["difference"], "low": r["low"], "high": r["high"], "margin": float(margin),
            "equivalent": bool(-margin < r["low"] and r["high"] < margin)}

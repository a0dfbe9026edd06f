"""kdutils.stats against scipy's own tests and against hand computation."""
import numpy as np
import pytest
from scipy import stats as sps

from kdutils import stats


def test_welch_matches_scipy_and_is_not_pooled():
    a, b = [0.70, 0.72, 0.71, 0.69, 0.74], [0.60, 0.50, 0.70]          # unequal spreads and sizes
    r = stats.compare_seeds(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert r["difference"] == pytest.approx(np.mean(a) - np.mean(b))
    assert r["p_value"] == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (r["low"], r["high"]) == pytest.approx((ci.low, ci.high))
    # Welch-Satterthwaite: fewer degrees of freedom than the pooled n_a + n_b - 2 = 6, so a wider interval
    va, vb = np.var(a, ddof=1) / 5, np.var(b, ddof=1) / 3
    assert r["df"] == pytest.approx((va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 2)) and r["df"] < 6
    assert r["noise"] > sps.t.ppf(0.975, 6) * np.sqrt(va + vb)
    assert r["exceeds_noise"] == (r["p_value"] < 0.05)


def test_paired_matches_scipy_and_removes_shared_variation():
    a, b = [0.29, 0.24, 0.24, 0.31], [0.24, 0.17, 0.17, 0.27]
    p = stats.compare_seeds(a, b, paired=True)
    ref = sps.ttest_rel(a, b)
    assert p["p_value"] == pytest.approx(ref.pvalue) and p["df"] == 3
    assert (p["low"], p["high"]) == pytest.approx(tuple(ref.confidence_interval(0.95)))
    assert p["exceeds_noise"] and not stats.compare_seeds(a, b)["exceeds_noise"], \
        "a consistent per-seed gap is real even when the seeds themselves vary a lot"
    assert stats.compare_seeds(b, a, paired=True)["difference"] == pytest.approx(-p["difference"])
    # identical per-seed differences: no noise at all
    same = stats.compare_seeds([1.0, 2.0, 3.0], [0.5, 1.5, 2.5], paired=True)
    assert same["noise"] == 0 and same["exceeds_noise"] and same["p_value"] == 0.0
    assert not stats.compare_seeds([1.0, 2.0], [1.0, 2.0], paired=True)["exceeds_noise"]


def test_compare_seeds_rejects_bad_input():
    with pytest.raises(ValueError, match="one value per seed"):
        stats.compare_seeds([0.7, 0.6, 0.5], [0.6, 0.5], paired=True)
    with pytest.raises(ValueError, match="at least 2"):
        stats.compare_seeds([0.7], [0.6, 0.5])
    with pytest.raises(ValueError, match="finite"):
        stats.compare_seeds([0.7, float("nan")], [0.6, 0.5])
    with pytest.raises(ValueError, match="level"):
        stats.compare_seeds([0.7, 0.6], [0.6, 0.5], level=95)


def test_holm_step_down():
    # m = 4: thresholds 0.0125, 0.0167, 0.025, 0.05 in sorted order
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert stats.holm([0.001, 0.012, 0.02, 0.04]) == [True, True, True, True]
    # stops at the first failure even if a later p-value is below its own threshold
    assert stats.holm([0.03, 0.001, 0.04]) == [False, True, False]
    assert stats.holm({"x": 0.001, "y": 0.5}) == {"x": True, "y": False}
    # Bonferroni would reject fewer: Holm is never stricter
    p = np.random.default_rng(0).uniform(0, 0.1, 20)
    assert sum(stats.holm(p)) >= int((p <= 0.05 / 20).sum())
    with pytest.raises(ValueError, match="p-values"):
        stats.holm([0.1, 1.5])


def test_equivalence_needs_a_narrow_interval_not_a_failed_test():
    rng = np.random.default_rng(1)
    a = 0.8 + rng.normal(0, 0.002, 10)
    b = a + rng.normal(0, 0.001, 10)
    e = stats.equivalent(a, b, margin=0.01, paired=True)
    assert e["equivalent"] and e["low"] > -0.01 and e["high"] < 0.01
    # two noisy seeds: not significantly different, and not shown equivalent either
    wide_a, wide_b = [0.70, 0.80], [0.74, 0.77]
    assert not stats.compare_seeds(wide_a, wide_b)["exceeds_noise"]
    assert not stats.equivalent(wide_a, wide_b, margin=0.01)["equivalent"]
    # the 90% interval: TOST at 5% from scipy's one-sided tests
    d = np.subtract(a, b)
    lo = sps.ttest_1samp(d, -0.01, alternative="greater").pvalue
    hi = sps.ttest_1samp(d, 0.01, alternative="less").pvalue
    assert e["equivalent"] == (max(lo, hi) < 0.05)
    with pytest.raises(ValueError, match="margin"):
        stats.equivalent(a, b, margin=0)

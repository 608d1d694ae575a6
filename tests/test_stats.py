"""The statistical protocol (falcon_h1r.stats): intervals checked by hand against scipy.stats.t, pairing,
the bootstrap's reproducibility, and every not-informative rule."""

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from falcon_h1r import stats


def _binary(rng, p):
    return (rng.random(p.shape) < p).astype(float)


def test_t_interval_on_per_seed_values_matches_scipy_by_hand():
    x = np.array([0.10, 0.20, 0.40])
    est = stats.arm_mean(x)  # 1-D: one value per seed, no problem axis
    sd = math.sqrt(sum((v - x.mean()) ** 2 for v in x) / 2)
    half = sps.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert est.mean == pytest.approx(x.mean())
    assert est.ci95 == pytest.approx(half)
    assert (est.low, est.high) == pytest.approx((x.mean() - half, x.mean() + half))
    assert est.n_problems is None and est.informative and est.method == "t"


def test_two_seeds_use_t_with_one_degree_of_freedom_never_z():
    x = np.array([0.3, 0.5])
    est = stats.arm_mean(x, min_seeds=2)
    assert est.ci95 == pytest.approx(sps.t.ppf(0.975, 1) * np.std(x, ddof=1) / math.sqrt(2))
    assert est.ci95 / (np.std(x, ddof=1) / math.sqrt(2)) == pytest.approx(12.706, rel=1e-3)  # not z's 1.96
    assert est.informative  # min_seeds lowered on purpose here


def test_t_seeds_is_student_t_on_per_seed_mean_differences():
    a = np.array([[1, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]], dtype=float)
    b = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [1, 1, 0, 0]], dtype=float)
    m = (a - b).mean(axis=1)  # 0.5, 0.25, 0.5
    est = stats.paired_difference(a, b, method="t_seeds", min_problems=1)
    assert est.mean == pytest.approx(m.mean())
    assert est.ci95 == pytest.approx(sps.t.ppf(0.975, 2) * m.std(ddof=1) / math.sqrt(3))


def test_default_t_adds_the_crossed_problem_term_by_hand():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.1, 0.9, 40)
    a = _binary(rng, np.tile(p + 0.1, (4, 1)).clip(0, 1))
    b = _binary(rng, np.tile(p, (4, 1)))
    d = a - b
    S, P = d.shape
    seed_means, problem_means, grand = d.mean(axis=1), d.mean(axis=0), d.mean()
    resid = d - seed_means[:, None] - problem_means[None, :] + grand
    var = (seed_means.var(ddof=1) / S
           + max(0.0, problem_means.var(ddof=1) / P - (resid ** 2).sum() / ((S - 1) * (P - 1)) / (S * P)))
    est = stats.paired_difference(a, b)
    assert est.mean == pytest.approx(grand)
    assert est.ci95 == pytest.approx(sps.t.ppf(0.975, S - 1) * math.sqrt(var))
    assert est.ci95 >= stats.paired_difference(a, b, method="t_seeds").ci95


def test_t_interval_covers_the_true_difference_about_95_percent():
    """A crossed design with seed and problem effects: the default interval covers the truth (0) at about
    the nominal rate (200 replicates, seeded; the binomial s.e. of the rate is 1.5 points)."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(200):
        alpha = rng.normal(0, 0.05, 3)[:, None]
        beta = rng.normal(0, 0.1, 60)[None, :]
        a = _binary(rng, np.clip(0.5 + alpha + beta, 0, 1))
        b = _binary(rng, np.clip(0.5 + beta * 0 + np.zeros((3, 60)), 0, 1))
        est = stats.paired_difference(a, b)
        hits += est.low <= 0 <= est.high
    assert 0.90 <= hits / 200 <= 0.995


def test_pairing_reduces_the_width_when_arms_are_correlated():
    """Problems differ a lot in difficulty and both arms see the same problems: the paired interval is
    much narrower than the same data with the problem pairing broken."""
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.95, 200)
    a = _binary(rng, np.tile(np.clip(p + 0.05, 0, 1), (3, 1)))
    b = a.copy()
    flip = rng.random(b.shape) < 0.1  # b agrees with a on 90 % of (seed, problem) cells
    b[flip] = 1 - b[flip]
    shuffled = b[:, rng.permutation(b.shape[1])]
    for method in ("t", "bootstrap"):
        paired = stats.paired_difference(a, b, method=method)
        unpaired = stats.paired_difference(a, shuffled, method=method)
        assert paired.ci95 < 0.6 * unpaired.ci95, method


def test_bootstrap_is_reproducible_by_seed():
    rng = np.random.default_rng(2)
    a, b = _binary(rng, np.full((3, 50), 0.6)), _binary(rng, np.full((3, 50), 0.5))
    one = stats.paired_difference(a, b, method="bootstrap", seed=7, n_boot=500)
    two = stats.paired_difference(a, b, method="bootstrap", seed=7, n_boot=500)
    other = stats.paired_difference(a, b, method="bootstrap", seed=8, n_boot=500)
    assert one == two
    assert (one.low, one.high) != (other.low, other.high)
    assert one.low <= one.mean <= one.high and one.ci95 == pytest.approx((one.high - one.low) / 2)


def test_saving_and_ratio_are_ratios_of_sums_per_seed():
    a = np.array([[10.0, 30.0], [20.0, 20.0], [15.0, 45.0]])
    b = np.array([[40.0, 60.0], [50.0, 50.0], [60.0, 60.0]])
    per_seed = 1 - a.sum(axis=1) / b.sum(axis=1)  # 0.6, 0.6, 0.5
    sav = stats.paired_saving(a, b, method="t_seeds", min_problems=1)
    assert sav.mean == pytest.approx(per_seed.mean())
    assert sav.ci95 == pytest.approx(sps.t.ppf(0.975, 2) * per_seed.std(ddof=1) / math.sqrt(3))
    rat = stats.paired_ratio(a, b, min_problems=1)
    assert rat.mean == pytest.approx((a.sum(axis=1) / b.sum(axis=1)).mean())
    assert stats.paired_saving(a, b, min_problems=1).ci95 >= sav.ci95  # the problem term only widens


def test_bases_variant_averages_repeats_and_intervals_over_bases():
    rng = np.random.default_rng(4)
    x = rng.random((3, 8, 40))  # 3 bases x 8 resamplings x 40 problems
    est = stats.arm_mean(x)
    flat = stats.arm_mean(stats.collapse_repeats(x), unit="bases")
    assert est == flat and est.unit == "bases" and est.n_seeds == 3
    assert est.summary("acc")["acc_unit"] == "bases"
    with pytest.raises(ValueError, match="unit must be 'bases'"):
        stats.arm_mean(x, unit="seeds")


@pytest.mark.parametrize("case, reason", [
    ("nan_input", "non-finite input"),
    ("zero_denominator", "not finite"),
    ("zero_width", "zero-width"),
    ("few_problems", "fewer than 30"),
    ("few_seeds", "fewer than 3"),
    ("one_seed", "interval is not finite"),
])
def test_each_not_informative_rule(case, reason):
    rng = np.random.default_rng(5)
    ok = _binary(rng, np.full((3, 40), 0.5)), _binary(rng, np.full((3, 40), 0.4))
    if case == "nan_input":
        a = ok[0].copy()
        a[1, 3] = np.nan
        est = stats.paired_difference(a, ok[1])
    elif case == "zero_denominator":
        est = stats.paired_saving(np.ones((3, 40)), np.vstack([np.ones((2, 40)), np.zeros((1, 40))]))
    elif case == "zero_width":
        est = stats.paired_difference(np.ones((3, 40)), np.ones((3, 40)))
    elif case == "few_problems":
        est = stats.paired_difference(ok[0][:, :29], ok[1][:, :29])
    elif case == "few_seeds":
        est = stats.paired_difference(ok[0][:2], ok[1][:2])
    else:
        est = stats.paired_difference(ok[0][:1], ok[1][:1])
    assert not est.informative
    assert reason in est.reason
    assert stats.paired_difference(*ok).informative  # the same data, whole, is informative


def test_minimums_are_configurable():
    rng = np.random.default_rng(6)
    a, b = _binary(rng, np.full((2, 20), 0.7)), _binary(rng, np.full((2, 20), 0.3))
    assert not stats.paired_difference(a, b).informative
    assert stats.paired_difference(a, b, min_seeds=2, min_problems=20).informative


def test_summary_keys_are_finite_or_none_and_json_safe():
    bad = stats.paired_saving(np.array([1.0, 2.0, 3.0]), np.array([2.0, np.inf, 4.0]))
    good = stats.paired_difference(np.array([0.5, 0.6, 0.7]), np.array([0.4, 0.4, 0.5]))
    keys = stats.summary_keys({"saving": bad, "diff": good})
    json.dumps(keys, allow_nan=False)  # raises on NaN or inf
    assert keys["saving"] is None and keys["saving_ci95"] is None and keys["saving_informative"] is False
    assert "non-finite" in keys["saving_reason"]
    assert set(good.summary("diff")) == {"diff", "diff_ci95", "diff_ci95_low", "diff_ci95_high", "diff_n_seeds",
                                         "diff_informative", "diff_unit", "diff_method", "diff_reason"}
    assert "diff_n_problems" in stats.paired_difference(np.zeros((3, 30)), np.ones((3, 30))).summary("diff")
    one_seed = stats.arm_mean(np.array([0.5])).summary("m")
    assert one_seed["m"] == 0.5 and one_seed["m_ci95"] is None


def test_bad_input_names_what_was_wrong():
    with pytest.raises(ValueError, match="same shape"):
        stats.paired_difference(np.zeros((3, 30)), np.zeros((3, 31)))
    with pytest.raises(ValueError, match="unknown method"):
        stats.arm_mean(np.zeros(3), method="z")
    with pytest.raises(ValueError, match="empty"):
        stats.arm_mean(np.zeros((3, 0)))
    with pytest.raises(ValueError, match="expected"):
        stats.arm_mean(np.zeros((2, 2, 2, 2)))


def test_stack_by_problem_pairs_by_id():
    seeds = [{"p1": 1.0, "p2": 0.0, "p3": 1.0}, {"p2": 1.0, "p1": 0.5, "p3": 0.0}, {"p1": 1.0, "p2": 1.0}]
    arr, ids = stats.stack_by_problem(seeds)
    assert ids == ["p1", "p2"] and arr.tolist() == [[1.0, 0.0], [0.5, 1.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match="seed 2 has no value"):
        stats.stack_by_problem(seeds, ids=["p1", "p3"])

import math

import numpy as np
import pytest

from traitlab.core.stats import bootstrap_ci, mean_ci, paired_test, wilcoxon_p, wilson


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (1, 100, 0.0018, 0.0545),
    ],
)
def test_wilson_known_values(k: int, n: int, lo: float, hi: float) -> None:
    ci = wilson(k, n)
    assert ci.lower == pytest.approx(lo, abs=1e-4)
    assert ci.upper == pytest.approx(hi, abs=1e-4)
    assert ci.mean == k / n and ci.method == "wilson"


def test_wilson_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        wilson(3, 2)
    with pytest.raises(ValueError):
        wilson(0, 0)


def test_mean_ci_t_interval() -> None:
    ci = mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert ci.mean == 2.0
    assert ci.lower == pytest.approx(2 - half)
    assert ci.upper == pytest.approx(2 + half)
    assert mean_ci([0.5]).lower == 0.5


def test_paired_test_detects_consistent_shift() -> None:
    control = [0.10, 0.09, 0.11, 0.10]
    treat = [0.18, 0.17, 0.20, 0.18]
    t = paired_test(treat, control)
    assert t.diff.mean == pytest.approx(0.0825)
    assert t.p_value < 0.001 and t.n_positive == 4
    null = paired_test([0.1, 0.2, 0.1], [0.2, 0.1, 0.1])
    assert null.p_value > 0.5
    assert math.isnan(paired_test([1.0], [0.0]).p_value)


def test_bootstrap_is_seeded() -> None:
    x = np.arange(20.0)
    a = bootstrap_ci(x, np.random.default_rng(0))
    b = bootstrap_ci(x, np.random.default_rng(0))
    assert a == b and a.lower < 9.5 < a.upper


def test_wilcoxon() -> None:
    assert wilcoxon_p(np.arange(1, 21) + 1.0, np.arange(1, 21)) < 0.001
    assert math.isnan(wilcoxon_p([1, 2], [1, 2]))


def test_random_effects_pools_like_a_weighted_mean_without_heterogeneity() -> None:
    from traitlab.core.stats import random_effects

    r = random_effects([0.04, 0.04, 0.04], [0.01, 0.01, 0.01])
    assert r.mean.mean == pytest.approx(0.04) and r.tau2 == 0.0
    assert r.se == pytest.approx(0.01 / 3**0.5)
    assert r.p_value < 1e-5
    # Between-base spread widens the interval beyond the fixed-effect one.
    h = random_effects([0.0, 0.08, 0.04], [0.005, 0.005, 0.005])
    assert h.tau2 > 0 and h.se > 0.005 / 3**0.5 and 0 < h.i2 <= 1
    assert h.mean.mean == pytest.approx(0.04)
    one = random_effects([0.02], [0.01])
    assert one.mean.mean == 0.02 and one.n == 1
    with pytest.raises(ValueError):
        random_effects([0.1], [0.0])

"""Small, tested statistics: Wilson and t intervals, paired tests, bootstrap.

Every function returns its method and `n` with the number, so reports can say how a value
was computed. Randomness (bootstrap) takes an explicit `numpy.random.Generator`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class CI:
    """A point estimate with a confidence interval."""

    mean: float
    lower: float
    upper: float
    n: int
    confidence: float
    method: str

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    @property
    def half_width(self) -> float:
        return (self.upper - self.lower) / 2


def _z(confidence: float) -> float:
    return float(sps.norm.ppf(0.5 + confidence / 2))


def wilson(successes: int, n: int, confidence: float = 0.95) -> CI:
    """Wilson score interval for a binomial proportion (well behaved near 0 and 1)."""
    if n <= 0:
        raise ValueError("wilson() needs n > 0")
    if not 0 <= successes <= n:
        raise ValueError("successes must be in [0, n]")
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return CI(p, max(0.0, centre - half), min(1.0, centre + half), n, confidence, "wilson")


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> CI:
    """Mean with a Student-t interval (the paper's per-question aggregation uses this)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("mean_ci() needs at least one value")
    m = float(x.mean())
    if n == 1:
        return CI(m, m, m, 1, confidence, "t (n=1: no interval)")
    se = float(x.std(ddof=1) / math.sqrt(n))
    q = float(sps.t.ppf(0.5 + confidence / 2, df=n - 1))
    return CI(m, m - q * se, m + q * se, n, confidence, "t")


def bootstrap_ci(
    values: Sequence[float],
    rng: np.random.Generator,
    confidence: float = 0.95,
    n_boot: int = 2000,
) -> CI:
    """Percentile bootstrap interval of the mean, with an explicit generator."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("bootstrap_ci() needs at least one value")
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    means = x[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return CI(float(x.mean()), float(lo), float(hi), len(x), confidence, "bootstrap")


@dataclass(frozen=True)
class PairedTest:
    """Treatment minus control, paired by seed (or question)."""

    diff: CI
    t: float
    p_value: float
    n_positive: int
    n: int
    method: str

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["diff"] = self.diff.to_dict()
        return d


def paired_test(
    treatment: Sequence[float],
    control: Sequence[float],
    confidence: float = 0.95,
    alternative: str = "two-sided",
) -> PairedTest:
    """Paired t-test of treatment - control; p is NaN when it is undefined (n < 2 or zero spread)."""
    a = np.asarray(treatment, dtype=float)
    b = np.asarray(control, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired_test() needs two 1-D sequences of the same non-zero length")
    d = a - b
    ci = mean_ci(d, confidence)
    n = len(d)
    if n < 2 or float(d.std(ddof=1)) == 0.0:
        t, p = float("nan"), float("nan")
    else:
        res = sps.ttest_rel(a, b, alternative=alternative)
        t, p = float(res.statistic), float(res.pvalue)
    return PairedTest(ci, t, p, int((d > 0).sum()), n, f"paired t-test ({alternative})")


def wilcoxon_p(treatment: Sequence[float], control: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value (NaN when every difference is zero)."""
    d = np.asarray(treatment, dtype=float) - np.asarray(control, dtype=float)
    if np.all(d == 0):
        return float("nan")
    return float(sps.wilcoxon(d).pvalue)


@dataclass(frozen=True)
class Pooled:
    """A random-effects estimate over studies (e.g. base models), DerSimonian-Laird."""

    mean: CI
    se: float
    z: float
    p_value: float
    tau2: float  # between-study variance
    i2: float  # share of the spread that is between studies
    n: int
    method: str

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["mean"] = self.mean.to_dict()
        return d


def random_effects(
    means: Sequence[float], ses: Sequence[float], confidence: float = 0.95
) -> Pooled:
    """Pool per-study estimates with their standard errors (DerSimonian-Laird random effects,
    two-sided z test). With one study it returns that study's estimate."""
    y = np.asarray(means, dtype=float)
    se = np.asarray(ses, dtype=float)
    if y.shape != se.shape or y.ndim != 1 or len(y) == 0:
        raise ValueError("random_effects() needs two 1-D sequences of the same non-zero length")
    if np.any(se <= 0):
        raise ValueError("standard errors must be > 0")
    w = 1 / se**2
    fixed = float((w * y).sum() / w.sum())
    k = len(y)
    q = float((w * (y - fixed) ** 2).sum())
    c = float(w.sum() - (w**2).sum() / w.sum())
    tau2 = max(0.0, (q - (k - 1)) / c) if k > 1 and c > 0 else 0.0
    wr = 1 / (se**2 + tau2)
    mu = float((wr * y).sum() / wr.sum())
    s = float(math.sqrt(1 / wr.sum()))
    z = mu / s
    p = float(2 * sps.norm.sf(abs(z)))
    half = _z(confidence) * s
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0
    ci = CI(mu, mu - half, mu + half, k, confidence, "random effects (DerSimonian-Laird)")
    return Pooled(ci, s, z, p, tau2, i2, k, "random effects (DerSimonian-Laird), z test")


def ratio_ci(
    num: Sequence[float], den: Sequence[float], confidence: float = 0.95
) -> tuple[float, float | None, float | None]:
    """mean(num) / mean(den) with Fieller's interval, for paired samples (same units, e.g.
    the same seeds). The bounds are None when the interval is unbounded: the denominator's
    own interval reaches zero, so no finite ratio is excluded."""
    a = np.asarray(num, dtype=float)
    b = np.asarray(den, dtype=float)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError("ratio_ci() needs paired, non-empty samples")
    ma, mb = float(a.mean()), float(b.mean())
    ratio = ma / mb if mb != 0 else math.nan
    n = len(a)
    if n < 2:
        return ratio, None, None
    saa = float(a.var(ddof=1)) / n
    sbb = float(b.var(ddof=1)) / n
    sab = float(np.cov(a, b, ddof=1)[0, 1]) / n
    t2 = float(sps.t.ppf(0.5 + confidence / 2, df=n - 1)) ** 2
    qa = mb * mb - t2 * sbb
    qb = ma * mb - t2 * sab
    qc = ma * ma - t2 * saa
    disc = qb * qb - qa * qc
    if qa <= 0 or disc < 0:
        return ratio, None, None
    root = math.sqrt(disc)
    return ratio, (qb - root) / qa, (qb + root) / qa

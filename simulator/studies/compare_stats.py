"""Statistics of a paired comparison: differences, ratios and p-values over replications.

For each metric and variant, the replications give pairs (baseline, variant) under common random
numbers. Reported:

- the mean paired difference, its 95% interval by a paired bootstrap over replications
  (`scipy.stats.bootstrap`, percentile method, 9,999 resamples, fixed seed); for percentiles of
  latency too, whose sampling distribution the t interval assumes away;
- the ratio mean(variant) / mean(baseline) and its paired-bootstrap interval, which carries the
  baseline's own uncertainty (dividing the difference's interval by a fixed baseline mean did
  not), shown as a relative difference in %;
- the paired t-test's two-sided p-value, adjusted across the metrics compared for each variant by
  Holm's step-down method (strong control of the family-wise error rate); a difference is called
  significant when its adjusted p-value is below 0.05.

Differences within 1e-9 of the baseline's magnitude are float noise of identical runs and count
as exactly zero.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05
RESAMPLES = 9999
BOOTSTRAP_SEED = 20240601
NOISE = 1e-9


def _pairs(baseline, other) -> tuple[np.ndarray, np.ndarray]:
    base, var = np.asarray(baseline, dtype=float), np.asarray(other, dtype=float)
    keep = ~(np.isnan(base) | np.isnan(var))
    return base[keep], var[keep]


def _bootstrap(data: tuple[np.ndarray, ...], statistic, confidence: float) -> tuple[float, float]:
    res = stats.bootstrap(data, statistic, paired=True, vectorized=True, n_resamples=RESAMPLES,
                          confidence_level=confidence, method="percentile",
                          random_state=np.random.default_rng(BOOTSTRAP_SEED))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_difference(baseline, other, confidence: float = CONFIDENCE) -> dict:
    """Mean of `other - baseline` over the pairs where both are known, its paired-bootstrap
    interval, the ratio of means with its interval, and the paired t-test's p-value (unadjusted).
    With one pair there is no interval; identical pairs give a zero-width one."""
    base, var = _pairs(baseline, other)
    n = int(base.size)
    out = {"n": n, "diff": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan,
           "ratio": np.nan, "ratio_low": np.nan, "ratio_high": np.nan}
    if n == 0:
        return out
    diffs = var - base
    scale = max(float(np.max(np.abs(base))), float(np.max(np.abs(var))), 1e-300)
    diffs = np.where(np.abs(diffs) <= NOISE * scale, 0.0, diffs)
    mean = float(diffs.mean())
    base_mean = float(base.mean())
    out["diff"] = mean
    if base_mean:
        out["ratio"] = float(var.mean()) / base_mean if mean else 1.0
    if n == 1:
        return out
    if np.all(diffs == diffs[0]):  # no spread: no sampling uncertainty to estimate
        out.update(ci_low=mean, ci_high=mean, p_value=1.0 if mean == 0.0 else 0.0)
        if base_mean:
            out.update(ratio_low=out["ratio"], ratio_high=out["ratio"])
        return out
    out["ci_low"], out["ci_high"] = _bootstrap((diffs,), lambda d, axis=-1: d.mean(axis=axis), confidence)
    if base_mean and np.all(base != 0) and np.sign(base).min() == np.sign(base).max():
        out["ratio_low"], out["ratio_high"] = _bootstrap(
            (base, var), lambda b, v, axis=-1: v.mean(axis=axis) / b.mean(axis=axis), confidence)
    sem = float(diffs.std(ddof=1)) / np.sqrt(n)
    out["p_value"] = float(2 * stats.t.sf(abs(mean) / sem, n - 1))
    return out


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries are left out and stay NaN)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    if idx.size == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out

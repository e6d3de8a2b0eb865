"""Has a run reached steady state, and is its measurement window long enough for the percentile
that decides? A verdict separate from saturation (`simulator.metrics.saturation`): a stable
deployment can still be measured over too short a window, or before its queue has settled.

Two checks on the measured requests, in arrival order:

1. Warm-up: MSER-5 (White 1997; batches of 5 values) on each decisive latency (log scale) and on
   the waiting queue picks the truncation point that minimises the standard error of the
   remaining mean. If it lies more than a quarter of the window past the warm-up and the part it
   cuts differs materially from the rest (by 3 standard errors and 10%), the start of the window
   still carries the transient.
2. Window length: the confidence interval of each decisive percentile by batch means (20
   contiguous batches, the indicator 1{x <= estimate} averaged per batch, the interval of its mean
   inverted through the empirical distribution), which accounts for the correlation between
   neighbouring requests. The window is long enough when every interval is narrower than
   `rel_tolerance` of its estimate (half-width) or lies wholly on one side of its SLO limit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

MSER_BATCH = 5
CI_BATCHES = 20
CONFIDENCE = 0.95
REL_TOLERANCE = 0.10
MIN_REQUESTS = 100


def mser_truncation(values: np.ndarray, batch: int = MSER_BATCH) -> int:
    """MSER-b: how many leading values to drop (a multiple of `batch`) so that the rest has the
    smallest squared standard error of its mean; searched over the first half only."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    k = values.size // batch
    if k < 4:
        return 0
    means = values[: k * batch].reshape(k, batch).mean(axis=1)
    rev = means[::-1]
    n = np.arange(1, k + 1)
    s1 = np.cumsum(rev)[::-1]  # sums of means[d:]
    s2 = np.cumsum(rev * rev)[::-1]
    count = n[::-1].astype(float)
    sse = s2 - s1 * s1 / count
    mser = sse / (count * count)
    half = k // 2
    return int(np.argmin(mser[: half + 1])) * batch


def quantile_interval(values: np.ndarray, q: float, batches: int = CI_BATCHES,
                      confidence: float = CONFIDENCE) -> tuple[float, float, float] | None:
    """(estimate, low, high) of the q-quantile of a correlated series (arrival order), by batch
    means of the indicator below the estimate; None with too few values."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size < max(MIN_REQUESTS, batches * 2):
        return None
    estimate = float(np.quantile(values, q))
    size = values.size // batches
    below = (values[: size * batches] <= estimate).reshape(batches, size).mean(axis=1)
    se = float(below.std(ddof=1)) / np.sqrt(batches)
    # a batch spread of zero (every batch the same fraction) still leaves binomial noise
    se = max(se, np.sqrt(q * (1 - q) / values.size))
    t = float(stats.t.ppf((1 + confidence) / 2, batches - 1))
    lo_p, hi_p = max(q - t * se, 0.0), min(q + t * se, 1.0)
    return estimate, float(np.quantile(values, lo_p)), float(np.quantile(values, hi_p))


@dataclass(frozen=True)
class Decisive:
    """A percentile that decides whether a run meets its SLOs: e.g. p99 TTFT within 1,000 ms."""

    metric: str  # a requests-table column: ttft, tpot, e2e
    percentile: int
    limit_ms: float | None = None

    @property
    def key(self) -> str:
        return f"{self.metric}_p{self.percentile}"


@dataclass
class SteadyState:
    """The verdict on one run's measurement window."""

    steady: bool
    reason: str
    warmup_s: float
    window_s: float
    measured: int
    settled_at_s: float | None = None  # where MSER puts the end of the transient
    intervals: dict[str, list[float]] = field(default_factory=dict)  # key -> [estimate, low, high], ms
    too_wide: list[str] = field(default_factory=list)  # decisive keys whose interval is not decisive
    warmup_short: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


MATERIAL_SHIFT = 0.10


def _material(values: np.ndarray, d: int) -> bool:
    """Does dropping the first d values move the mean by more than three standard errors (batch
    means of the rest) and by more than 10%? MSER on a stationary but noisy series often cuts a
    stretch that happens to be high; only a real transient moves the mean that much."""
    head, tail = values[:d], values[d:]
    if abs(float(head.mean() - tail.mean())) <= MATERIAL_SHIFT * abs(float(tail.mean())):
        return False
    size = max(MSER_BATCH, tail.size // CI_BATCHES)
    k = tail.size // size
    if head.size == 0 or k < 4:
        return False
    batch_var = float(tail[: k * size].reshape(k, size).mean(axis=1).var(ddof=1))
    se = np.sqrt(batch_var * size * (1 / head.size + 1 / tail.size))
    return abs(float(head.mean() - tail.mean())) > 3 * se


def _settled_at(times: np.ndarray, values: np.ndarray, log: bool = False) -> float | None:
    """Where MSER puts the end of a material transient; None when there is none. Latencies are
    searched on a log scale, so that a few long requests do not pick the cut."""
    keep = ~np.isnan(values) & ((values > 0) if log else True)
    if keep.sum() < MIN_REQUESTS:
        return None
    t, v = times[keep], values[keep]
    d = mser_truncation(np.log(v) if log else v)
    return float(t[d]) if d and _material(v, d) else None


def assess(
    arrival: np.ndarray,
    columns: dict[str, np.ndarray],
    decisive: list[Decisive],
    *,
    warmup_s: float,
    window_s: float,
    start_s: float,
    queue: tuple[np.ndarray, np.ndarray] | None = None,
    saturated: bool = False,
    rel_tolerance: float = REL_TOLERANCE,
) -> SteadyState:
    """The verdict for the requests arriving in [start_s, start_s + window_s] (`arrival` and the
    `columns` of latencies in seconds, aligned, in arrival order). `queue`: the waiting queue as
    (bin centres, bin means) over the same run, for the MSER check of the warm-up."""
    order = np.argsort(arrival, kind="stable")
    arrival = np.asarray(arrival, dtype=float)[order]
    columns = {k: np.asarray(v, dtype=float)[order] for k, v in columns.items()}
    out = SteadyState(False, "", warmup_s, window_s, int(arrival.size))
    if saturated:
        out.reason = "saturated: no steady state exists at this load"
        return out
    if arrival.size < MIN_REQUESTS:
        out.reason = f"only {arrival.size} requests measured (fewer than {MIN_REQUESTS}): lengthen the window"
        out.too_wide = [d.key for d in decisive]
        return out
    settled = [s for d in decisive if (s := _settled_at(arrival, columns[d.metric], log=True)) is not None]
    if queue is not None and queue[0].size >= MIN_REQUESTS:
        inside = (queue[0] >= start_s) & (queue[0] <= start_s + window_s)
        if (s := _settled_at(queue[0][inside], queue[1][inside])) is not None:
            settled.append(s)
    out.settled_at_s = max(settled) if settled else None
    for d in decisive:
        ci = quantile_interval(columns[d.metric], d.percentile / 100)
        if ci is None:
            out.too_wide.append(d.key)
            continue
        est, lo, hi = (v * 1000 for v in ci)
        out.intervals[d.key] = [est, lo, hi]
        narrow = (hi - lo) / 2 <= rel_tolerance * max(est, 1e-12)
        decided = d.limit_ms is not None and (hi < d.limit_ms or lo > d.limit_ms)
        if not (narrow or decided):
            out.too_wide.append(d.key)
    problems = []
    if out.settled_at_s is not None and out.settled_at_s > start_s + 0.25 * window_s:
        out.warmup_short = True
        problems.append(f"latencies and queue still settling until t={out.settled_at_s:.0f} s, past the "
                        f"{warmup_s:.0f} s warm-up")
    for key in out.too_wide:
        label = key.replace("_", " ")
        if key not in out.intervals:
            problems.append(f"{label}: too few measured values for an interval")
            continue
        _, lo, hi = out.intervals[key]
        problems.append(f"{label} interval {lo:,.0f}-{hi:,.0f} ms is wider than ±{rel_tolerance:.0%} "
                        "and not clear of its limit")
    out.steady = not problems
    out.reason = "; ".join(problems) if problems else (
        f"steady: warm-up {warmup_s:.0f} s discarded, {arrival.size:,} requests over {window_s:.0f} s measured")
    return out

"""Is a run saturated: does its queue grow without bound at this load, or do its latencies measure
a backlog being drained rather than a steady state?

Four rules, any of which flags a run (docs/metrics.md explains them with examples):

1. backlog at the end: many requests still unfinished when the run stopped;
2. the waiting queue's trend over the second half of the arrivals (`detect_saturation`);
3. time in system: requests arriving later wait longer for their first token, a trend that
   dominates the noise (`ttft_trend`): a queue fed faster than it is served, even slightly;
4. a drained backlog: the last request's first token came later after the last arrival than
   the whole arrival window lasted (`drain_check`): a burst, not a load the deployment carries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator.metrics.records import STATUS_OK, STATUS_UNFINISHED


@dataclass(frozen=True)
class SaturationCheck:
    saturated: bool
    reason: str
    queue_growth: float = 0.0  # fitted growth of the waiting queue over the inspected window


def sum_over_replicas(timeseries: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """A sampled column summed across replicas, as a step function of time.

    Each replica's sample holds until its next sample (samples are irregular, at step
    boundaries). Returns the change times and the sum from each time on; before a replica's first
    sample it contributes 0. Without a `replica` column all rows belong to one replica.
    """
    if timeseries.empty:
        return np.empty(0), np.empty(0)
    df = timeseries[["time", column]].copy()
    df["replica"] = timeseries["replica"].fillna(-1) if "replica" in timeseries else 0
    df = df.sort_values(["replica", "time"], kind="stable")
    previous = df.groupby("replica", sort=False)[column].shift(1).fillna(0.0)
    df["delta"] = df[column].astype(np.float64) - previous
    df = df.sort_values("time", kind="stable")
    t = df["time"].to_numpy(dtype=np.float64)
    total = np.cumsum(df["delta"].to_numpy())
    last_of_time = np.append(t[1:] != t[:-1], True)  # keep the state after all changes at a time
    return t[last_of_time], total[last_of_time]


def total_waiting(timeseries: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Total waiting requests over time across replicas: (change times, total from then on)."""
    return sum_over_replicas(timeseries, "waiting")


def bin_means(t: np.ndarray, v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Exact mean of the step function (t, v) over each bin between consecutive edges."""
    integral = np.concatenate([[0.0], np.cumsum(v[:-1] * np.diff(t))])

    def integral_at(x: np.ndarray) -> np.ndarray:
        inside = np.interp(x, t, integral)
        after = integral[-1] + v[-1] * (x - t[-1])
        return np.where(x < t[0], 0.0, np.where(x > t[-1], after, inside))

    return np.diff(integral_at(edges)) / np.diff(edges)


def detect_saturation(
    timeseries: pd.DataFrame | None,
    arrivals_end: float,
    *,
    arrivals_start: float | None = None,
    arrival_times: np.ndarray | None = None,
    unfinished: int = 0,
    total: int = 0,
    min_growth: float = 10.0,
    growth_fraction: float = 0.05,
    unfinished_fraction: float = 0.25,
) -> SaturationCheck:
    """Is the deployment saturated, i.e. does its queue grow without bound at this load?

    Rule, either of:

    1. Growing queue. Take the second half of the arrival window [start, arrivals_end] (start:
       `arrivals_start`, else the first sample), where warm-up is over. Average the total
       waiting queue (summed over replicas, each sample held until the next) over 200 equal bins
       and fit a least-squares line. Saturated when the fitted growth over that half
       (slope x half length) exceeds max(`min_growth` requests, `growth_fraction` x requests
       arriving in that half). A stable queue, however bursty, returns to its level, so its fitted
       growth is about one burst divided by the number of bursts in the window; a queue fed faster
       than it is served grows by (1 - service rate / arrival rate) x arrivals, so an overload of
       5% sits at the limit and one of 10% or more is flagged (an M/M/1 queue at 98% load over
       6,000 arrivals is not).
    2. Backlog at the end: more than max(`min_growth`, `unfinished_fraction` x `total`) requests
       were still unfinished when the run stopped.
    """
    backlog_limit = max(min_growth, unfinished_fraction * total)
    if unfinished > backlog_limit:
        return SaturationCheck(
            True,
            f"{unfinished} of {total} requests ({unfinished / max(total, 1):.0%}) were still "
            "unfinished when the run stopped",
        )
    if timeseries is None or "waiting" not in timeseries.columns or timeseries.empty:
        return SaturationCheck(False, "")
    t, waiting = total_waiting(timeseries)
    start = float(t[0]) if arrivals_start is None else float(arrivals_start)
    mid = (start + arrivals_end) / 2
    half = arrivals_end - mid
    if half <= 0 or t[0] >= arrivals_end:
        return SaturationCheck(False, "")
    edges = np.linspace(mid, arrivals_end, 201)
    means = bin_means(t, waiting, edges)
    centres = (edges[:-1] + edges[1:]) / 2
    x = centres - centres.mean()
    slope = float(np.dot(x, means - means.mean()) / np.dot(x, x))
    growth = slope * half
    arrived = 0
    if arrival_times is not None:
        arrival_times = np.asarray(arrival_times)
        arrived = int(np.count_nonzero((arrival_times >= mid) & (arrival_times <= arrivals_end)))
    limit = max(min_growth, growth_fraction * arrived)
    if growth > limit:
        return SaturationCheck(
            True,
            f"waiting queue grew by about {growth:.0f} requests ({slope:.2f}/s) between "
            f"t={mid:.1f}s and t={arrivals_end:.1f}s, the second half of the arrivals "
            f"(limit {limit:.0f})",
            growth,
        )
    return SaturationCheck(False, "", growth)


def waiting_from_records(frame: pd.DataFrame) -> pd.DataFrame:
    """A `time, waiting` series built from requests alone: arrived, admitted or unfinished
    requests that have not yet produced their first token. Used when no server-side timeseries
    exists (HTTP benchmarks). Rejected and failed requests are left out."""
    keep = frame["status"].isin([STATUS_OK, STATUS_UNFINISHED]).to_numpy()
    arrival = frame["arrival"].to_numpy()[keep]
    first = frame["first_token"].to_numpy()[keep]
    first = first[~np.isnan(first)]
    t = np.concatenate([arrival, first])
    delta = np.concatenate([np.ones(arrival.size), -np.ones(first.size)])
    order = np.argsort(t, kind="stable")
    return pd.DataFrame({"time": t[order], "waiting": np.cumsum(delta[order])})


# Time-in-system trend: a fit that explains at least half of the TTFT variance, and a fitted rise
# over the inspected half of at least half the mean TTFT there. A stable queue, however loaded,
# returns to its level (fits explain a few percent: M/D/1 up to 98% load over 6,000 arrivals
# reached R^2 0.2); an overload of 2% already gives R^2 0.7-0.85.
TREND_MIN_R2 = 0.5
TREND_MIN_RISE = 0.5
MIN_REQUESTS = 20  # fewer requests in the inspected window say nothing about a trend


def ttft_trend(arrival: np.ndarray, ttft: np.ndarray, start: float, end: float) -> SaturationCheck:
    """Do requests arriving later in the second half of [start, end] wait longer for their first
    token, by a trend that dominates the noise?"""
    mid = (start + end) / 2
    keep = (arrival >= mid) & ~np.isnan(ttft)
    x, y = arrival[keep], ttft[keep]
    if x.size < MIN_REQUESTS or np.ptp(x) <= 0 or np.mean(y) <= 0:
        return SaturationCheck(False, "")
    slope, intercept = np.polyfit(x, y, 1)
    spread = float(np.sum((y - y.mean()) ** 2))
    r2 = 1 - float(np.sum((y - (slope * x + intercept)) ** 2)) / spread if spread > 0 else 0.0
    rise = float(slope * (end - mid))
    if r2 >= TREND_MIN_R2 and rise >= TREND_MIN_RISE * float(np.mean(y)):
        return SaturationCheck(
            True,
            f"time to first token rose by about {rise:.2f} s over the second half of the arrivals "
            f"(t={mid:.1f}s to t={end:.1f}s; the trend explains {r2:.0%} of its variance): requests "
            "arrive faster than they are served",
        )
    return SaturationCheck(False, "")


def drain_check(arrival: np.ndarray, first_token: np.ndarray) -> SaturationCheck:
    """Did the queue left at the last arrival take longer to clear than all the arrivals took?"""
    started = first_token[~np.isnan(first_token)]
    if arrival.size < MIN_REQUESTS or not started.size:
        return SaturationCheck(False, "")
    span = float(arrival.max() - arrival.min())
    drain = float(started.max() - arrival.max())
    if drain > span:
        return SaturationCheck(
            True,
            f"the last request's first token came {drain:.1f} s after the last arrival, longer than the "
            f"{span:.1f} s the arrivals took: the run drained a backlog, its latencies are not a steady state's",
        )
    return SaturationCheck(False, "")


def saturation_for_run(df: pd.DataFrame, timeseries: pd.DataFrame | None) -> SaturationCheck:
    """The four rules on a run's per-request table and, where it has one, its time series."""
    if df.empty:
        return SaturationCheck(False, "")
    if timeseries is None or "waiting" not in timeseries.columns:
        timeseries = waiting_from_records(df)
    arrivals = df["arrival"].to_numpy()
    start, end = float(arrivals.min()), float(arrivals.max())
    check = detect_saturation(
        timeseries,
        end,
        arrivals_start=start,
        arrival_times=arrivals,
        unfinished=int((df["status"] == STATUS_UNFINISHED).sum()),
        total=len(df),
    )
    if check.saturated:
        return check
    trend = ttft_trend(arrivals, df["ttft"].to_numpy(dtype=float), start, end)
    if trend.saturated:
        return SaturationCheck(True, trend.reason, check.queue_growth)
    drain = drain_check(arrivals, df["first_token"].to_numpy(dtype=float))
    return SaturationCheck(drain.saturated, drain.reason, check.queue_growth)

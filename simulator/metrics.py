"""Serving metrics, one definition for the simulator, the real engine and the HTTP load client.

Every producer turns its requests into `RequestRecord`s (arrival, prompt length, the absolute time
of each generated token, a final status); everything else here is computed from those records, so
a simulated run and a measured run are summarised by the very same code.

Definitions follow vLLM's serving benchmark (`benchmarks/benchmark_serving.py`):

- TTFT: arrival to first token.
- E2E: arrival to last token.
- TPOT: (E2E - TTFT) / (output_tokens - 1), only for requests with more than one output token.
- ITL: gaps between consecutive tokens of a request, pooled over all requests.
- Throughput: completed requests, their output tokens and their prompt + output tokens, each per
  second of run duration (default duration: first arrival to last finish).
- Goodput: completed requests meeting every SLO of their class, per second.
- SLO attainment: good requests / all arrived requests (rejected, unfinished and failed included).
- Cost per 1M tokens: cost_per_hour x duration / 3600 / tokens x 1e6 (tokens of completed requests).

Latency statistics (mean, p50, p90, p95, p99, with numpy's default linear interpolation) cover
completed requests only. Times are seconds here; reports convert to milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, PositiveFloat

STATUS_OK = "ok"  # finished normally
STATUS_REJECTED = "rejected"  # never admitted (e.g. prompt longer than the context)
STATUS_UNFINISHED = "unfinished"  # still in the system when the run stopped
STATUS_ERROR = "error"  # client-side failure or timeout
STATUSES = frozenset({STATUS_OK, STATUS_REJECTED, STATUS_UNFINISHED, STATUS_ERROR})

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2e")
PERCENTILES = (50, 90, 95, 99)

# An ITL SLO holds for a request when at least this fraction of its inter-token gaps are within it.
ITL_SLO_FRACTION = 0.99
_SLO_TOLERANCE_S = 1e-9  # absorbs float noise from ms -> s conversions


@dataclass(slots=True)
class RequestRecord:
    """What one request looked like from outside, whoever served it.

    `token_times` holds the absolute time (s) of each generated token; the first entry is the
    first token and the last entry is the finish time of a completed request.
    """

    request_id: int
    request_class: str
    arrival: float
    prompt_tokens: int
    token_times: np.ndarray
    status: str
    replica: int | None = None
    num_preemptions: int = 0
    cached_prompt_tokens: int = 0

    def __post_init__(self) -> None:
        self.token_times = np.asarray(self.token_times, dtype=np.float64).reshape(-1)
        if self.status not in STATUSES:
            raise ValueError(
                f"request {self.request_id}: status {self.status!r} is not one of {sorted(STATUSES)}"
            )


class SLO(BaseModel):
    """Latency objectives of one request class, in milliseconds; unset ones are not checked.

    - `ttft_ms`, `e2e_ms`: the request's TTFT / E2E must not exceed them.
    - `tpot_ms`: the request's TPOT must not exceed it (a 1-token request has no TPOT and passes).
    - `itl_ms`: at least 99% of the request's inter-token gaps must be within it. A request with
      fewer than 100 gaps therefore needs every gap within it; a long one may have 1% of stalls.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_ms: PositiveFloat | None = None
    tpot_ms: PositiveFloat | None = None
    e2e_ms: PositiveFloat | None = None
    itl_ms: PositiveFloat | None = None


# --------------------------------------------------------------------------------------------
# Per-request table
# --------------------------------------------------------------------------------------------


@dataclass
class _Computed:
    frame: pd.DataFrame
    gaps: np.ndarray  # pooled inter-token gaps of completed requests
    gap_classes: np.ndarray  # class of each pooled gap


def _compute(records: Sequence[RequestRecord], slos: dict[str, SLO] | None) -> _Computed:
    n = len(records)
    ids = np.fromiter((r.request_id for r in records), dtype=np.int64, count=n)
    classes = np.array([r.request_class for r in records], dtype=object)
    statuses = np.array([r.status for r in records], dtype=object)
    arrival = np.fromiter((r.arrival for r in records), dtype=np.float64, count=n)
    prompt = np.fromiter((r.prompt_tokens for r in records), dtype=np.int64, count=n)
    cached = np.fromiter((r.cached_prompt_tokens for r in records), dtype=np.int64, count=n)
    preemptions = np.fromiter((r.num_preemptions for r in records), dtype=np.int64, count=n)
    replica = pd.array([r.replica for r in records], dtype="Int64")
    counts = np.fromiter((r.token_times.size for r in records), dtype=np.int64, count=n)

    ends = np.cumsum(counts)
    starts = ends - counts
    times = np.concatenate([r.token_times for r in records]) if n else np.empty(0)
    has_token = counts > 0
    ok = (statuses == STATUS_OK) & has_token

    first = np.full(n, np.nan)
    last = np.full(n, np.nan)
    first[has_token] = times[starts[has_token]]
    last[has_token] = times[ends[has_token] - 1]

    # Gaps inside each request: drop the differences that straddle two requests.
    owner = np.repeat(np.arange(n), counts)
    diffs = np.diff(times)
    within = owner[1:] == owner[:-1] if times.size else np.zeros(0, dtype=bool)
    gaps = diffs[within]
    gap_owner = owner[1:][within]
    bad = np.flatnonzero(gaps < 0)
    if bad.size:
        raise ValueError(f"request {ids[gap_owner[bad[0]]]}: token_times are not in increasing order")
    early = np.flatnonzero(has_token & (first < arrival))
    if early.size:
        raise ValueError(f"request {ids[early[0]]}: first token is earlier than the arrival")

    num_gaps = np.maximum(counts - 1, 0)
    multi = num_gaps > 0
    itl_max = np.full(n, np.nan)
    if gaps.size:
        itl_max[multi] = np.maximum.reduceat(gaps, (np.cumsum(num_gaps) - num_gaps)[multi])

    ttft = np.where(ok, first - arrival, np.nan)
    e2e = np.where(ok, last - arrival, np.nan)
    ok_multi = ok & multi
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(ok_multi, (e2e - ttft) / num_gaps, np.nan)
    itl_mean = tpot.copy()  # the mean gap of a request is its TPOT
    itl_max = np.where(ok_multi, itl_max, np.nan)

    met = _meets_slos(ok, classes, ttft, tpot, e2e, gaps, num_gaps, slos or {})

    frame = pd.DataFrame(
        {
            "id": ids,
            "class": classes,
            "status": statuses,
            "arrival": arrival,
            "first_token": first,
            "finish": np.where(ok, last, np.nan),
            "prompt_tokens": prompt,
            "cached_prompt_tokens": cached,
            "output_tokens": counts,
            "ttft": ttft,
            "tpot": tpot,
            "e2e": e2e,
            "itl_mean": itl_mean,
            "itl_max": itl_max,
            "met_slo": met,
            "replica": replica,
            "preemptions": preemptions,
        }
    )
    ok_gap = ok[gap_owner] if gaps.size else np.zeros(0, dtype=bool)
    return _Computed(frame=frame, gaps=gaps[ok_gap], gap_classes=classes[gap_owner[ok_gap]])


def _meets_slos(
    ok: np.ndarray,
    classes: np.ndarray,
    ttft: np.ndarray,
    tpot: np.ndarray,
    e2e: np.ndarray,
    gaps: np.ndarray,
    num_gaps: np.ndarray,
    slos: dict[str, SLO],
) -> np.ndarray:
    """True for completed requests meeting every SLO of their class (see `SLO`)."""
    met = ok.copy()
    multi = num_gaps > 0
    gap_starts = np.cumsum(num_gaps) - num_gaps
    for name, slo in slos.items():
        rows = ok & (classes == name)
        if not rows.any():
            continue
        good = np.ones(len(ok), dtype=bool)
        for value, limit_ms in ((ttft, slo.ttft_ms), (e2e, slo.e2e_ms)):
            if limit_ms is not None:
                good &= value <= limit_ms / 1000 + _SLO_TOLERANCE_S
        if slo.tpot_ms is not None:  # NaN TPOT (one output token) passes
            good &= ~(tpot > slo.tpot_ms / 1000 + _SLO_TOLERANCE_S)
        if slo.itl_ms is not None and gaps.size:
            over = (gaps > slo.itl_ms / 1000 + _SLO_TOLERANCE_S).astype(np.int64)
            exceed = np.zeros(len(ok), dtype=np.int64)
            exceed[multi] = np.add.reduceat(over, gap_starts[multi])
            allowed = np.floor((1 - ITL_SLO_FRACTION) * num_gaps + 1e-9)
            good &= exceed <= allowed
        met[rows] = good[rows]
    return met


def requests_frame(
    records: Iterable[RequestRecord], slos: dict[str, SLO] | None = None
) -> pd.DataFrame:
    """One row per request (times in seconds), the table written as requests.csv.

    Columns: id, class, status, arrival, first_token, finish, prompt_tokens, cached_prompt_tokens,
    output_tokens, ttft, tpot, e2e, itl_mean, itl_max, met_slo, replica, preemptions.
    `first_token` is set for any request that produced a token; the latency columns and `finish`
    only for completed ("ok") requests, so that column statistics match the summary. `tpot`,
    `itl_mean` and `itl_max` are NaN for single-token requests. `met_slo` is False for requests
    that did not complete, and True for completed requests of a class without SLOs.
    """
    return _compute(list(records), slos).frame


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


@dataclass
class LatencyStats:
    """Mean and percentiles of one latency metric, in seconds (None when there is no sample)."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def of(cls, values: np.ndarray) -> LatencyStats:
        values = np.asarray(values, dtype=np.float64)
        values = values[~np.isnan(values)]
        if values.size == 0:
            return cls(0, None, None, None, None, None)
        p50, p90, p95, p99 = (float(v) for v in np.percentile(values, PERCENTILES))
        return cls(int(values.size), float(values.mean()), p50, p90, p95, p99)

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "mean": self.mean,
            "p50": self.p50,
            "p90": self.p90,
            "p95": self.p95,
            "p99": self.p99,
        }


@dataclass
class ClassSummary:
    """Counts, goodput, SLO attainment and latencies of one request class."""

    total: int
    completed: int
    good: int
    goodput: float | None  # good requests per second
    slo_attainment: float | None  # good / total, in [0, 1]
    slo: SLO | None
    latency: dict[str, LatencyStats]

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "completed": self.completed,
            "good": self.good,
            "goodput_rps": _clean(self.goodput),
            "slo_attainment": _clean(self.slo_attainment),
            "slo_ms": self.slo.model_dump(exclude_none=True) if self.slo else None,
            "latency_s": {k: v.to_dict() for k, v in self.latency.items()},
        }


@dataclass
class Summary:
    """Everything summary.json holds about one run. Times in seconds, rates per second."""

    total: int
    completed: int
    rejected: int
    unfinished: int
    errors: int
    duration: float
    prompt_tokens: int  # of completed requests
    output_tokens: int  # of completed requests
    request_throughput: float | None
    output_throughput: float | None
    total_token_throughput: float | None
    latency: dict[str, LatencyStats]  # ttft, tpot, itl, e2e
    good: int
    goodput: float | None
    slo_attainment: float | None  # in [0, 1]
    classes: dict[str, ClassSummary]
    cost_per_hour: float
    cost_total: float
    cost_per_million_output_tokens: float | None
    cost_per_million_total_tokens: float | None
    gpu_busy_fraction: float | None = None
    kv_usage_mean: float | None = None
    saturated: bool = False
    saturation_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # producers may attach run metadata

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes None); see `summarize` for the layout."""
        return {
            "saturated": self.saturated,
            "saturation_reason": self.saturation_reason,
            "duration_s": _clean(self.duration),
            "counts": {
                "total": self.total,
                "completed": self.completed,
                "rejected": self.rejected,
                "unfinished": self.unfinished,
                "errors": self.errors,
            },
            "tokens": {"prompt": self.prompt_tokens, "output": self.output_tokens},
            "throughput": {
                "requests_per_s": _clean(self.request_throughput),
                "output_tokens_per_s": _clean(self.output_throughput),
                "total_tokens_per_s": _clean(self.total_token_throughput),
            },
            "latency_s": {k: v.to_dict() for k, v in self.latency.items()},
            "slo": {
                "good": self.good,
                "goodput_rps": _clean(self.goodput),
                "slo_attainment": _clean(self.slo_attainment),
            },
            "classes": {k: v.to_dict() for k, v in self.classes.items()},
            "cost": {
                "per_hour_usd": _clean(self.cost_per_hour),
                "total_usd": _clean(self.cost_total),
                "per_1m_output_tokens_usd": _clean(self.cost_per_million_output_tokens),
                "per_1m_total_tokens_usd": _clean(self.cost_per_million_total_tokens),
            },
            "utilization": {
                "gpu_busy_fraction": _clean(self.gpu_busy_fraction),
                "kv_usage_mean": _clean(self.kv_usage_mean),
            },
            **({"extra": self.extra} if self.extra else {}),
        }


def _clean(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def _rate(amount: float, duration: float) -> float | None:
    return amount / duration if duration > 0 else None


def summarize(
    records: Iterable[RequestRecord],
    *,
    slos: dict[str, SLO] | None = None,
    duration: float | None = None,
    cost_per_hour: float = 0.0,
    timeseries: pd.DataFrame | None = None,
) -> Summary:
    """Summarise a run.

    `duration` (s) defaults to first arrival to last finish of a completed request (to the last
    arrival when none completed), as vLLM's benchmark measures it; it divides every rate and
    prices the run: cost = cost_per_hour x duration / 3600. Throughputs and cost per token count
    the tokens of completed requests. A class without an entry in `slos` has no objective: its
    completed requests all count as good. `timeseries` (columns time, waiting, running, kv_usage,
    busy, optionally replica) feeds utilisation and saturation detection; without it, saturation
    is judged from the records' own queue (requests still waiting for their first token).

    summary.json layout (`Summary.to_dict()`): saturated, saturation_reason, duration_s,
    counts{total, completed, rejected, unfinished, errors}, tokens{prompt, output},
    throughput{requests_per_s, output_tokens_per_s, total_tokens_per_s},
    latency_s{ttft, tpot, itl, e2e: {count, mean, p50, p90, p95, p99}},
    slo{good, goodput_rps, slo_attainment}, classes{name: {total, completed, good, goodput_rps,
    slo_attainment, slo_ms, latency_s}}, cost{per_hour_usd, total_usd, per_1m_output_tokens_usd,
    per_1m_total_tokens_usd}, utilization{gpu_busy_fraction, kv_usage_mean}.
    """
    records = list(records)
    slos = slos or {}
    computed = _compute(records, slos)
    df = computed.frame
    status = df["status"].to_numpy()
    ok = df["finish"].notna().to_numpy()

    if duration is None:
        if len(df):
            end = df["finish"].max() if ok.any() else df["arrival"].max()
            duration = float(end - df["arrival"].min())
        else:
            duration = 0.0
    duration = max(float(duration), 0.0)

    prompt_tokens = int(df["prompt_tokens"].to_numpy()[ok].sum())
    output_tokens = int(df["output_tokens"].to_numpy()[ok].sum())
    completed = int(ok.sum())
    good = int(df["met_slo"].sum())
    cost_total = cost_per_hour * duration / 3600.0

    classes: dict[str, ClassSummary] = {}
    class_values = df["class"].to_numpy()
    for name in sorted(set(class_values) | set(slos)):
        rows = class_values == name
        total_c = int(rows.sum())
        good_c = int(df["met_slo"].to_numpy()[rows].sum())
        classes[name] = ClassSummary(
            total=total_c,
            completed=int((rows & ok).sum()),
            good=good_c,
            goodput=_rate(good_c, duration),
            slo_attainment=good_c / total_c if total_c else None,
            slo=slos.get(name),
            latency=_latency_stats(df[rows], computed.gaps[computed.gap_classes == name]),
        )

    busy = _time_weighted_mean(timeseries, "busy")
    kv = _time_weighted_mean(timeseries, "kv_usage")
    check = _saturation_for_run(df, timeseries)

    return Summary(
        total=len(df),
        completed=completed,
        rejected=int((status == STATUS_REJECTED).sum()),
        unfinished=int((status == STATUS_UNFINISHED).sum()),
        errors=int((status == STATUS_ERROR).sum()),
        duration=duration,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        request_throughput=_rate(completed, duration),
        output_throughput=_rate(output_tokens, duration),
        total_token_throughput=_rate(prompt_tokens + output_tokens, duration),
        latency=_latency_stats(df, computed.gaps),
        good=good,
        goodput=_rate(good, duration),
        slo_attainment=good / len(df) if len(df) else None,
        classes=classes,
        cost_per_hour=float(cost_per_hour),
        cost_total=cost_total,
        cost_per_million_output_tokens=cost_total / output_tokens * 1e6 if output_tokens else None,
        cost_per_million_total_tokens=(
            cost_total / (prompt_tokens + output_tokens) * 1e6 if prompt_tokens + output_tokens else None
        ),
        gpu_busy_fraction=busy,
        kv_usage_mean=kv,
        saturated=check.saturated,
        saturation_reason=check.reason,
    )


def _latency_stats(df: pd.DataFrame, gaps: np.ndarray) -> dict[str, LatencyStats]:
    return {
        "ttft": LatencyStats.of(df["ttft"].to_numpy()),
        "tpot": LatencyStats.of(df["tpot"].to_numpy()),
        "itl": LatencyStats.of(gaps),
        "e2e": LatencyStats.of(df["e2e"].to_numpy()),
    }


def _time_weighted_mean(timeseries: pd.DataFrame | None, column: str) -> float | None:
    """Mean of a sampled column, each sample holding until that replica's next one; replicas
    are averaged with equal weight. None when the column is absent or empty."""
    if timeseries is None or column not in timeseries.columns or timeseries.empty:
        return None
    groups = timeseries.groupby("replica", dropna=False) if "replica" in timeseries else [(0, timeseries)]
    means = []
    for _, group in groups:
        group = group.sort_values("time", kind="stable")
        t = group["time"].to_numpy(dtype=np.float64)
        v = group[column].to_numpy(dtype=np.float64)
        span = t[-1] - t[0]
        if span > 0:
            means.append(float(np.sum(v[:-1] * np.diff(t)) / span))
        else:
            means.append(float(np.mean(v)))
    return float(np.mean(means)) if means else None


# --------------------------------------------------------------------------------------------
# Saturation
# --------------------------------------------------------------------------------------------


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


def _saturation_for_run(df: pd.DataFrame, timeseries: pd.DataFrame | None) -> SaturationCheck:
    if df.empty:
        return SaturationCheck(False, "")
    if timeseries is None or "waiting" not in timeseries.columns:
        timeseries = waiting_from_records(df)
    arrivals = df["arrival"].to_numpy()
    return detect_saturation(
        timeseries,
        float(arrivals.max()),
        arrivals_start=float(arrivals.min()),
        arrival_times=arrivals,
        unfinished=int((df["status"] == STATUS_UNFINISHED).sum()),
        total=len(df),
    )

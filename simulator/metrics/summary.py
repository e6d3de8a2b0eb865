"""The summary of a run: counts, throughput, latency statistics, goodput, SLO attainment and cost,
overall and per request class (what summary.json holds)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from simulator.metrics.records import (
    PERCENTILES,
    STATUS_ERROR,
    STATUS_REJECTED,
    STATUS_UNFINISHED,
    RequestRecord,
    compute,
)
from simulator.metrics.saturation import saturation_for_run
from simulator.metrics.slo import SLO


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
    computed = compute(records, slos)
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
    check = saturation_for_run(df, timeseries)

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

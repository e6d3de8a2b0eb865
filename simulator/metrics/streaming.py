"""A run's summary built chunk by chunk, in bounded memory, for runs too large to keep every record.

Each chunk of finished requests goes through the very same per-request table as a whole run
(`records.compute`), is appended to requests.csv and then dropped. What is kept: exact counts
(per status, per class, good requests, tokens, the first arrival and the last finish, sums for
the means) and one mergeable quantile sketch per metric and class (simulator/metrics/sketch.py),
so percentiles are within the sketch's relative error (1% by default) and everything else is
exact. Saturation is judged only by the backlog at the end: the queue-trend rules of
simulator/metrics/saturation.py need the whole table.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from simulator.metrics.records import (
    LATENCY_METRICS,
    PERCENTILES,
    STATUS_ERROR,
    STATUS_REJECTED,
    STATUS_UNFINISHED,
    RequestRecord,
    compute,
)
from simulator.metrics.sketch import DEFAULT_RELATIVE_ERROR, LogBucketSketch
from simulator.metrics.slo import SLO
from simulator.metrics.summary import ClassSummary, LatencyStats, Summary


class _Tally:
    """Exact counts and one sketch per latency metric, for the whole run or one class."""

    def __init__(self, relative_error: float):
        self.total = self.completed = self.good = 0
        self.sketches = {m: LogBucketSketch(relative_error) for m in LATENCY_METRICS}

    def latency(self) -> dict[str, LatencyStats]:
        out = {}
        for metric, s in self.sketches.items():
            if s.count == 0:
                out[metric] = LatencyStats(0, None, None, None, None, None)
            else:
                p = [s.quantile(q / 100) for q in PERCENTILES]
                out[metric] = LatencyStats(s.count, s.mean, *p)
        return out


class StreamingSummary:
    def __init__(self, slos: dict[str, SLO] | None, requests_csv: Path | None,
                 relative_error: float = DEFAULT_RELATIVE_ERROR):  # fmt: skip
        self.slos = slos or {}
        self.path = requests_csv
        self.relative_error = relative_error
        self.all = _Tally(relative_error)
        self.classes: dict[str, _Tally] = defaultdict(lambda: _Tally(relative_error))
        self.status = {STATUS_REJECTED: 0, STATUS_UNFINISHED: 0, STATUS_ERROR: 0}
        self.prompt_tokens = self.output_tokens = 0
        self.first_arrival, self.last_arrival, self.last_finish = math.inf, -math.inf, -math.inf
        self.rows_written = 0

    def add(self, records: list[RequestRecord]) -> None:
        """Count a chunk of records and append its rows to requests.csv."""
        if not records:
            return
        computed = compute(records, self.slos)
        df = computed.frame
        if self.path is not None:
            df.to_csv(self.path, mode="a" if self.rows_written else "w", header=not self.rows_written, index=False)
            self.rows_written += len(df)
        status = df["status"].to_numpy()
        for key in self.status:
            self.status[key] += int((status == key).sum())
        ok = df["finish"].notna().to_numpy()
        self.prompt_tokens += int(df["prompt_tokens"].to_numpy()[ok].sum())
        self.output_tokens += int(df["output_tokens"].to_numpy()[ok].sum())
        arrival = df["arrival"].to_numpy()
        self.first_arrival = min(self.first_arrival, float(arrival.min()))
        self.last_arrival = max(self.last_arrival, float(arrival.max()))
        if ok.any():
            self.last_finish = max(self.last_finish, float(df["finish"].to_numpy()[ok].max()))
        classes, met = df["class"].to_numpy(), df["met_slo"].to_numpy(dtype=bool)
        for name in sorted(set(classes)) + [None]:
            rows = np.ones(len(df), dtype=bool) if name is None else classes == name
            tally = self.all if name is None else self.classes[name]
            tally.total += int(rows.sum())
            tally.completed += int((rows & ok).sum())
            tally.good += int(met[rows].sum())
            for metric in ("ttft", "tpot", "e2e"):
                tally.sketches[metric].add(df[metric].to_numpy()[rows])
            tally.sketches["itl"].add(computed.gaps if name is None else computed.gaps[computed.gap_classes == name])

    def summary(self, cost_per_hour: float = 0.0, gpu_busy_fraction: float | None = None,
                kv_usage_mean: float | None = None) -> Summary:  # fmt: skip
        """The summary of every record added, as `summarize` lays it out."""
        a = self.all
        if a.total:
            end = self.last_finish if a.completed else self.last_arrival
            duration = max(float(end - self.first_arrival), 0.0)
        else:
            duration = 0.0

        def rate(x: float) -> float | None:
            return x / duration if duration > 0 else None

        classes = {}
        for name in sorted(set(self.classes) | set(self.slos)):
            c = self.classes[name]
            classes[name] = ClassSummary(total=c.total, completed=c.completed, good=c.good, goodput=rate(c.good),
                                         slo_attainment=c.good / c.total if c.total else None,
                                         slo=self.slos.get(name), latency=c.latency())  # fmt: skip
        cost_total = cost_per_hour * duration / 3600.0
        tokens = self.prompt_tokens + self.output_tokens
        unfinished = self.status[STATUS_UNFINISHED]
        return Summary(
            total=a.total, completed=a.completed, rejected=self.status[STATUS_REJECTED], unfinished=unfinished,
            errors=self.status[STATUS_ERROR], duration=duration, prompt_tokens=self.prompt_tokens,
            output_tokens=self.output_tokens, request_throughput=rate(a.completed),
            output_throughput=rate(self.output_tokens), total_token_throughput=rate(tokens), latency=a.latency(),
            good=a.good, goodput=rate(a.good), slo_attainment=a.good / a.total if a.total else None,
            classes=classes, cost_per_hour=float(cost_per_hour), cost_total=cost_total,
            cost_per_million_output_tokens=cost_total / self.output_tokens * 1e6 if self.output_tokens else None,
            cost_per_million_total_tokens=cost_total / tokens * 1e6 if tokens else None,
            gpu_busy_fraction=gpu_busy_fraction, kv_usage_mean=kv_usage_mean, saturated=unfinished > 0,
            saturation_reason=(f"{unfinished:,} requests unfinished when the run stopped (streamed run: only the "
                               "backlog at the end is checked)") if unfinished else "",
        )

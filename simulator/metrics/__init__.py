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

Modules: records (RequestRecord, the per-request table), slo (per-request objectives),
summary (summarize), saturation, objectives (run-level SLO rules), report (terminal table),
plots, results (a run's outcome on disk). Imports only simulator.common.
"""

from simulator.metrics.records import (
    LATENCY_METRICS,
    PERCENTILES,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_REJECTED,
    STATUS_UNFINISHED,
    STATUSES,
    RequestRecord,
    requests_frame,
)
from simulator.metrics.saturation import (
    SaturationCheck,
    bin_means,
    detect_saturation,
    sum_over_replicas,
    total_waiting,
    waiting_from_records,
)
from simulator.metrics.slo import ITL_SLO_FRACTION, SLO
from simulator.metrics.summary import ClassSummary, LatencyStats, Summary, summarize

__all__ = [
    "ITL_SLO_FRACTION",
    "LATENCY_METRICS",
    "PERCENTILES",
    "SLO",
    "STATUSES",
    "STATUS_ERROR",
    "STATUS_OK",
    "STATUS_REJECTED",
    "STATUS_UNFINISHED",
    "ClassSummary",
    "LatencyStats",
    "RequestRecord",
    "SaturationCheck",
    "Summary",
    "bin_means",
    "detect_saturation",
    "requests_frame",
    "sum_over_replicas",
    "summarize",
    "total_waiting",
    "waiting_from_records",
]

"""What a request looked like from outside (`RequestRecord`) and the per-request table.

Every producer (the simulator, the real engine, the HTTP load client) turns its requests into
records; every metric is computed from them, so all three are summarised by the very same code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulator.metrics.slo import SLO, meets_slos

STATUS_OK = "ok"  # finished normally
STATUS_REJECTED = "rejected"  # never admitted (e.g. prompt longer than the context)
STATUS_UNFINISHED = "unfinished"  # still in the system when the run stopped
STATUS_ERROR = "error"  # client-side failure or timeout
STATUSES = frozenset({STATUS_OK, STATUS_REJECTED, STATUS_UNFINISHED, STATUS_ERROR})

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2e")
PERCENTILES = (50, 90, 95, 99)

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
    reason: str = ""  # why llmsim changed (clipped) or dropped (rejected) the request, in words

    def __post_init__(self) -> None:
        self.token_times = np.asarray(self.token_times, dtype=np.float64).reshape(-1)
        if self.status not in STATUSES:
            raise ValueError(
                f"request {self.request_id}: status {self.status!r} is not one of {sorted(STATUSES)}"
            )


# The per-request table ----------------------------------------------------------------------


@dataclass
class _Computed:
    frame: pd.DataFrame
    gaps: np.ndarray  # pooled inter-token gaps of completed requests
    gap_classes: np.ndarray  # class of each pooled gap


def compute(records: Sequence[RequestRecord], slos: dict[str, SLO] | None) -> _Computed:
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

    met = meets_slos(ok, classes, ttft, tpot, e2e, gaps, num_gaps, slos or {})

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
            "reason": [r.reason for r in records],
        }
    )
    ok_gap = ok[gap_owner] if gaps.size else np.zeros(0, dtype=bool)
    return _Computed(frame=frame, gaps=gaps[ok_gap], gap_classes=classes[gap_owner[ok_gap]])


def requests_frame(
    records: Iterable[RequestRecord], slos: dict[str, SLO] | None = None
) -> pd.DataFrame:
    """One row per request (times in seconds), the table written as requests.csv.

    Columns: id, class, status, arrival, first_token, finish, prompt_tokens, cached_prompt_tokens,
    output_tokens, ttft, tpot, e2e, itl_mean, itl_max, met_slo, replica, preemptions, reason (why
    llmsim clipped or rejected the request; empty otherwise).
    `first_token` is set for any request that produced a token; the latency columns and `finish`
    only for completed ("ok") requests, so that column statistics match the summary. `tpot`,
    `itl_mean` and `itl_max` are NaN for single-token requests. `met_slo` is False for requests
    that did not complete, and True for completed requests of a class without SLOs.
    """
    return compute(list(records), slos).frame

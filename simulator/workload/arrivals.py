"""Arrival processes: Poisson, gamma (bursty), constant, a replayed trace, a diurnal profile.

Synthetic arrivals are unit-mean gaps divided by the rate, so a rate change only rescales them
(common random numbers across rates).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from simulator.common.errors import ConfigError
from simulator.common.limits import (
    MAX_CV,
    MAX_TIME_S,
    MAX_TIME_SCALE,
    MIN_CV,
    MIN_TIME_SCALE,
    NumRequests,
    Rate,
    Seconds,
)
from simulator.common.strict_model import StrictModel
from simulator.workload import traces
from simulator.workload.arrival_count import check_arrival_count
from simulator.workload.diurnal import DiurnalArrival
from simulator.workload.paths import resolve_path


class PoissonArrival(StrictModel):
    """Exponential inter-arrival gaps with mean 1/rate."""

    process: Literal["poisson"]
    rate: Rate


class GammaArrival(StrictModel):
    """Gamma inter-arrival gaps with mean 1/rate and coefficient of variation cv (burstiness).

    cv = 1 has the distribution of Poisson arrivals; cv > 1 is burstier, cv < 1 more regular.
    """

    process: Literal["gamma"]
    rate: Rate
    cv: float = Field(ge=MIN_CV, le=MAX_CV)


class ConstantArrival(StrictModel):
    """One request every 1/rate seconds."""

    process: Literal["constant"]
    rate: Rate


class TraceArrival(StrictModel):
    """Replay arrival times (and, unless a class overrides them, lengths) from a trace file.

    `start_s` and `limit` cut a window (seconds after the trace's first request, and at most that
    many requests); the window is then shifted to start at 0 and stretched: by `time_scale`, or,
    with `rate`, so that its mean rate (requests - 1 over its span) is `rate`. A BurstGPT trace
    may be cut to some of its `models` (ChatGPT, GPT-4) and `log_types` (Conversation log, API log).
    """

    process: Literal["trace"]
    path: str
    format: Literal[traces.TRACE_FORMATS]
    time_scale: float = Field(1.0, ge=MIN_TIME_SCALE, le=MAX_TIME_SCALE)
    rate: Rate | None = None
    start_s: Seconds = 0.0
    limit: NumRequests | None = None
    models: list[str] | None = Field(None, min_length=1, description="BurstGPT: keep these models' rows")
    log_types: list[str] | None = Field(
        None, min_length=1, description="BurstGPT: keep these log types' rows"
    )

    @model_validator(mode="after")
    def _one_rescaling(self) -> TraceArrival:
        if self.rate is not None and self.time_scale != 1.0:
            raise ValueError(
                f"give either rate ({self.rate}) or time_scale ({self.time_scale}), not both: "
                "each one sets the trace's speed"
            )
        if self.format != "burstgpt" and (self.models or self.log_types):
            raise ValueError(
                f"models and log_types select rows of a burstgpt trace, not of format {self.format!r}"
            )
        return self


Arrival = Annotated[
    PoissonArrival | GammaArrival | ConstantArrival | TraceArrival | DiurnalArrival,
    Field(discriminator="process"),
]


def synthetic_arrivals(
    process: PoissonArrival | GammaArrival | ConstantArrival,
    rng: np.random.Generator,
    *,
    duration_s: float | None,
    num_requests: int | None,
) -> np.ndarray:
    """Arrival times from 0: unit-mean gaps divided by the rate, drawn in chunks until a limit."""
    rate = process.rate
    check_arrival_count(rate, duration_s, num_requests)

    def unit_gaps(size: int) -> np.ndarray:  # inter-arrival gaps with mean 1
        if isinstance(process, ConstantArrival):
            return np.ones(size)
        if isinstance(process, GammaArrival):
            shape = 1.0 / process.cv**2
            return rng.standard_gamma(shape, size) / shape
        return rng.standard_exponential(size)

    target, horizon = num_requests, duration_s
    chunk = target or 0
    if horizon is not None:  # expected count plus a wide margin; topped up below if short
        expected = rate * horizon
        spread = 6 * np.sqrt(expected) * max(1.0, getattr(process, "cv", 1.0))
        chunk = min(chunk or np.inf, int(expected + spread) + 16)
    # The first request arrives at 0; sequential draws continue one stream, so the times do not
    # depend on how they were chunked.
    times = np.cumsum(np.concatenate([np.zeros(1), unit_gaps(chunk - 1) / rate]))
    while (target is None or times.size < target) and (horizon is None or times[-1] < horizon):
        times = np.concatenate([times, times[-1] + np.cumsum(unit_gaps(chunk) / rate)])
    return limit(times, duration_s=duration_s, num_requests=num_requests)


def limit(times: np.ndarray, *, duration_s: float | None, num_requests: int | None) -> np.ndarray:
    """The arrivals before `duration_s`, at most `num_requests` of them."""
    if duration_s is not None:
        times = times[: np.searchsorted(times, duration_s, side="left")]
    if num_requests is not None:
        times = times[:num_requests]
    return times


def trace_window(spec: TraceArrival, base_dir: Path | None) -> traces.Trace:
    """The trace cut to its window and rescaled; lengths and hashes are sliced alongside."""
    full = traces.read_trace(
        resolve_path(spec.path, base_dir, "workload.arrival.path"),
        spec.format,
        models=spec.models,
        log_types=spec.log_types,
    )
    first = int(np.searchsorted(full.arrival, spec.start_s, side="left"))
    last = full.arrival.size if spec.limit is None else min(full.arrival.size, first + spec.limit)
    if first >= last:
        raise ConfigError(
            f"workload.arrival.start_s: {spec.start_s} s is past the trace's end "
            f"({full.arrival[-1]:.1f} s, {full.source})"
        )
    arrival = full.arrival[first:last] - full.arrival[first]
    if spec.rate is not None:
        span = arrival[-1] if arrival.size > 1 else 0.0
        if span <= 0:
            raise ConfigError(
                f"workload.arrival.rate: the trace window has no time span ({arrival.size} request(s)), "
                "so it cannot be rescaled to a rate"
            )
        arrival = arrival * ((arrival.size - 1) / span / spec.rate)
    else:
        arrival = arrival * spec.time_scale
    if not arrival[-1] <= MAX_TIME_S:  # also catches inf from a window of nearly no span
        raise ConfigError(
            f"workload.arrival: the rescaled trace window spans {arrival[-1]:.3g} s, more than "
            f"{MAX_TIME_S:.3g} s (10 years); lower time_scale or raise rate"
        )
    return traces.Trace(
        arrival,
        full.prompt_tokens[first:last],
        full.output_tokens[first:last],
        full.block_hashes[first:last] if full.block_hashes is not None else None,
        full.hash_block_tokens,
        full.source,
        full.skipped_rows,
    )

"""A day, not an hour: arrivals whose rate follows a daily profile (a non-homogeneous Poisson process).

    arrival:
      process: diurnal
      rate: 20            # mean requests/s over a period (optional for table and trace profiles)
      period_s: 86400     # one day; a shorter period compresses the day (rates stay per second)
      profile: {kind: sine, amplitude: 0.6, peak_at: 0.6}    # rate x (1 + 0.6 cos(2 pi (t/period - 0.6)))
      # profile: {kind: table, rates: [3, 2, 2, 4, 9, 14, ...]}   # equal slots over the period
      # profile: {kind: trace, path: traces/azure_conv_2023.csv, format: azure, bins: 12}

A table's values are requests/s (rescaled when `rate` is given); a trace profile counts the trace's
arrivals in `bins` equal slots of its span, its own mean rate unless `rate` is given. Profiles repeat
every period.

Arrival times come from thinning (Lewis and Shedler): candidates of a Poisson process at the
profile's peak rate, each kept with probability rate(t) / peak. Candidate gaps and the acceptance
draws use two separate random streams, so for one seed a higher `rate` keeps the same uniforms
(common random numbers), and the lengths of requests never depend on the arrival profile.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from simulator.common.errors import ConfigError
from simulator.common.limits import MAX_PROFILE_SLOTS, MAX_RATE, MAX_THINNING_DRAWS, MAX_TIME_S, Rate
from simulator.common.strict_model import StrictModel
from simulator.workload import traces
from simulator.workload.arrival_count import check_arrival_count

SlotRate = Annotated[float, Field(ge=0, le=MAX_RATE, description="requests per second")]


class SineProfile(StrictModel):
    kind: Literal["sine"]
    amplitude: float = Field(0.5, ge=0, le=1, description="swing as a fraction of the mean")
    peak_at: float = Field(0.5, ge=0, le=1, description="time of the peak, as a fraction of the period")


class TableProfile(StrictModel):
    kind: Literal["table"]
    rates: list[SlotRate] = Field(
        min_length=1, max_length=MAX_PROFILE_SLOTS, description="requests/s in equal slots over the period"
    )

    @model_validator(mode="after")
    def _usable(self) -> TableProfile:
        if min(self.rates) < 0 or max(self.rates) <= 0:
            raise ValueError(f"rates must be >= 0 with at least one > 0, got {self.rates}")
        return self


class TraceProfile(StrictModel):
    kind: Literal["trace"]
    path: str
    format: Literal[traces.TRACE_FORMATS]
    bins: int = Field(24, gt=0, le=MAX_PROFILE_SLOTS)


Profile = Annotated[SineProfile | TableProfile | TraceProfile, Field(discriminator="kind")]


class DiurnalArrival(StrictModel):
    """Non-homogeneous Poisson arrivals following a rate profile over a period."""

    process: Literal["diurnal"]
    profile: Profile
    rate: Rate | None = Field(None, description="mean requests/s; required for a sine profile")
    period_s: float = Field(86400.0, gt=0, le=MAX_TIME_S)

    @model_validator(mode="after")
    def _needs_rate(self) -> DiurnalArrival:
        if self.rate is None and isinstance(self.profile, SineProfile):
            raise ValueError("a sine profile needs rate (the mean requests/s)")
        return self


def mean_rate(spec: DiurnalArrival) -> float | None:
    """Mean requests/s over a period, where known without reading a file."""
    if spec.rate is not None:
        return spec.rate
    if isinstance(spec.profile, TableProfile):
        return float(np.mean(spec.profile.rates))
    return None


def slot_rates(spec: DiurnalArrival, resolve: Callable[[str], Path]) -> np.ndarray | None:
    """Requests/s in equal slots of the period (None for a sine profile), scaled to `rate`."""
    profile = spec.profile
    if isinstance(profile, SineProfile):
        return None
    if isinstance(profile, TableProfile):
        rates = np.asarray(profile.rates, dtype=float)
    else:
        trace = traces.read_trace(resolve(profile.path), profile.format)
        span = float(trace.arrival[-1]) or 1.0
        counts = np.histogram(trace.arrival, bins=profile.bins, range=(0.0, span))[0]
        rates = counts / (span / profile.bins)
    if spec.rate is not None:
        rates = rates * (spec.rate / rates.mean())
    return rates


def rate_at(spec: DiurnalArrival, t: np.ndarray, slots: np.ndarray | None) -> np.ndarray:
    """The profile's rate (requests/s) at times `t`."""
    phase = np.mod(np.asarray(t, dtype=float), spec.period_s) / spec.period_s
    if slots is None:
        p = spec.profile
        return spec.rate * (1 + p.amplitude * np.cos(2 * np.pi * (phase - p.peak_at)))
    return slots[np.minimum((phase * slots.size).astype(np.int64), slots.size - 1)]


def peak_rate(spec: DiurnalArrival, slots: np.ndarray | None) -> float:
    return float(spec.rate * (1 + spec.profile.amplitude)) if slots is None else float(slots.max())


_MAX_CHUNK = 1 << 24  # most candidates drawn at once (128 MB per array)


def _check_draws(peak: float, mean: float, horizon: float | None, count: int | None) -> None:
    """Refuse, before drawing, a profile that would need too many requests or thinning candidates."""
    check_arrival_count(mean, horizon, count)
    span = horizon if count is None else min(horizon or np.inf, count / mean)  # expected seconds drawn
    candidates = peak * span
    if candidates > MAX_THINNING_DRAWS:
        raise ConfigError(
            f"workload.arrival.profile: its peak rate is {peak / mean:.3g} times its mean, so drawing the "
            f"arrivals takes about {candidates:.3g} candidates, more than {MAX_THINNING_DRAWS:,}; "
            "flatten the profile or shorten duration_s"
        )


def arrivals(
    spec: DiurnalArrival,
    gaps_rng: np.random.Generator,
    accept_rng: np.random.Generator,
    slots: np.ndarray | None,
    *,
    horizon: float | None,
    count: int | None,
) -> np.ndarray:
    """Arrival times from 0 until `horizon` seconds or `count` arrivals (one of them is required)."""
    peak = peak_rate(spec, slots)
    mean = float(spec.rate if slots is None else slots.mean())
    _check_draws(peak, mean, horizon, count)
    chunk = int((peak * horizon) * 1.1 + 64) if horizon is not None else int(count * peak / mean * 1.2 + 64)
    chunk = min(chunk, _MAX_CHUNK)  # bounds memory; the streams are still read in order
    kept: list[np.ndarray] = []
    last, total = 0.0, 0
    while (horizon is None or last < horizon) and (count is None or total < count):
        candidates = last + np.cumsum(gaps_rng.standard_exponential(chunk) / peak)
        accept = accept_rng.random(chunk) * peak < rate_at(spec, candidates, slots)
        kept.append(candidates[accept])
        total += int(accept.sum())
        last = float(candidates[-1])
    times = np.concatenate(kept) if kept else np.empty(0)
    if horizon is not None:
        times = times[times < horizon]
    return times[:count] if count is not None else times

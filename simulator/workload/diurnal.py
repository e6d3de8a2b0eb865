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
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from simulator.workload import traces


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SineProfile(_Strict):
    kind: Literal["sine"]
    amplitude: float = Field(0.5, ge=0, le=1, description="swing as a fraction of the mean")
    peak_at: float = Field(0.5, ge=0, le=1, description="time of the peak, as a fraction of the period")


class TableProfile(_Strict):
    kind: Literal["table"]
    rates: list[float] = Field(min_length=1, description="requests/s in equal slots over the period")

    @model_validator(mode="after")
    def _usable(self) -> TableProfile:
        if min(self.rates) < 0 or max(self.rates) <= 0:
            raise ValueError(f"rates must be >= 0 with at least one > 0, got {self.rates}")
        return self


class TraceProfile(_Strict):
    kind: Literal["trace"]
    path: str
    format: Literal["azure", "mooncake", "csv"]
    bins: PositiveInt = 24


Profile = Annotated[SineProfile | TableProfile | TraceProfile, Field(discriminator="kind")]


class DiurnalArrival(_Strict):
    """Non-homogeneous Poisson arrivals following a rate profile over a period."""

    process: Literal["diurnal"]
    profile: Profile
    rate: PositiveFloat | None = Field(None, description="mean requests/s; required for a sine profile")
    period_s: PositiveFloat = 86400.0

    @model_validator(mode="after")
    def _needs_rate(self) -> DiurnalArrival:
        if self.rate is None and isinstance(self.profile, SineProfile):
            raise ValueError("a sine profile needs rate (the mean requests/s)")
        return self


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
    chunk = int((peak * horizon) * 1.1 + 64) if horizon is not None else int(count * peak / mean * 1.2 + 64)
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

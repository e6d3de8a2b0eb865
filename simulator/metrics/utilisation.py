"""How full a batching engine runs, beyond "busy".

A continuous-batching engine is busy whenever one request is in flight, so its busy fraction
reaches 90-100% long before it runs out of capacity (a single stream keeps it busy). What limits
it is how full each step is:

- batch occupancy: running sequences / max_num_seqs, time-averaged per replica;
- token-budget use: new tokens per step / max_num_batched_tokens (prefill chunks plus one token
  per decode), averaged over steps;
- KV use: blocks in use / blocks, time-averaged, and its peak.

None of them alone is a capacity: the sustainable rate is what `sweep --max-rate` finds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from simulator.metrics.saturation import bin_means, sum_over_replicas


@dataclass(frozen=True)
class Utilisation:
    busy: float | None  # fraction of time a step was running
    batch_occupancy: float | None  # running / max_num_seqs
    token_budget_use: float | None  # new tokens per step / max_num_batched_tokens
    kv_mean: float | None
    kv_peak: float | None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _window_mean(ts: pd.DataFrame, column: str, start: float, end: float) -> float | None:
    """Time-weighted mean of a column per replica over [start, end], replicas averaged."""
    if ts is None or ts.empty or column not in ts or end <= start:
        return None
    replicas = ts["replica"].nunique(dropna=False) if "replica" in ts else 1
    t, v = sum_over_replicas(ts, column)
    if t.size == 0:
        return None
    return float(bin_means(t, v, np.array([start, end]))[0]) / max(replicas, 1)


def utilisation(
    timeseries: pd.DataFrame | None,
    requests: pd.DataFrame,
    *,
    steps: int,
    max_num_seqs: int | None,
    max_num_batched_tokens: int | None,
    window: tuple[float, float] | None = None,
) -> Utilisation:
    """Utilisation over `window` (default: the whole time series). Token-budget use counts every
    request's uncached prompt and its decoded tokens over all `steps` of the run."""
    if timeseries is None or timeseries.empty:
        return Utilisation(None, None, None, None, None, max_num_seqs, max_num_batched_tokens)
    start, end = window or (float(timeseries["time"].min()), float(timeseries["time"].max()))
    running = _window_mean(timeseries, "running", start, end)
    inside = timeseries[(timeseries["time"] >= start) & (timeseries["time"] <= end)]
    kv_peak = float(inside["kv_usage"].max()) if len(inside) else None
    budget = None
    if steps and max_num_batched_tokens:
        done = requests[requests["first_token"].notna()]
        uncached = (done["prompt_tokens"] - done["cached_prompt_tokens"].fillna(0)).clip(lower=0).sum()
        decoded = (done["output_tokens"] - 1).clip(lower=0).sum()
        budget = float(uncached + decoded) / steps / max_num_batched_tokens
    return Utilisation(
        busy=_window_mean(timeseries, "busy", start, end),
        batch_occupancy=None if running is None or not max_num_seqs else running / max_num_seqs,
        token_budget_use=budget,
        kv_mean=_window_mean(timeseries, "kv_usage", start, end),
        kv_peak=kv_peak,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
    )

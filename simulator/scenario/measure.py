"""A simulated run restricted to its measurement window, with its steady-state verdict and its
utilisation: what `simulator.run` adds to the raw outcome of a simulation."""

from __future__ import annotations

import numpy as np

from simulator.metrics import bin_means, summarize, total_waiting
from simulator.metrics.results import Results
from simulator.metrics.steady_state import Decisive, assess
from simulator.metrics.utilisation import utilisation
from simulator.scenario.window import Window
from simulator.serving import Deployment

QUEUE_BINS = 400


def _queue_series(out: Results, end: float) -> tuple[np.ndarray, np.ndarray] | None:
    ts = out.timeseries
    if ts is None or ts.empty or "waiting" not in ts or end <= 0:
        return None
    t, v = total_waiting(ts)
    if t.size < 2:
        return None
    edges = np.linspace(0.0, end, QUEUE_BINS + 1)
    return (edges[:-1] + edges[1:]) / 2, bin_means(t, v, edges)


def restrict(out: Results, window: Window) -> None:
    """Summarise only the requests arriving inside the window (the others stay in requests.csv,
    marked not measured); busy and KV use are time-averaged over the window."""
    records = [r for r in out.records if window.start <= r.arrival < window.end]
    summary = summarize(records, slos=out.slos, duration=window.measure_s, cost_per_hour=out.summary.cost_per_hour,
                        timeseries=out.timeseries)
    out.summary = summary
    out.window = (window.start, window.end)
    out.reset_requests()


def measure(out: Results, deployment: Deployment, decisive: list[Decisive], window: Window | None) -> None:
    """Attach the steady-state verdict and the utilisation of the measured part to `out.info`."""
    frame = out.requests
    if window is None:
        arrivals = frame["arrival"].to_numpy(float)
        start = float(arrivals.min()) if arrivals.size else 0.0
        span = float(arrivals.max() - start) if arrivals.size else 0.0
        warmup, length, inside = 0.0, span, frame
        bounds = None
    else:
        warmup, length, start = window.warmup_s, window.measure_s, window.start
        inside = frame[frame["measured"]]
        bounds = (window.start, window.end)
    state = assess(
        inside["arrival"].to_numpy(float),
        {m: inside[m].to_numpy(float) for m in ("ttft", "tpot", "e2e")},
        decisive,
        warmup_s=warmup,
        window_s=length,
        start_s=start,
        queue=_queue_series(out, start + length),
        saturated=out.summary.saturated,
        rel_tolerance=window.rel_tolerance if window else 0.1,
    )
    out.info["steady_state"] = state.to_dict()
    pool = deployment.entry
    cfg = pool.resolved_scheduler
    use = utilisation(out.timeseries, frame, steps=out.info.get("steps", 0), max_num_seqs=cfg.max_num_seqs,
                      max_num_batched_tokens=cfg.max_num_batched_tokens or cfg.token_budget(pool.max_model_len),
                      window=bounds)
    out.info["utilisation"] = use.to_dict()
    if bounds is not None:
        out.summary.gpu_busy_fraction = use.busy
        out.summary.kv_usage_mean = use.kv_mean

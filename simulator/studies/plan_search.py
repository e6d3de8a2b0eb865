"""The search inside one plan group (GPU type x TP x dtype x scheduler setting), run in a worker:
the fewest replicas meeting the SLOs, their headroom, and the whole-workload check of a screened
answer. Tasks and answers are plain data, so they cross process (and Ray) boundaries."""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from simulator.common.errors import ConfigError
from simulator.studies.search_space import set_path
from simulator.studies.trials import LATENCY_COLUMNS, Trial, run_trial
from simulator.workload import resolve_path, traces

MAX_HEADROOM = 8.0


# --- the load --------------------------------------------------------------------------------


def scale_load(data: dict, factor: float) -> dict:
    """A copy of a scenario mapping whose arrivals come `factor` times as fast."""
    arrival = data["workload"]["arrival"]
    if arrival["process"] == "trace" and arrival.get("rate") is None:
        return set_path(data, "workload.arrival.time_scale", arrival.get("time_scale", 1.0) / factor)
    if arrival["process"] == "diurnal" and arrival.get("rate") is None:
        if arrival["profile"]["kind"] == "table":
            return set_path(data, "workload.arrival.profile.rates", [r * factor for r in arrival["profile"]["rates"]])
        raise ConfigError("plan: a diurnal trace profile needs workload.arrival.rate to be scaled")
    return set_path(data, "workload.arrival.rate", arrival["rate"] * factor)


def screening_window(data: dict, n: int, base_dir) -> tuple[dict, str]:
    """A shorter workload for the replica search: the busiest n consecutive requests of a trace
    (the window with the shortest span), or the first n requests of a generated workload."""
    arrival = data["workload"]["arrival"]
    if arrival["process"] != "trace":
        current = data["workload"].get("num_requests")
        return set_path(data, "workload.num_requests", min(n, current or n)), f"the first {n} requests"
    trace = traces.read_trace(resolve_path(arrival["path"], base_dir, "workload.arrival.path"), arrival["format"])
    times = trace.arrival[np.searchsorted(trace.arrival, arrival.get("start_s", 0.0)):]
    times = times[: arrival.get("limit") or times.size]
    if times.size <= n:
        return data, "the whole trace (it is no longer than the screening window)"
    new = json.loads(json.dumps(data))
    if arrival.get("rate") is not None:  # keep the whole window's speed-up, not the screening window's
        new["workload"]["arrival"]["time_scale"] = (times.size - 1) / (times[-1] - times[0]) / arrival["rate"]
        new["workload"]["arrival"]["rate"] = None
    spans = times[n - 1:] - times[: times.size - n + 1]
    first = int(np.argmin(spans))
    new["workload"]["arrival"]["start_s"] = float(times[first])
    new["workload"]["arrival"]["limit"] = n
    rate = (n - 1) / spans[first] / new["workload"]["arrival"].get("time_scale", 1.0)
    mean = (times.size - 1) / (times[-1] - times[0]) / new["workload"]["arrival"].get("time_scale", 1.0)
    return new, (f"the trace's busiest {n} requests (from t={times[first]:.0f} s, {rate:.2f} req/s against "
                 f"{mean:.2f} req/s over the whole trace)")


# --- one group's search (runs in a worker) ---------------------------------------------------


def candidate_data(base: dict, group: dict, replicas: int, n_plus_one: bool, price: float | None) -> dict:
    data = set_path(base, "hardware", group["hardware"])
    for key, value in (
        ("deployment.tensor_parallel", group["tensor_parallel"]),
        ("deployment.data_parallel_attention", group.get("data_parallel_attention", 1)),
        ("deployment.expert_parallel", group.get("expert_parallel", 1)),
        ("deployment.pipeline_parallel", group.get("pipeline_parallel", 1)),
        ("deployment.weight_dtype", group["weight_dtype"]),
        ("deployment.replicas", replicas - 1 if n_plus_one else replicas),
        ("deployment.price_per_gpu_hour", price),
        ("scheduler.max_num_seqs", group["max_num_seqs"]),
        ("scheduler.chunk_size", group["chunk_size"]),
    ):
        data = set_path(data, key, value)
    return data


def _trial_rows(job: dict, replicas: int, seeds: list[int], factor: float = 1.0, stop_early: bool = True,
                window: dict | None = None):
    data = candidate_data(job["base"], job["group"], replicas, job["n_plus_one"], job["price"])
    if factor != 1.0:
        data = scale_load(data, factor)
    if window is not None:
        data = set_path(data, "run.window", window)
    rows = []
    for seed in seeds:
        trial = Trial(data, job["base_dir"], seed, job["slo"], replicas if job["n_plus_one"] else None)
        rows.append(run_trial(trial.task()))
        if stop_early and not rows[-1]["slo_met"]:
            break
    return rows


MEAN_COLUMNS = [*LATENCY_COLUMNS, "attainment_pct", "usd_per_1m_output_tokens", "usd_per_1m_total_tokens",
                "goodput_rps", "gpu_busy", "batch_occupancy", "token_budget_use", "kv_mean", "kv_peak",
                "window_s", "warmup_s"]


def seed_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """t interval of the mean over seeds (NaN with fewer than two)."""
    values = values[~np.isnan(values)]
    if values.size < 2:
        return math.nan, math.nan
    half = float(stats.t.ppf((1 + confidence) / 2, values.size - 1)) * values.std(ddof=1) / np.sqrt(values.size)
    return float(values.mean() - half), float(values.mean() + half)


def _summarise(rows: list[dict], replicas: int, stage: str, decisive: list[str]) -> dict:
    """One candidate over its seeds: means, and for every decisive percentile its interval (over
    seeds with two or more, else within the one run, by batch means)."""
    frame = pd.DataFrame(rows)
    out: dict[str, Any] = {"replicas": replicas, "stage": stage, "seeds_run": len(rows)}
    for col in MEAN_COLUMNS:
        out[col] = pd.to_numeric(frame.get(col), errors="coerce").mean() if col in frame else math.nan
    for key in decisive:
        values = pd.to_numeric(frame[f"{key}_ms"], errors="coerce").to_numpy(float)
        low, high = seed_interval(values)
        if len(rows) == 1 and f"{key}_run_ci_low_ms" in frame:
            low, high = frame[f"{key}_run_ci_low_ms"].iloc[0], frame[f"{key}_run_ci_high_ms"].iloc[0]
        out[f"{key}_ci_low_ms"], out[f"{key}_ci_high_ms"] = low, high
        out[f"{key}_std_ms"] = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else 0.0
    out["ci_basis"] = f"t over {len(rows)} seeds" if len(rows) > 1 else "batch means within the run"
    out["usd_per_hour"] = rows[0]["usd_per_hour"]
    out["p_slo_met"] = float(frame["slo_met"].mean())
    out["slo_met"] = bool(frame["slo_met"].all())
    out["saturated"] = bool(frame["saturated"].any())
    out["steady"] = bool(frame["steady"].all()) if "steady" in frame else False
    unsteady = [r["steady_reason"] for r in rows if not r.get("steady")]
    out["steady_reason"] = unsteady[0] if unsteady else rows[0].get("steady_reason", "")
    failed = [r for r in rows if not r["slo_met"]]
    out["misses"] = "; ".join(failed[0]["misses"]) if failed else ""
    out["shortfall"] = max(_shortfall(r) for r in rows)
    out["step_model"] = rows[0].get("step_model")
    out["step_sources"] = json.dumps(sum((Counter(r.get("step_sources") or {}) for r in rows), Counter()))
    return out


def _shortfall(row: dict) -> float:
    """How far a trial is from meeting its SLOs: the worst check as a ratio (1 = just met)."""
    worst = 1.0 if row["slo_met"] else 1.0 + 1e-9
    for check in row["checks"]:
        value, limit = check["value"], check["limit"]
        if value is None:
            return math.inf
        ratio = limit / max(value, 1e-9) if check["higher_is_better"] else value / limit
        worst = max(worst, ratio)
    return worst * (10.0 if row["saturated"] else 1.0)


def search_group(job: dict) -> dict:
    """Fewest replicas of one group meeting the SLOs (doubling, then bisection), and its headroom."""
    counts, seeds = job["counts"], job["seeds"]
    evaluated: dict[int, dict] = {}

    def met(r: int) -> bool:
        if r not in evaluated:
            evaluated[r] = _summarise(_trial_rows(job, r, seeds), r, job["stage"], job["decisive"])
        return evaluated[r]["slo_met"]

    lo_fail, hi_ok, probe = None, None, counts[0]
    while True:  # doubling
        if met(probe):
            hi_ok = probe
            break
        lo_fail = probe
        if probe == counts[-1]:
            break
        probe = min(probe * 2, counts[-1])
    if hi_ok is not None and lo_fail is not None:  # bisection between the last miss and the first pass
        while hi_ok - lo_fail > 1:
            mid = (hi_ok + lo_fail) // 2
            if met(mid):
                hi_ok = mid
            else:
                lo_fail = mid
    headroom, extra = None, 0
    if hi_ok is not None and job["headroom_steps"] > 0:
        headroom, extra = _headroom(job, hi_ok, seeds[0])
    return {"group": job["group"], "evaluated": evaluated, "best": hi_ok, "lowest_miss": lo_fail,
            "headroom": headroom, "simulations": extra + sum(e["seeds_run"] for e in evaluated.values())}


def _headroom(job: dict, replicas: int, seed: int) -> tuple[list[float | None], int]:
    runs = []

    def ok(factor: float) -> bool:
        runs.append(factor)
        return _trial_rows(job, replicas, [seed], factor)[0]["slo_met"]

    lo, hi = 1.0, None
    factor = 2.0
    while factor <= MAX_HEADROOM:
        if not ok(factor):
            hi = factor
            break
        lo, factor = factor, factor * 2
    if hi is None:
        return [lo, None], len(runs)
    for _ in range(job["headroom_steps"]):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return [lo, hi], len(runs)


def verify_candidate(job: dict) -> dict:
    """Whole-workload check of a screened answer: add replicas until every seed meets the SLOs."""
    evaluated = {}
    for r in [c for c in job["counts"] if c >= job["start"]]:
        evaluated[r] = _summarise(_trial_rows(job, r, job["seeds"]), r, job["stage"], job["decisive"])
        if evaluated[r]["slo_met"]:
            return {"group": job["group"], "evaluated": evaluated, "best": r}
    return {"group": job["group"], "evaluated": evaluated, "best": None}


def confirm_candidate(job: dict) -> dict:
    """One candidate on a window `factor` times as long as its own, first seed, no extensions:
    does the answer hold when the run is made longer?"""
    window = {"warmup_s": job["warmup_s"], "measure_s": job["window_s"] * job["factor"], "max_extensions": 0}
    rows = _trial_rows(job, job["replicas"], job["seeds"][:1], window=window)
    return _summarise(rows, job["replicas"], "long", job["decisive"])


def estimated_simulations(job: dict) -> int:
    """About how many simulations `search_group` runs for a job (for the progress bar)."""
    counts, seeds = job["counts"], len(job["seeds"])
    doubling = max(1, math.ceil(math.log2(max(counts[-1] / counts[0], 1))) + 1)
    probes = doubling + 1
    sims = probes + (seeds - 1) * 2  # failing probes stop after one seed; the passing ones run all
    if job["headroom_steps"] > 0:
        sims += 2 + job["headroom_steps"]
    return sims

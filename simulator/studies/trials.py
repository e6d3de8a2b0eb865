"""One trial: a scenario simulated with one seed, reduced to a flat row of numbers and an SLO verdict.

Trials are what `sweep` and `plan` send to worker processes or Ray tasks, so a task is plain data
(`Trial.task()`), the function is module-level, and the answer is a small dict (no request tables
cross process boundaries).
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulator.execution.kernels.provenance import source_of
from simulator.metrics.objectives import SLORule
from simulator.scenario import Scenario, parse_scenario
from simulator.scenario.window import decisive_percentiles, stationary_rate
from simulator.studies.parallel import simulation_done
from simulator.workload import TraceArrival

PERCENTILE_METRICS = ("ttft", "tpot", "e2e", "itl")
LATENCY_COLUMNS = [f"{m}_p{p}_ms" for m in PERCENTILE_METRICS for p in (50, 90, 95, 99)]


@dataclass(frozen=True)
class Trial:
    scenario: dict[str, Any]  # a validated scenario, dumped to plain data
    base_dir: str | None
    seed: int
    slo: dict[str, float] | None = None  # plan-level SLO limits; None: the classes' SLOs
    billed_replicas: int | None = None  # replicas paid for, when more than are simulated (n+1)

    @classmethod
    def of(cls, scenario: Scenario, seed: int, **kwargs) -> Trial:
        base = None if scenario.base_dir is None else str(scenario.base_dir)
        return cls(scenario.model_dump(mode="json"), base, seed, **kwargs)

    def task(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "base_dir": self.base_dir,
            "seed": self.seed,
            "slo": self.slo,
            "billed_replicas": self.billed_replicas,
        }


DETERMINISTIC_NOTE = ("the trace is replayed with its own arrival times and lengths, so every seed gives the "
                      "same requests: 1 seed run instead of {n}")


def is_deterministic(scenario: Scenario) -> bool:
    """True when every seed gives the same requests: a trace replayed with its own lengths."""
    wl = scenario.workload
    return (
        isinstance(wl.arrival, TraceArrival)
        and len(wl.classes) == 1
        and wl.classes[0].prompt_tokens is None
        and wl.classes[0].output_tokens is None
    )


def steady_data(data: dict[str, Any], scenario: Scenario) -> dict[str, Any]:
    """A scenario mapping measured by simulated time: `run.window: {}` (the defaults, scaled to
    the rate) for a stationary workload that names no window; traces and diurnal profiles as they
    are."""
    if scenario.run.window is not None or stationary_rate(scenario) is None:
        return data
    out = copy.deepcopy(data)
    out.setdefault("run", {})["window"] = {}
    return out


def rule_for(scenario: Scenario, slo: dict[str, float] | None) -> SLORule:
    if slo:
        return SLORule.from_limits(slo)
    slos = {c.name: c.slo for c in scenario.workload.classes}
    return SLORule.from_classes(slos, scenario.slo_target)


def run_trial(task: dict[str, Any]) -> dict[str, Any]:
    """Simulate one trial task and return its row (times in ms, rates per second)."""
    from simulator.scenario import run

    base = task["base_dir"]
    scenario = parse_scenario(task["scenario"], base_dir=Path(base) if base else None)
    results = run(scenario, seed=task["seed"], decisive=decisive_percentiles(scenario, task["slo"]))
    simulation_done()
    s = results.summary
    verdict = rule_for(scenario, task["slo"]).evaluate(s)
    per_hour = s.cost_per_hour
    if task.get("billed_replicas"):
        per_hour = per_hour / scenario.deployment.replicas * task["billed_replicas"]
    row: dict[str, Any] = {"seed": task["seed"]}
    for metric in PERCENTILE_METRICS:
        for p in (50, 90, 95, 99):
            value = getattr(s.latency[metric], f"p{p}")
            row[f"{metric}_p{p}_ms"] = None if value is None else value * 1000
    row.update(_measurement(results.info))
    met, misses = verdict.met, verdict.misses()
    if met and "window" in results.info and not row["steady"]:
        # a window that never showed a steady state cannot vouch for its percentiles
        met, misses = False, [f"not steady: {row['steady_reason']}"]
    total_tokens = s.prompt_tokens + s.output_tokens
    output_cost = per_hour * s.duration / 3600 / s.output_tokens * 1e6 if s.output_tokens else None
    row.update(
        {
            "throughput_rps": s.request_throughput,
            "output_tokens_per_s": s.output_throughput,
            "goodput_rps": s.goodput,
            "attainment_pct": None if s.slo_attainment is None else s.slo_attainment * 100,
            "saturated": s.saturated,
            "slo_met": met,
            "misses": misses,
            "checks": verdict.to_dict()["checks"],
            "usd_per_hour": per_hour,
            "usd_per_1m_output_tokens": output_cost,
            "usd_per_1m_total_tokens": per_hour * s.duration / 3600 / total_tokens * 1e6 if total_tokens else None,
            "gpu_busy": s.gpu_busy_fraction,
            "requests": s.total,
            "unfinished": s.unfinished,
            "wall_s": results.info["wall_time_s"],
            "step_model": source_of(results.info.get("execution", {})),
            "step_sources": dict(results.info.get("step_sources", {})),
        }
    )
    if "autoscaling" in results.info:
        scaling = results.info["autoscaling"]
        row.update({k: scaling[k] for k in ("mean_replicas", "peak_replicas", "usd_per_day")})
    return row


def _measurement(info: dict[str, Any]) -> dict[str, Any]:
    """The window, the steady-state verdict with each decisive percentile's interval within the
    run, and the utilisation, as flat columns."""
    state, window, use = info.get("steady_state", {}), info.get("window"), info.get("utilisation", {})
    out: dict[str, Any] = {
        "warmup_s": window["warmup_s"] if window else 0.0,
        "window_s": window["measure_s"] if window else state.get("window_s"),
        "window_extensions": window["extensions"] if window else 0,
        "steady": bool(state.get("steady", False)),
        "steady_reason": state.get("reason", ""),
    }
    for key, (_, low, high) in state.get("intervals", {}).items():
        out[f"{key}_run_ci_low_ms"], out[f"{key}_run_ci_high_ms"] = low, high
    for key in ("batch_occupancy", "token_budget_use", "kv_mean", "kv_peak"):
        out[key] = use.get(key)
    return out


def step_models(rows) -> dict[str, dict[str, int]]:
    """Step counts per provenance label, summed over trial rows, per step-time source."""
    out: dict[str, Counter] = {}
    for row in rows:
        if row.get("step_model") is not None:
            out.setdefault(row["step_model"], Counter()).update(row.get("step_sources") or {})
    return {model: dict(counts) for model, counts in out.items()}

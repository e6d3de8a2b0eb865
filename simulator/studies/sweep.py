"""`llmsim sweep`: any scenario field over a range of values, load-latency curves, and the highest
arrival rate that still meets the SLOs.

Every grid point is simulated with `seeds` seeds (scenario seed, +1, ...); the table and curves show
means over seeds, the spread (standard deviation) of p90 latencies, and the fraction of seeds meeting
the SLOs. A point meets the SLOs when every seed does (rule: `simulator.metrics.objectives`).

Highest sustainable rate: when `workload.arrival.rate` is swept and the scenario has SLOs, the
sweep brackets it between the last rate meeting the SLOs and the first rate missing them, then
narrows the bracket: each round simulates three rates (in parallel) evenly spaced inside it, which
cuts it to a quarter, until it is narrower than `rate_tolerance` of its upper end. The probes do not
depend on the number of workers, so every way of running a sweep gives the same answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simulator.common.errors import ConfigError
from simulator.common.files import result_files
from simulator.metrics.tables import write_table
from simulator.scenario import Scenario, parse_scenario, read_scenario_data
from simulator.studies import capacity_plots
from simulator.studies.parallel import run_tasks
from simulator.studies.plan_search import seed_interval
from simulator.studies.search_space import Axis, grid, parse_axes, set_path
from simulator.studies.trials import (
    DETERMINISTIC_NOTE,
    LATENCY_COLUMNS,
    Trial,
    is_deterministic,
    rule_for,
    run_trial,
    steady_data,
    step_models,
)

RATE_KEY = "workload.arrival.rate"
MAX_BISECTION_ROUNDS = 8
PROBES = 3  # rates per narrowing round, run in parallel; fixed so any worker count gives the same answer


@dataclass
class SweepResult:
    name: str
    keys: list[str]  # swept keys, the first is the x axis
    points: pd.DataFrame  # one row per grid point, means over seeds
    runs: pd.DataFrame  # one row per simulation (grid and bisection)
    rule: str  # the SLO rule, in words ("" when the scenario has no SLOs)
    max_rate: list[dict[str, Any]] = field(default_factory=list)  # per combination of the other keys
    slo_ms: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    step_models: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> label -> steps
    decisive: list[dict] = field(default_factory=list)  # the SLOs' percentiles: [{key, metric, percentile, limit_ms}]

    @property
    def slo_met(self) -> bool:
        return bool(self.points["slo_met"].all())

    @property
    def saturated(self) -> bool:
        return bool(self.points["saturated"].any())

    def save(self, out: str | Path, *, force: bool = False, formats: tuple[str, ...] = ("csv",)) -> Path:
        with result_files(out, force=force) as tmp:
            write_table(self.points.drop(columns=["misses"], errors="ignore"), tmp / "sweep", formats)
            write_table(self.runs.drop(columns=["checks", "step_sources"], errors="ignore"), tmp / "runs", formats)
            others = self.keys[1:]
            single = self.max_rate[0]["max_rate"] if len(self.max_rate) == 1 else None
            capacity_plots.load_latency(self.points, self.keys[0], tmp / "load_latency.png", group=others or None,
                                        slo_ms=self.slo_ms, max_rate=single)
            if self.max_rate:
                text = json.dumps({"rule": self.rule, "results": self.max_rate}, indent=2, default=float)
                (tmp / "max_rate.json").write_text(text + "\n")
        return Path(out)


def _points_for(data: dict, base_dir: Path, source: str, assignments: list[dict]) -> list[Scenario]:
    scenarios = []
    for values in assignments:
        point = data
        for key, value in values.items():
            point = set_path(point, key, value)
        where = source + "".join(f" [{k}={v}]" for k, v in values.items())
        scenario = parse_scenario(point, source=where, base_dir=base_dir)
        steady = steady_data(point, scenario)
        scenarios.append(scenario if steady is point else parse_scenario(steady, source=where, base_dir=base_dir))
    return scenarios


def _aggregate(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    rows = []
    for values, group in runs.groupby(keys, sort=False):
        row = dict(zip(keys, np.atleast_1d(values)))
        for col in LATENCY_COLUMNS + ["throughput_rps", "output_tokens_per_s", "goodput_rps", "attainment_pct",
                                      "usd_per_1m_output_tokens", "gpu_busy", "batch_occupancy", "token_budget_use",
                                      "kv_mean", "warmup_s", "window_s"]:
            row[col] = pd.to_numeric(group[col], errors="coerce").mean() if col in group else np.nan
        for col in LATENCY_COLUMNS:
            values = pd.to_numeric(group[col], errors="coerce").to_numpy(float)
            row[col.replace("_ms", "_std_ms")] = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 \
                else np.nan
            row[col.replace("_ms", "_ci_low_ms")], row[col.replace("_ms", "_ci_high_ms")] = seed_interval(values)
        row["steady"] = bool(group["steady"].all()) if "steady" in group else False
        unsteady = group.loc[~group["steady"].astype(bool), "steady_reason"] if "steady" in group else []
        row["steady_reason"] = unsteady.iloc[0] if len(unsteady) else ""
        row["p_slo_met"] = float(group["slo_met"].mean())
        row["slo_met"] = bool(group["slo_met"].all())
        row["saturated"] = bool(group["saturated"].any())
        row["seeds"] = len(group)
        rows.append(row)
    return pd.DataFrame(rows)


class Sweeper:
    """Runs grid points and bisection rounds; every simulation goes through `run_tasks`."""

    def __init__(self, data, base_dir, source, fixed, seeds, workers, ray, progress):
        self.data, self.base_dir, self.source = data, base_dir, source
        self.fixed, self.seeds = fixed, seeds
        self.workers, self.ray, self.progress = workers, ray, progress
        self.runs: list[dict] = []

    def evaluate(self, assignments: list[dict], stage: str) -> list[dict]:
        scenarios = _points_for(self.data, self.base_dir, self.source, [self.fixed | a for a in assignments])
        tasks = [Trial.of(sc, sc.seed + i).task() for sc in scenarios for i in range(self.seeds)]
        rows = run_tasks(run_trial, tasks, workers=self.workers, ray=self.ray, desc=stage, progress=self.progress)
        out = []
        for j, values in enumerate(assignments):
            for row in rows[j * self.seeds:(j + 1) * self.seeds]:
                full = values | {"stage": stage} | row
                self.runs.append(full)
                out.append(full)
        return out

    def met(self, rows: list[dict], values: dict) -> bool:
        return all(r["slo_met"] for r in rows if all(r[k] == v for k, v in values.items()))

    def max_rate(self, rates: list[float], others: dict, tolerance: float) -> dict[str, Any]:
        """Highest rate meeting the SLOs for one combination of the other keys."""
        status = {r: self.met(self.runs, others | {RATE_KEY: r}) for r in rates}
        lo, hi = 0.0, None
        for r in sorted(rates):
            if not status[r]:
                hi = r
                break
            lo = r
        if hi is None:
            return others | {"max_rate": lo, "bracket": [lo, None], "note": "every swept rate meets the SLOs: "
                             "the highest sustainable rate is above the sweep"}
        rounds = 0
        while hi - lo > tolerance * hi and rounds < MAX_BISECTION_ROUNDS:
            probes = [lo + (hi - lo) * (j + 1) / (PROBES + 1) for j in range(PROBES)]
            probes = [float(f"{p:.6g}") for p in probes]
            rows = self.evaluate([others | {RATE_KEY: p} for p in probes], f"bisection {rounds + 1}")
            for p in probes:
                if self.met(rows, {RATE_KEY: p}):
                    lo = p
                else:
                    hi = p
                    break
            rounds += 1
        note = "" if lo > 0 else "even the lowest rate tried misses the SLOs"
        return others | {"max_rate": lo, "bracket": [lo, hi], "rounds": rounds, "note": note}


def run_sweep(
    path: str | Path,
    sets: list[str],
    *,
    seeds: int = 3,
    workers: int | None = None,
    ray: str | None = None,
    max_rate: bool | None = None,
    rate_tolerance: float = 0.02,
    progress: bool = True,
) -> SweepResult:
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    data, base_dir = read_scenario_data(path)
    axes = parse_axes(sets)
    swept = [a for a in axes if len(a.values) > 1]
    if not swept:
        raise ConfigError("sweep: nothing to sweep; give a range or a list, e.g. --set workload.arrival.rate=1:40:2")
    fixed = {a.key: a.values[0] for a in axes if len(a.values) == 1}
    if any(a.key == RATE_KEY for a in swept):  # the rate is the natural x axis
        swept = [a for a in swept if a.key == RATE_KEY] + [a for a in swept if a.key != RATE_KEY]
    keys = [a.key for a in swept]
    assignments = grid(swept)
    first = _points_for(data, base_dir, str(path), [fixed | assignments[0]])[0]
    rule = rule_for(first, None)
    notes = []
    if seeds > 1 and is_deterministic(first):
        notes.append(DETERMINISTIC_NOTE.format(n=seeds))
        seeds = 1
    sweeper = Sweeper(data, base_dir, str(path), fixed, seeds, workers, ray, progress)
    sweeper.evaluate(assignments, "sweep")

    wants = RATE_KEY in keys and not rule.empty if max_rate is None else max_rate
    results = []
    if wants:
        if RATE_KEY not in keys:
            raise ConfigError(f"--max-rate needs {RATE_KEY} among the swept keys, e.g. --set {RATE_KEY}=1:40:2")
        if rule.empty:
            raise ConfigError("--max-rate needs SLOs: give the workload's classes an slo: {ttft_ms: ..., tpot_ms: ...}")
        rate_axis: Axis = swept[0]
        for combo in grid(swept[1:]) if len(swept) > 1 else [{}]:
            results.append(sweeper.max_rate(list(rate_axis.values), combo, rate_tolerance))

    runs = pd.DataFrame(sweeper.runs)
    points = _aggregate(runs[runs["stage"] == "sweep"], keys)
    slo_ms = {}
    for lim in rule.latency:
        if lim.metric in ("ttft", "tpot"):
            slo_ms[lim.metric] = min(slo_ms.get(lim.metric, np.inf), lim.limit_ms)
    decisive = [{"key": f"{lim.metric}_p{lim.percentile}", "metric": lim.metric, "percentile": lim.percentile,
                 "limit_ms": lim.limit_ms} for lim in rule.latency]
    return SweepResult(first.name, keys, points, runs, rule.describe() if not rule.empty else "", results, slo_ms,
                       notes, step_models(sweeper.runs), decisive)

"""`llmsim plan`: the cheapest deployment meeting every SLO for the target load, with the evidence.

The search, in order:

1. Candidates: every GPU type x TP degree x weight dtype x scheduler setting of `plan.search`
   (a "group"), times every replica count in `replicas: {min, max}`.
2. Memory filter: a group whose weights and activations do not fit in GPU memory, or whose TP degree
   does not divide the model, is rejected with the reason before anything is simulated.
3. Replica search per group (groups run in parallel): replica counts min, 2 min, 4 min, ... until
   one meets the SLOs, then bisection down to the fewest that do. Latency falls as replicas are
   added, so counts above that one are pruned (more than needed) and counts below a failing one are
   pruned (cannot meet them). A count meets the SLOs when every seed does; seeds stop at the first
   failure. With `n_plus_one`, a deployment of N replicas is simulated with N - 1.
4. Headroom of each group's answer: the sustainable load factor (sustainable rate / target rate),
   by doubling the load until the SLOs break (at most 8x) and `headroom_steps` bisection steps on
   the first seed. It is reported as the bracket's lower end: the load is known to be sustainable.
5. With `screening_requests`, steps 3-4 use a shorter workload: the busiest N consecutive requests
   of a trace, or the first N of a generated workload. The cheapest candidates are then verified on
   the whole workload with every seed, adding replicas until they pass.

The answer is the cheapest ($/hour) candidate meeting every SLO; ties go to the lower p90 TTFT.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from simulator.common.errors import ConfigError
from simulator.common.files import result_files
from simulator.metrics.objectives import check_slo_key
from simulator.scenario import Scenario, build_deployment, load_scenario, parse_scenario
from simulator.studies import capacity_plots
from simulator.studies.parallel import run_tasks
from simulator.studies.plan_search import (
    candidate_data,
    scale_load,
    screening_window,
    search_group,
    verify_candidate,
)
from simulator.studies.search_space import set_path
from simulator.studies.trials import DETERMINISTIC_NOTE, is_deterministic, rule_for, step_models
from simulator.workload.diurnal import DiurnalArrival, TableProfile, TraceProfile

GROUP_KEYS = ["hardware", "tensor_parallel", "weight_dtype", "max_num_seqs", "chunk_size"]
SIMULATED_COLUMNS = ["stage", "seeds_run", "ttft_p90_ms", "ttft_p90_std_ms", "tpot_p90_ms", "tpot_p90_std_ms",
                     "e2e_p90_ms", "attainment_pct", "usd_per_1m_output_tokens", "goodput_rps", "gpu_busy",
                     "usd_per_hour", "p_slo_met", "slo_met", "saturated", "misses", "shortfall", "headroom",
                     "headroom_upper"]


def _per_request_slo(limits: dict[str, float]) -> dict[str, float]:
    """Each request is held to the plan's limit for a metric (the highest percentile's, if several)."""
    chosen: dict[str, tuple[int, float]] = {}
    for key, value in limits.items():
        parsed = check_slo_key(key)
        if parsed and parsed[0] >= chosen.get(parsed[1], (-1, 0))[0]:
            chosen[parsed[1]] = (parsed[0], value)
    return {f"{metric}_ms": value for metric, (_, value) in chosen.items()}


# --- the plan ----------------------------------------------------------------------------------


@dataclass
class PlanResult:
    name: str
    rule: str
    target: str
    candidates: pd.DataFrame  # one row per group x replica count
    winner: int | None  # index into candidates
    closest: int | None  # when nothing meets the SLOs: the candidate missing them by the least
    notes: list[str] = field(default_factory=list)
    seeds: int = 1
    simulations: int = 0  # simulations run to reach the answer

    @property
    def step_models(self) -> dict[str, dict[str, int]]:
        """Step counts per provenance label of the simulated candidates, per step-time source."""
        if "step_model" not in self.candidates:
            return {}
        rows = self.candidates.dropna(subset=["step_model"])
        return step_models({"step_model": m, "step_sources": json.loads(s)}
                           for m, s in zip(rows["step_model"], rows["step_sources"]) if isinstance(s, str))

    @property
    def feasible(self) -> bool:
        return self.winner is not None

    def answer(self) -> dict | None:
        return None if self.winner is None else _jsonable(self.candidates.loc[self.winner].to_dict())

    def save(self, out: str | Path, *, force: bool = False) -> Path:
        with result_files(out, force=force) as tmp:
            self.candidates.to_csv(tmp / "candidates.csv", index=False, float_format="%.6g")
            rejected = self.candidates[self.candidates["status"] == "rejected"]
            doc = {
                "scenario": self.name,
                "feasible": self.feasible,
                "answer": self.answer(),
                "closest": None if self.closest is None else _jsonable(self.candidates.loc[self.closest].to_dict()),
                "slo_rule": self.rule,
                "target": self.target,
                "seeds": self.seeds,
                "simulations": self.simulations,
                "notes": self.notes,
                "counts": self.candidates["status"].value_counts().to_dict(),
                "rejected_groups": sorted(set(rejected["reason"])),
            }
            (tmp / "plan.json").write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
            capacity_plots.pareto(self.candidates, tmp / "pareto.png", winner=self.winner)
        return Path(out)


def _jsonable(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v.item() if hasattr(v, "item") else v
    return out


def prepare(scenario: Scenario) -> tuple[dict, list[str]]:
    """The scenario mapping every candidate starts from: target load applied, plan SLOs set."""
    plan, notes = scenario.plan, []
    data = scenario.model_dump(mode="json")
    data["plan"] = None
    data["autoscaling"] = None
    if plan.target.rate is not None:
        data = set_path(data, "workload.arrival.rate", plan.target.rate)
    elif plan.target.growth != 1.0:
        data = scale_load(data, plan.target.growth)
    if plan.slo:
        per_request = _per_request_slo(plan.slo)
        for cls in data["workload"]["classes"]:
            cls["slo"] = per_request
    arrival = scenario.workload.arrival
    if isinstance(arrival, DiurnalArrival) and isinstance(arrival.profile, TraceProfile | TableProfile):
        notes.append("the diurnal profile is planned for as a whole: the SLOs must hold over the full period")
    return data, notes


def run_plan(
    path: str | Path,
    *,
    overrides: list[str] | None = None,
    seeds: int | None = None,
    workers: int | None = None,
    ray: str | None = None,
    progress: bool = True,
) -> PlanResult:
    scenario = load_scenario(path, overrides)
    plan = scenario.plan
    if plan is None:
        raise ConfigError(f"{path}: no plan: section; add plan: {{search: {{hardware: [...]}}}} (see simulator/studies/plan.py)")
    base, notes = prepare(scenario)
    base_dir = None if scenario.base_dir is None else str(scenario.base_dir)
    rule = rule_for(parse_scenario(base, base_dir=scenario.base_dir), plan.slo)
    if rule.empty:
        raise ConfigError("plan: no SLOs to plan for; give plan.slo (e.g. {p90_ttft_ms: 500}) or class SLOs")
    n_seeds = seeds or plan.seeds
    if is_deterministic(scenario) and n_seeds > 1:
        notes.append(DETERMINISTIC_NOTE.format(n=n_seeds))
        n_seeds = 1
    seed_list = [scenario.seed + i for i in range(n_seeds)]
    counts = plan.search.replica_counts
    if plan.n_plus_one:
        counts = [c for c in counts if c >= 2]
        notes.append("n+1: every candidate of N replicas is simulated with N - 1 and priced for N")
        if not counts:
            raise ConfigError("plan.n_plus_one needs plan.search.replicas.max >= 2")
    screen = base
    if plan.screening_requests:
        screen, where = screening_window(base, plan.screening_requests, scenario.base_dir)
        notes.append(f"replica search on {where}; the {plan.finalists} cheapest answers verified on the whole "
                     "workload with every seed")

    groups = plan.search.groups(scenario.scheduler.max_num_seqs, scenario.scheduler.chunk_size)
    rows: list[dict] = []
    jobs = []
    for group in groups:
        reason = _memory_reason(base, group, scenario.base_dir)
        if reason:
            rows += [group | {"replicas": r, "status": "rejected", "reason": reason} for r in plan.search.replica_counts]
            continue
        price = plan.prices.get(group["hardware"])
        jobs.append({"base": screen, "base_dir": base_dir, "group": group, "counts": counts, "seeds": seed_list,
                     "slo": plan.slo, "n_plus_one": plan.n_plus_one, "price": price,
                     "headroom_steps": plan.headroom_steps, "stage": "screen" if plan.screening_requests else "full"})
    found = run_tasks(search_group, jobs, workers=workers, ray=ray, desc="plan: replica search", progress=progress)
    verified: dict[tuple, dict] = {}
    if plan.screening_requests:
        verified = _verify(found, jobs, base, plan.finalists, workers, ray, progress)
    for job, res in zip(jobs, found):
        rows += _group_rows(job, res, verified.get(_gkey(job["group"])), plan.n_plus_one)
    frame = pd.DataFrame(rows)
    for col in SIMULATED_COLUMNS:  # present even when nothing could be simulated
        if col not in frame:
            frame[col] = None if col in ("stage", "misses") else float("nan")
    frame["gpus"] = frame["tensor_parallel"] * frame["replicas"]
    frame["seeds_run"] = frame["seeds_run"].astype("Int64")
    winner, closest = _choose(frame)
    target = (f"{plan.target.rate:g} req/s" if plan.target.rate is not None
              else f"the scenario's load x {plan.target.growth:g}")
    simulations = sum(res["simulations"] for res in found)
    simulations += sum(e["seeds_run"] for res in verified.values() for e in res["evaluated"].values())
    return PlanResult(scenario.name, rule.describe(), target, frame, winner, closest, notes, n_seeds, simulations)


def _gkey(group: dict) -> tuple:
    return tuple(group[k] for k in GROUP_KEYS)


def _memory_reason(base: dict, group: dict, base_dir) -> str:
    data = candidate_data(base, group, 1, False, None)
    try:
        build_deployment(parse_scenario(data, source="plan candidate", base_dir=base_dir))
    except ConfigError as exc:
        return str(exc)
    return ""


def _verify(found, jobs, base, finalists, workers, ray, progress) -> dict[tuple, dict]:
    """Verify screened answers on the whole workload, cheapest first, until one passes."""
    order = sorted(
        (i for i, res in enumerate(found) if res["best"] is not None),
        key=lambda i: (found[i]["evaluated"][found[i]["best"]]["usd_per_hour"], _gkey(jobs[i]["group"])),
    )
    results: dict[tuple, dict] = {}
    for start in range(0, len(order), finalists):
        batch = order[start:start + finalists]
        vjobs = [jobs[i] | {"base": base, "start": found[i]["best"], "stage": "full"} for i in batch]
        for i, res in zip(batch, run_tasks(verify_candidate, vjobs, workers=workers, ray=ray,
                                           desc="plan: verifying finalists", progress=progress)):
            results[_gkey(jobs[i]["group"])] = res
        if any(results[_gkey(jobs[i]["group"])]["best"] is not None for i in batch):
            break
    return results


def _group_rows(job: dict, res: dict, check: dict | None, n_plus_one: bool) -> list[dict]:
    group, best, miss = job["group"], res["best"], res["lowest_miss"]
    rows = []
    all_counts = list(range(1, job["counts"][-1] + 1))
    for r in all_counts:
        if r < job["counts"][0]:
            if n_plus_one and r == 1:
                rows.append(group | {"replicas": r, "status": "rejected",
                                     "reason": "n+1 needs at least 2 replicas (one may be down)"})
            continue
        row = group | {"replicas": r}
        if r in res["evaluated"]:
            ev = res["evaluated"][r]
            row |= ev | {"status": "met" if ev["slo_met"] else "missed", "reason": ev["misses"]}
        elif best is not None and r > best:
            row |= {"status": "pruned", "reason": f"more replicas than the {best} that meet the SLOs"}
        else:
            row |= {"status": "pruned", "reason": f"fewer replicas than {miss}, which misses the SLOs"}
        rows.append(row)
    if best is not None and res["headroom"]:
        lo, hi = res["headroom"]
        _set(rows, best, headroom=lo, headroom_upper=hi)
    if check is not None:  # the whole-workload verdict replaces the screening one
        for r, ev in check["evaluated"].items():
            verdict = {"status": "met" if ev["slo_met"] else "missed", "reason": ev["misses"]}
            _set(rows, r, **({k: v for k, v in ev.items() if k != "replicas"} | verdict))
        if best is not None and (check["best"] is None or check["best"] > best):
            _set(rows, best, status="missed", reason="met the SLOs on the screening window but not on the "
                 "whole workload: " + (check["evaluated"][best]["misses"] if best in check["evaluated"] else ""))
    return rows


def _set(rows: list[dict], replicas: int, **values) -> None:
    for row in rows:
        if row["replicas"] == replicas:
            row.update(values)


def _choose(frame: pd.DataFrame) -> tuple[int | None, int | None]:
    ok = frame[frame["status"] == "met"]
    if "stage" in frame and (frame["stage"] == "screen").any():
        ok = ok[ok["stage"] == "full"]
    if len(ok):
        return int(ok.sort_values(["usd_per_hour", "ttft_p90_ms"]).index[0]), None
    tried = frame[frame["status"] == "missed"]
    if not len(tried):
        return None, None
    return None, int(tried.sort_values(["shortfall", "usd_per_hour"]).index[0])

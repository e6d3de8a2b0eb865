"""`llmsim plan`: the cheapest deployment meeting every SLO for the target load, with the evidence.

The search, in order:

1. Candidates: every GPU type x TP degree x weight dtype x scheduler setting of `plan.search`
   (a "group"), times every replica count in `replicas: {min, max}`.
2. Pre-checks, before anything is simulated: a group whose weights and activations do not fit in
   GPU memory, or whose TP degree does not divide the model, is rejected (memory); so is a group
   whose single-stream prefill or decode time already exceeds a limit, which no replica count can
   fix (physics, `plan_physics`).
3. Replica search per group (groups run in parallel): replica counts min, 2 min, 4 min, ... until
   one meets the SLOs, then bisection down to the fewest that do. Latency falls as replicas are
   added, so counts above that one are pruned (more than needed) and counts below a failing one are
   pruned (cannot meet them). A count meets the SLOs when every seed does; seeds stop at the first
   failure. With `n_plus_one`, a deployment of N replicas is simulated with N - 1.
   A stationary workload is measured by simulated time: warm-up, window and cool-down scaled to
   the target rate (`run.window`, simulator/scenario/window.py), so a higher target rate measures
   more requests, not a shorter window; every candidate reports its window and steady state.
4. Headroom of each group's answer: the sustainable load factor (sustainable rate / target rate),
   by doubling the load until the SLOs break (at most 8x) and `headroom_steps` bisection steps on
   the first seed, as simulated (with one replica down under n+1). It is reported as the
   bracket's lower end: the load is known to be sustainable.
5. With `screening_requests` (traces), steps 3-4 use the trace's busiest N consecutive requests;
   the cheapest candidates are then verified on the whole trace with every seed, adding replicas
   until they pass.
6. Longer-run check (`confirm_longer`, stationary workloads): the cheapest candidates meeting the
   SLOs are re-simulated over a window that many times as long; the answer is the cheapest that
   holds there too (a failing one is retried with one more replica).

The answer is the cheapest ($/hour) candidate meeting every SLO; ties go to the lower TTFT at the
decisive percentile.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from simulator.common.errors import ConfigError
from simulator.metrics.objectives import check_slo_key
from simulator.scenario import Scenario, load_scenario, parse_scenario
from simulator.scenario.plan_schema import LAYOUT_KEYS, layout_label
from simulator.scenario.window import stationary_rate
from simulator.studies.parallel import run_tasks
from simulator.studies.plan_confirm import confirm, tie_break
from simulator.studies.plan_physics import physics_reason
from simulator.studies.plan_result import PlanResult
from simulator.studies.plan_search import (
    candidate_data,
    estimated_simulations,
    scale_load,
    screening_window,
    search_group,
    verify_candidate,
)
from simulator.studies.search_space import set_path
from simulator.studies.trials import DETERMINISTIC_NOTE, is_deterministic, rule_for, steady_data
from simulator.workload.diurnal import DiurnalArrival, TableProfile, TraceProfile

GROUP_KEYS = ["hardware", *LAYOUT_KEYS, "weight_dtype", "max_num_seqs", "chunk_size"]
SIMULATED_COLUMNS = ["stage", "seeds_run", "ttft_p90_ms", "tpot_p90_ms", "e2e_p90_ms", "attainment_pct",
                     "usd_per_1m_output_tokens", "usd_per_1m_total_tokens", "goodput_rps", "gpu_busy",
                     "batch_occupancy", "token_budget_use", "kv_mean", "usd_per_hour", "p_slo_met", "slo_met",
                     "saturated", "steady", "steady_reason", "window_s", "warmup_s", "misses", "shortfall",
                     "headroom", "headroom_upper"]
TEXT_COLUMNS = ("stage", "misses", "steady_reason", "ci_basis")


def _per_request_slo(limits: dict[str, float]) -> dict[str, float]:
    """Each request is held to the plan's limit for a metric (the highest percentile's, if several)."""
    chosen: dict[str, tuple[int, float]] = {}
    for key, value in limits.items():
        parsed = check_slo_key(key)
        if parsed and parsed[0] >= chosen.get(parsed[1], (-1, 0))[0]:
            chosen[parsed[1]] = (parsed[0], value)
    return {f"{metric}_ms": value for metric, (_, value) in chosen.items()}


def prepare(scenario: Scenario) -> tuple[dict, list[str]]:
    """The scenario mapping every candidate starts from: target load applied, plan SLOs set, a
    stationary workload measured by its window."""
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
    target = parse_scenario(data, base_dir=scenario.base_dir)
    return steady_data(data, target), notes


def group_label(group: dict) -> str:
    return f"{group['hardware']} {layout_label(group)} {group['weight_dtype']} seqs={group['max_num_seqs']}"



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
    parsed_base = parse_scenario(base, base_dir=scenario.base_dir)
    rule = rule_for(parsed_base, plan.slo)
    if rule.empty:
        raise ConfigError("plan: no SLOs to plan for; give plan.slo (e.g. {p90_ttft_ms: 500}) or class SLOs")
    decisive = [{"key": f"{lim.metric}_p{lim.percentile}", "metric": lim.metric, "percentile": lim.percentile,
                 "limit_ms": lim.limit_ms} for lim in rule.latency]
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
    stationary = stationary_rate(parsed_base) is not None
    if stationary:
        notes.append("measured by simulated time: each candidate's warm-up is discarded and its window sized to "
                     "the target rate and the decisive percentile (columns warmup_s, window_s, steady)")
    screen = base
    if plan.screening_requests and not stationary:
        screen, where = screening_window(base, plan.screening_requests, scenario.base_dir)
        notes.append(f"replica search on {where}; the {plan.finalists} cheapest answers verified on the whole "
                     "workload with every seed")
    elif plan.screening_requests:
        notes.append("screening_requests ignored: a stationary workload is measured by its window, not a request count")
    screening = screen is not base

    groups = plan.search.groups(scenario.scheduler.max_num_seqs, scenario.scheduler.chunk_size)
    rows: list[dict] = []
    jobs = []
    rejected: dict[str, str] = {}
    class_slos = {c.name: c.slo for c in parse_scenario(base, base_dir=scenario.base_dir).workload.classes}
    for group in groups:
        reason = _precheck(base, group, scenario.base_dir, scenario.seed, rule, class_slos)
        if reason:
            rejected[group_label(group)] = reason
            rows += [group | {"replicas": r, "status": "rejected", "reason": reason} for r in plan.search.replica_counts]
            continue
        price = plan.prices.get(group["hardware"])
        jobs.append({"base": screen, "base_dir": base_dir, "group": group, "counts": counts, "seeds": seed_list,
                     "slo": plan.slo, "n_plus_one": plan.n_plus_one, "price": price, "decisive":
                     [d["key"] for d in decisive], "headroom_steps": plan.headroom_steps,
                     "stage": "screen" if screening else "full"})
    found = run_tasks(search_group, jobs, workers=workers, ray=ray, desc="plan: simulations", progress=progress,
                      estimate=estimated_simulations)
    verified: dict[tuple, dict] = {}
    if screening:
        verified = _verify(found, jobs, base, plan.finalists, workers, ray, progress)
    for job, res in zip(jobs, found):
        rows += _group_rows(job, res, verified.get(_gkey(job["group"])), plan.n_plus_one)
    frame = _frame(rows)
    simulations = sum(res["simulations"] for res in found)
    simulations += sum(e["seeds_run"] for res in verified.values() for e in res["evaluated"].values())
    winner, closest = _choose(frame, decisive)
    confirm_factor = plan.confirm_longer if stationary else 1.0
    if winner is not None and confirm_factor > 1:
        winner, extra, frame = confirm(frame, jobs, winner, confirm_factor, decisive, workers, ray, progress)
        simulations += extra
        if winner is None:
            _, closest = _choose(frame, decisive)
    target = (f"{plan.target.rate:g} req/s" if plan.target.rate is not None
              else f"the scenario's load x {plan.target.growth:g}")
    basis = (f"sustainable load factor (highest rate meeting the SLOs / target rate), first seed only ({seed_list[0]}), "
             f"{'with one replica down (n+1), ' if plan.n_plus_one else ''}lower end of a bracket narrowed "
             f"{plan.headroom_steps} time(s)")
    return PlanResult(scenario.name, rule.describe(), target, frame, winner, closest, notes, n_seeds, simulations,
                      decisive, basis, confirm_factor, len(groups), rejected)


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for col in SIMULATED_COLUMNS:  # present even when nothing could be simulated
        if col not in frame:
            frame[col] = None if col in TEXT_COLUMNS else float("nan")
    frame["gpus"] = (frame["tensor_parallel"] * frame["data_parallel_attention"] * frame["pipeline_parallel"]
                     * frame["replicas"])  # fmt: skip
    frame["seeds_run"] = frame["seeds_run"].astype("Int64")
    frame["usd_per_month"] = frame["usd_per_hour"] * 730.0
    return frame


def _gkey(group: dict) -> tuple:
    return tuple(group[k] for k in GROUP_KEYS)


def _precheck(base: dict, group: dict, base_dir, seed: int, rule, class_slos) -> str:
    """Memory first (does it fit at all), then physics (can any replica count meet the SLOs)."""
    data = candidate_data(base, group, 1, False, None)
    try:
        reason, _ = physics_reason(data, base_dir, seed, rule, class_slos)
    except ConfigError as exc:
        return f"{'layout' if str(exc).startswith('deployment') else 'memory'}: {exc}"
    return reason


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


def _choose(frame: pd.DataFrame, decisive: list[dict]) -> tuple[int | None, int | None]:
    ok = frame[frame["status"] == "met"]
    if "stage" in frame and (frame["stage"] == "screen").any():
        ok = ok[ok["stage"] != "screen"]
    if len(ok):
        return int(ok.sort_values(["usd_per_hour", tie_break(decisive)]).index[0]), None
    tried = frame[frame["status"] == "missed"]
    if not len(tried):
        return None, None
    return None, int(tried.sort_values(["shortfall", "usd_per_hour"]).index[0])

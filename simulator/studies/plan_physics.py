"""The physics pre-check of a plan group: can any replica count meet the SLOs?

More replicas shorten queues, never a single request's own work. Each request's TTFT is at least
the time to prefill its prompt alone (in chunks of the token budget), and its TPOT at least the
time of a decode step of batch one at its context. Both bounds come from the group's own
step-time model (`simulator.scenario.build_deployment`, the model the simulation uses). The
q-th percentile of the bounds over a sample of the workload's requests is then a lower bound on
the q-th percentile of the latency, so a group whose bound already exceeds a limit is rejected
with that reason before anything is simulated; so is a group where more requests can never meet
their per-request SLOs than the attainment objective allows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.metrics.objectives import SLORule
from simulator.scenario import build_deployment, parse_scenario
from simulator.workload import generate

SAMPLE = 2000
GRID = 48


@dataclass(frozen=True)
class Floor:
    """Single-stream latency floors of a group, in ms, at the rule's percentiles."""

    ttft_ms: dict[int, float]  # percentile -> floor
    tpot_ms: dict[int, float]
    single_stream_tpot_ms: float  # a decode step of batch 1 at the median context
    prefill_ms: float  # the median prompt alone


def _prefill_times(execution, lengths: np.ndarray, budget: int) -> np.ndarray:
    out = np.empty(lengths.size)
    for i, length in enumerate(lengths):
        done, total = 0, 0.0
        while done < length:
            chunk = min(budget, int(length) - done)
            total += execution.step_time(np.array([chunk]), np.array([done]))
            done += chunk
        out[i] = total
    return out


def _on_grid(fn, values: np.ndarray) -> np.ndarray:
    """fn at every value, evaluated on a log grid and interpolated (both bounds rise smoothly)."""
    lo, hi = max(int(values.min()), 1), max(int(values.max()), 2)
    grid = np.unique(np.geomspace(lo, hi, GRID).round().astype(np.int64))
    return np.interp(values, grid, fn(grid))


def floors(data: dict, base_dir, seed: int) -> tuple[Floor, np.ndarray, np.ndarray, np.ndarray]:
    """The group's floors, and each sampled request's TTFT and TPOT floors (s) and class."""
    scenario = parse_scenario(data, source="plan candidate", base_dir=base_dir)
    deployment = build_deployment(scenario)
    pool = deployment.entry
    cfg = pool.resolved_scheduler
    budget = cfg.max_num_batched_tokens or cfg.token_budget(pool.max_model_len)
    wl = scenario.workload.model_copy(update={"num_requests": SAMPLE, "duration_s": None})
    sample = generate(wl, seed=seed, max_context=deployment.max_model_len, base_dir=base_dir)
    prompt = np.array([r.prompt_tokens for r in sample], dtype=np.int64)
    output = np.array([r.output_tokens for r in sample], dtype=np.int64)
    classes = np.array([r.request_class for r in sample])
    ex = pool.execution
    ttft = _on_grid(lambda g: _prefill_times(ex, g, budget), prompt)
    context = prompt + np.maximum(output - 1, 0) // 2
    step = _on_grid(lambda g: np.array([ex.step_time(np.array([1]), np.array([c])) for c in g]), context)
    tpot = np.where(output > 1, step, np.nan)
    med_ctx = int(np.median(context))
    floor = Floor(
        {p: float(np.quantile(ttft, p / 100)) * 1000 for p in (50, 90, 95, 99)},
        {p: float(np.nanquantile(tpot, p / 100)) * 1000 for p in (50, 90, 95, 99)},
        ex.step_time(np.array([1]), np.array([med_ctx])) * 1000,
        float(np.median(ttft)) * 1000,
    )
    return floor, ttft, tpot, classes


def physics_reason(data: dict, base_dir, seed: int, rule: SLORule, class_slos: dict) -> tuple[str, Floor | None]:
    """Why no replica count of this group can meet the rule ("" when some might), and its floors."""
    if data["scheduler"].get("speculative"):
        return "", None  # drafting changes the decode floor; leave it to the simulation
    floor, ttft, tpot, classes = floors(data, base_dir, seed)
    reasons = []
    for lim in rule.latency:
        if lim.metric not in ("ttft", "tpot"):
            continue
        bound = (floor.ttft_ms if lim.metric == "ttft" else floor.tpot_ms)[lim.percentile]
        if bound > lim.limit_ms:
            what = "prefilling the prompt alone" if lim.metric == "ttft" else "a decode step of batch one"
            reasons.append(f"p{lim.percentile} {lim.metric.upper()} cannot go below {bound:,.1f} ms ({what}, "
                           f"single stream) > {lim.limit_ms:g} ms")
    for scope, pct in rule.attainment:
        never = np.zeros(ttft.size, dtype=bool)
        for name, slo in class_slos.items():
            rows = classes == name if scope is None or scope == name else np.zeros(ttft.size, dtype=bool)
            if slo.ttft_ms is not None:
                never |= rows & (ttft * 1000 > slo.ttft_ms)
            if slo.tpot_ms is not None:
                never |= rows & (np.nan_to_num(tpot) * 1000 > slo.tpot_ms)
        share = 100 * never.mean()
        if share > 100 - pct:
            reasons.append(f"{share:.1f}% of requests can never meet their per-request SLOs (single stream), "
                           f"more than the {100 - pct:g}% the attainment target allows")
    if not reasons:
        return "", floor
    return "physics: " + "; ".join(reasons) + " — no replica count fixes this", floor

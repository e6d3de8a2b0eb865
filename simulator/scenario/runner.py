"""Run a scenario: build its deployment, draw its workload, serve it in SimPy, summarise."""

from __future__ import annotations

import time

from simulator.common.errors import ConfigError
from simulator.metrics.results import Results
from simulator.scenario.build import build_deployment
from simulator.scenario.schema import Scenario
from simulator.serving import Deployment, results, serve
from simulator.workload import Workload, generate


def run(
    scenario: Scenario,
    seed: int | None = None,
    *,
    deployment: Deployment | None = None,
    workload: Workload | None = None,
) -> Results:
    """Simulate a scenario and summarise it (the Python API behind `llmsim run`).

    `deployment` and `workload` replace the ones the scenario implies (sim-vs-real validation
    gives the engine's KV capacity and the very requests the engine served)."""
    started = time.perf_counter()
    seed = scenario.seed if seed is None else seed
    if seed != scenario.seed:
        scenario = scenario.model_copy(update={"seed": seed})
    deployment = deployment or build_deployment(scenario)
    workload = workload or generate(
        scenario.workload, seed=seed, max_context=deployment.max_model_len, base_dir=scenario.base_dir
    )
    if scenario.run.strict:
        _refuse_clipped(workload, deployment.max_model_len)
    out = results(deployment, serve(deployment, workload, seed), workload, seed, started)
    if scenario.run.strict and out.info["rejected"]:
        first = next(r for r in out.records if r.status == "rejected")
        raise ConfigError(
            f"run.strict: {out.summary.rejected} request(s) can never be served, e.g. request {first.request_id}: "
            f"{first.reason}; use a larger deployment or shorter requests, or leave strict off to count them"
        )
    return out


def _refuse_clipped(workload: Workload, max_model_len: int) -> None:
    clipped = [r for r in workload.requests if r.requested is not None]
    if clipped:
        raise ConfigError(
            f"run.strict: {len(clipped)} request(s) do not fit the {max_model_len:,}-token context, e.g. request "
            f"{clipped[0].request_id} ({clipped[0].clipping}); raise scheduler.max_model_len (up to the model's "
            "context), shorten the requests, or leave strict off to clip them"
        )

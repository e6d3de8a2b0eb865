"""Run a scenario: build its deployment, draw its workload, serve it in SimPy, summarise."""

from __future__ import annotations

import time

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
    return results(deployment, serve(deployment, workload, seed), workload, seed, started)

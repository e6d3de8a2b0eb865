"""The simulator set up like a measured engine: its KV capacity, block size, context limit and
scheduler settings, one replica, the very requests it served."""

from __future__ import annotations

from simulator.execution import ExecutionModel
from simulator.metrics.results import Results
from simulator.scenario import Scenario, build_deployment
from simulator.scenario import run as simulate_run
from simulator.workload import Workload


def simulate_like(
    scenario: Scenario,
    workload: Workload,
    settings: dict,
    seed: int,
    *,
    execution: ExecutionModel | None = None,
    merge_decode_steps: bool | None = None,
) -> Results:
    """The scenario simulated with the engine's capacity and scheduler settings, on `workload`,
    with `execution` (default: the scenario's step-time model)."""
    scheduler = scenario.scheduler.model_validate(settings["scheduler"])
    updates = {"scheduler": scheduler, "deployment": scenario.deployment.model_copy(update={"replicas": 1}),
               "autoscaling": None, "seed": seed}  # fmt: skip
    if merge_decode_steps is not None:
        updates["run"] = scenario.run.model_copy(update={"merge_decode_steps": merge_decode_steps})
    matched = scenario.model_copy(update=updates)
    deployment = build_deployment(matched, num_blocks=settings["num_blocks"], execution=execution,
                                  max_model_len=settings["max_model_len"])
    return simulate_run(matched, seed, deployment=deployment, workload=workload)

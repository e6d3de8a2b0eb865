"""Run a scenario: build its deployment, draw its workload, serve it in SimPy, summarise."""

from __future__ import annotations

import dataclasses
import time

from simulator.common.errors import ConfigError
from simulator.metrics.results import Results
from simulator.metrics.steady_state import Decisive
from simulator.scenario.build import build_deployment
from simulator.scenario.measure import measure, restrict
from simulator.scenario.schema import Scenario
from simulator.scenario.streamed import run_streamed, streams
from simulator.scenario.window import Window, decisive_percentiles, resolve_window, windowed
from simulator.serving import Deployment, results, serve
from simulator.workload import Workload, generate


def run(
    scenario: Scenario,
    seed: int | None = None,
    *,
    deployment: Deployment | None = None,
    workload: Workload | None = None,
    decisive: list[Decisive] | None = None,
) -> Results:
    """Simulate a scenario and summarise it (the Python API behind `llmsim run`).

    `deployment` and `workload` replace the ones the scenario implies (sim-vs-real validation
    gives the engine's KV capacity and the very requests the engine served). With `run.window`,
    arrivals last warm-up + window + cool-down and only the window is summarised; the stopping
    rule lengthens the run until steady state is shown or its extensions are used up
    (simulator/scenario/window.py). `decisive`: the percentiles that decide (default: the
    scenario's SLOs), which size the default window and are checked for precision.
    """
    started = time.perf_counter()
    seed = scenario.seed if seed is None else seed
    if seed != scenario.seed:
        scenario = scenario.model_copy(update={"seed": seed})
    if workload is None and streams(scenario):
        return run_streamed(scenario, seed, deployment or build_deployment(scenario), started)
    decisive = decisive or decisive_percentiles(scenario)
    if scenario.run.window is None or workload is not None:
        deployment = deployment or build_deployment(scenario)
        out = _simulate(scenario, seed, deployment, workload, started)
        measure(out, deployment, decisive, None)
        return out
    window = resolve_window(scenario, decisive)
    deployment = deployment or build_deployment(scenario)
    extensions = 0
    while True:
        out = _simulate(windowed(scenario, window), seed, deployment, None, started)
        restrict(out, window)
        measure(out, deployment, decisive, window)
        state = out.info["steady_state"]
        if state["steady"] or out.summary.saturated or extensions >= window.max_extensions:
            break
        extensions += 1
        if state["warmup_short"]:
            warmup = max(2 * window.warmup_s, (state["settled_at_s"] or 0) * 1.25)
            window = Window(warmup, window.measure_s, window.cooldown_s, window.max_extensions, window.rel_tolerance)
        else:
            window = window.longer(2)
    out.info["window"] = window.to_dict() | {"extensions": extensions, "measured_requests": out.summary.total}
    out.info["wall_time_s"] = round(time.perf_counter() - started, 3)
    return out


def _simulate(scenario: Scenario, seed: int, deployment: Deployment, workload: Workload | None,
              started: float) -> Results:
    if workload is None:
        workload = generate(scenario.workload, seed=seed, max_context=deployment.max_model_len,
                            base_dir=scenario.base_dir)
    if scenario.run.max_time_s != deployment.max_time_s:  # a window's clock cap
        deployment = _with_cap(deployment, scenario.run.max_time_s)
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


def _with_cap(deployment: Deployment, cap: float | None) -> Deployment:
    return dataclasses.replace(deployment, max_time_s=cap)


def _refuse_clipped(workload: Workload, max_model_len: int) -> None:
    clipped = [r for r in workload.requests if r.requested is not None]
    if clipped:
        raise ConfigError(
            f"run.strict: {len(clipped)} request(s) do not fit the {max_model_len:,}-token context, e.g. request "
            f"{clipped[0].request_id} ({clipped[0].clipping}); raise scheduler.max_model_len (up to the model's "
            "context), shorten the requests, or leave strict off to clip them"
        )

"""Run a scenario: build the deployment in SimPy, replay the workload, summarise the outcome."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from simulator import memory
from simulator.autoscaling import Autoscaler
from simulator.cluster import Cluster
from simulator.execution import ExecutionModel, RooflineEfficiency, RooflineModel, StepOverhead
from simulator.metrics import RequestRecord, summarize
from simulator.replica import Replica
from simulator.results import Results
from simulator.routing import make_router
from simulator.scenario import Scenario
from simulator.scheduling import BlockManager, SeqStatus, Sequence, make_scheduler
from simulator.workload import Workload, generate


def execution_model(scenario: Scenario) -> ExecutionModel:
    """The step-time model a scenario asks for."""
    dep, roof = scenario.deployment, scenario.execution.roofline
    return RooflineModel(
        scenario.model_spec(),
        scenario.hardware_spec(),
        tp=dep.tensor_parallel,
        weight_dtype=dep.weight_dtype,
        kv_dtype=dep.kv_dtype,
        compute_dtype=roof.compute_dtype,
        efficiency=RooflineEfficiency(**roof.efficiency.model_dump(exclude_none=True)),
        overhead=StepOverhead(**roof.overhead.model_dump(exclude_none=True)),
    )


@dataclass
class Deployment:
    """A scenario's deployment with everything derived: KV capacity and the step-time model."""

    scenario: Scenario
    num_blocks: int
    execution: ExecutionModel
    max_model_len: int

    @classmethod
    def build(cls, scenario: Scenario) -> Deployment:
        model, hw, dep = scenario.model_spec(), scenario.hardware_spec(), scenario.deployment
        reserve = None if dep.activation_reserve_gb is None else dep.activation_reserve_gb * 1e9
        num_blocks = memory.kv_capacity_blocks(
            model,
            hw,
            tp=dep.tensor_parallel,
            weight_dtype=dep.weight_dtype,
            kv_dtype=dep.kv_dtype,
            gpu_memory_utilization=dep.gpu_memory_utilization,
            activation_reserve_bytes=reserve,
            block_size=scenario.scheduler.block_size,
        )
        return cls(scenario, num_blocks, execution_model(scenario), scenario.max_model_len())

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_blocks * self.scenario.scheduler.block_size


def _sequences(workload: Workload) -> list[Sequence]:
    return [
        Sequence(
            seq_id=r.request_id,
            prompt_len=r.prompt_tokens,
            max_output=r.output_tokens,
            arrival=r.arrival,
            request_class=r.request_class,
            priority=r.priority,
            block_hashes=r.block_hashes,
        )
        for r in workload
    ]


def _record(seq: Sequence) -> RequestRecord:
    if seq.finish_reason in ("length", "stop"):
        status = "ok"
    elif seq.finish_reason == "rejected":
        status = "rejected"
    else:
        status = "unfinished"
    return RequestRecord(
        request_id=seq.seq_id,
        request_class=seq.request_class,
        arrival=seq.arrival,
        prompt_tokens=seq.prompt_len,
        token_times=np.asarray(seq.token_times),
        status=status,
        replica=seq.replica,
        num_preemptions=seq.num_preemptions,
        cached_prompt_tokens=seq.num_cached_prefix,
    )


def simulate(
    scenario: Scenario,
    workload: Workload,
    deployment: Deployment | None = None,
    autoscalers: list[Autoscaler] | None = None,
):
    """Serve `workload` on the scenario's deployment. Returns (sequences, replicas, end time).
    With an `autoscaling:` section the autoscaler is appended to `autoscalers` when one is given."""
    if scenario.disaggregation is not None:
        from simulator import disaggregated

        return disaggregated.simulate(scenario, workload)[:3]
    deployment = deployment or Deployment.build(scenario)
    cfg = scenario.scheduler
    env = simpy.Environment()
    router = make_router(scenario.router, scenario.deployment.replicas, np.random.default_rng(scenario.seed + 1))
    cluster = Cluster(env, [], router)

    def new_replica(i: int) -> Replica:
        blocks = BlockManager(deployment.num_blocks, cfg.block_size, cfg.watermark)
        scheduler = make_scheduler(cfg, blocks, deployment.max_model_len)
        return Replica(env, i, scheduler, deployment.execution, cluster.on_finish, scenario.run.merge_decode_steps)

    scaling = scenario.autoscaling
    if scaling is None:
        cluster.replicas.extend(new_replica(i) for i in range(scenario.deployment.replicas))
    else:
        initial = min(max(scenario.deployment.replicas, scaling.min_replicas), scaling.max_replicas)
        autoscaler = Autoscaler(env, cluster, new_replica, scaling, initial)
        if autoscalers is not None:
            autoscalers.append(autoscaler)
    seqs = _sequences(workload)
    env.process(cluster.feed(seqs, len(seqs)))
    # Without a limit the run drains the queue completely; the cap only stops runaway runs.
    horizon = scenario.run.max_time_s or (10 * workload.span_s + 3600)
    env.run(until=env.any_of([cluster.all_done, env.timeout(horizon)]))
    return seqs, cluster.replicas, env.now


def timeseries_frame(replicas: list[Replica]) -> pd.DataFrame:
    rows = [s for r in replicas for s in r.samples]
    frame = pd.DataFrame(rows, columns=["time", "replica", "waiting", "running", "kv_usage", "busy"])
    return frame.sort_values(["time", "replica"], kind="stable").reset_index(drop=True)


def run(scenario: Scenario, seed: int | None = None) -> Results:
    """Simulate a scenario and summarise it (the Python API behind `llmsim run`)."""
    started = time.perf_counter()
    seed = scenario.seed if seed is None else seed
    if seed != scenario.seed:
        scenario = scenario.model_copy(update={"seed": seed})
    if scenario.disaggregation is not None:  # separate prefill and decode pools
        from simulator.disaggregated import run_disaggregated

        return run_disaggregated(scenario, seed, started)
    deployment = Deployment.build(scenario)
    workload = generate(
        scenario.workload, seed=seed, max_context=deployment.max_model_len, base_dir=scenario.base_dir
    )
    autoscalers: list[Autoscaler] = []
    seqs, replicas, end = simulate(scenario, workload, deployment, autoscalers)
    timeseries = timeseries_frame(replicas)
    records = [_record(s) for s in seqs]
    cost_per_hour = scenario.price_per_hour()
    scaling = None
    if autoscalers:  # pay for the replica-hours actually provisioned
        scaling = autoscalers[0].report(end, cost_per_hour / scenario.deployment.replicas)
        cost_per_hour = scaling["cost_usd"] / end * 3600 if end > 0 else 0.0
    summary = summarize(records, slos=workload.slos, cost_per_hour=cost_per_hour, timeseries=timeseries)
    dep = scenario.deployment
    info = {
        "scenario": scenario.name,
        "seed": seed,
        "model": scenario.model_spec().name,
        "hardware": scenario.hardware_spec().name,
        "replicas": dep.replicas,
        "tensor_parallel": dep.tensor_parallel,
        "weight_dtype": dep.weight_dtype,
        "kv_dtype": dep.kv_dtype,
        "policy": scenario.scheduler.policy,
        "router": scenario.router,
        "kv_blocks_per_replica": deployment.num_blocks,
        "kv_tokens_per_replica": deployment.kv_capacity_tokens,
        "execution": deployment.execution.describe(),
        "steps": sum(r.num_steps for r in replicas),
        "extrapolated_steps": sum(r.num_extrapolated_steps for r in replicas),
        "preemptions": sum(s.num_preemptions for s in seqs),
        "clipped_prompts": workload.clipped_prompts,
        "clipped_outputs": workload.clipped_outputs,
        "simulated_time_s": end,
        "unfinished_at_end": sum(s.status is not SeqStatus.FINISHED for s in seqs),
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    if scaling is not None:
        info["autoscaling"] = scaling
    description = (
        f"{info['model']} on {dep.replicas}x{dep.tensor_parallel} {info['hardware']}, "
        f"{dep.weight_dtype} weights, {info['policy']} batching"
    )
    return Results(summary, records, timeseries, workload.slos, description, info)

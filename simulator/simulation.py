"""Run a scenario: build the deployment in SimPy, replay the workload, summarise the outcome."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from simulator import memory
from simulator.autoscaling import Autoscaler
from simulator.cluster import Cluster
from simulator.execution import ExecutionModel, RooflineEfficiency, RooflineModel, StepOverhead
from simulator.kernel_model.resolve import describe_execution, kernel_model_for
from simulator.metrics import RequestRecord, summarize
from simulator.replica import Replica
from simulator.results import Results
from simulator.routing import make_router
from simulator.scenario import Scenario
from simulator.scheduling import SeqStatus, Sequence, make_block_manager, make_scheduler
from simulator.specs import GiB
from simulator.speculation import Speculation, blocks_left_with_draft, draft_execution
from simulator.workload import Workload, generate


def execution_model(scenario: Scenario) -> ExecutionModel:
    """The step-time model a scenario asks for."""
    if scenario.execution.calibration is not None:
        from simulator.calibration_file import execution_model_for

        return execution_model_for(scenario)
    notice = ""
    if scenario.execution.uses_kernel_tables:
        model, notice = kernel_model_for(scenario)
        if model is not None:
            return model
    dep, roof = scenario.deployment, scenario.execution.roofline
    roofline = RooflineModel(
        scenario.model_spec(),
        scenario.hardware_spec(),
        tp=dep.tensor_parallel,
        weight_dtype=dep.weight_dtype,
        kv_dtype=dep.kv_dtype,
        compute_dtype=roof.compute_dtype,
        efficiency=RooflineEfficiency(**roof.efficiency.model_dump(exclude_none=True)),
        overhead=StepOverhead(**roof.overhead.model_dump(exclude_none=True)),
    )
    roofline.kernel_tables_notice = notice
    return roofline


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
        num_blocks = blocks_left_with_draft(scenario, num_blocks)  # a draft model shares the memory
        return cls(scenario, num_blocks, execution_model(scenario), scenario.max_model_len())

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_blocks * self.scenario.scheduler.block_size

    @property
    def kv_bytes_per_token(self) -> float:
        """KV bytes of one token on one GPU (each rank holds its shard)."""
        dep = self.scenario.deployment
        model = self.scenario.model_spec()
        return memory.kv_bytes_per_token_per_gpu(model, dep.kv_dtype, dep.tensor_parallel)

    @property
    def swap_s_per_token(self) -> float:
        """Seconds to copy one token's KV between GPU and host; every rank uses its own link."""
        return self.kv_bytes_per_token / self.scenario.hardware_spec().host_link_bandwidth

    @property
    def num_host_blocks(self) -> int:
        """KV blocks the host swap space holds (swap_space_gb per GPU, like vLLM's swap_space)."""
        cfg = self.scenario.scheduler
        return int(cfg.swap_space_gb * GiB // (cfg.block_size * self.kv_bytes_per_token))


def _sequences(workload: Workload) -> list[Sequence]:
    ttft_s = {name: slo.ttft_ms / 1000 for name, slo in workload.slos.items() if slo.ttft_ms is not None}
    return [
        Sequence(
            seq_id=r.request_id,
            prompt_len=r.prompt_tokens,
            max_output=r.output_tokens,
            arrival=r.arrival,
            request_class=r.request_class,
            priority=r.priority,
            block_hashes=r.block_hashes,
            deadline=r.arrival + ttft_s[r.request_class] if r.request_class in ttft_s else None,
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

    speculation = None
    if cfg.speculative is not None:  # one per run: acceptance streams are per request
        speculation = Speculation(cfg.speculative, draft_execution(scenario), scenario.seed)

    def new_replica(i: int) -> Replica:
        blocks = make_block_manager(cfg, deployment.num_blocks, workload.hash_block_tokens)
        scheduler = make_scheduler(cfg, blocks, deployment.max_model_len, deployment.num_host_blocks)
        return Replica(
            env, i, scheduler, deployment.execution, cluster.on_finish, scenario.run.merge_decode_steps,
            swap_s_per_token=deployment.swap_s_per_token, speculation=speculation,
        )

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


def run_counts(replicas: list[Replica], seqs: list[Sequence], workload: Workload, end: float, started: float) -> dict:
    """What a run did (steps, preemptions, clipped lengths, unfinished requests, times) for its provenance."""
    return {
        "steps": sum(r.num_steps for r in replicas),
        "extrapolated_steps": sum(r.num_extrapolated_steps for r in replicas),
        "step_sources": dict(sum((r.step_sources for r in replicas), Counter())),
        "preemptions": sum(s.num_preemptions for s in seqs),
        "clipped_prompts": workload.clipped_prompts,
        "clipped_outputs": workload.clipped_outputs,
        "simulated_time_s": end,
        "unfinished_at_end": sum(s.status is not SeqStatus.FINISHED for s in seqs),
        "wall_time_s": round(time.perf_counter() - started, 3),
    }


def _scheduling_info(scenario: Scenario, seqs: list[Sequence], replicas: list[Replica]) -> dict:
    """What prefix caching, swapping and speculation did in a run."""
    cfg, info = scenario.scheduler, {}
    if cfg.enable_prefix_caching:
        admitted = [s for s in seqs if s.first_scheduled is not None]
        prompt = sum(s.prompt_len for s in admitted)
        info["prefix_cache_hit_rate"] = sum(s.num_cached_prefix for s in admitted) / prompt if prompt else 0.0
        if not any(s.block_hashes for s in seqs):
            info["prefix_cache_note"] = (
                "no request names its prompt blocks, so nothing can be shared; "
                "traces with hash ids such as Mooncake's do"
            )
    if cfg.preemption_mode == "swap":
        info["swap_outs"] = sum(r.scheduler.host.num_swap_outs for r in replicas)
    if cfg.speculative is not None and replicas:
        info["speculative"] = replicas[0].speculation.report()
    return info


def timeseries_frame(replicas: list[Replica]) -> pd.DataFrame:
    rows = [s for r in replicas for s in r.samples]
    frame = pd.DataFrame(rows, columns=["time", "replica", "waiting", "running", "kv_usage", "busy"])
    return frame.sort_values(["time", "replica"], kind="stable").reset_index(drop=True)


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
    if scenario.disaggregation is not None:  # separate prefill and decode pools
        from simulator.disaggregated import run_disaggregated

        return run_disaggregated(scenario, seed, started)
    deployment = deployment or Deployment.build(scenario)
    workload = workload or generate(
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
        "execution": describe_execution(deployment.execution),
        **run_counts(replicas, seqs, workload, end, started),
    }
    if scaling is not None:
        info["autoscaling"] = scaling
    info.update(_scheduling_info(scenario, seqs, replicas))
    description = (
        f"{info['model']} on {dep.replicas}x{dep.tensor_parallel} {info['hardware']}, "
        f"{dep.weight_dtype} weights, {info['policy']} batching"
    )
    return Results(summary, records, timeseries, workload.slos, description, info)

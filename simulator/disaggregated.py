"""Disaggregated serving (DistServe, Splitwise) in SimPy: a prefill pool and a decode pool.

A request arrives at the prefill pool, whose router picks a replica. That replica runs the
scenario's batching policy on a *prefill job*: the request with a one-token output, so the
policy computes the prompt, samples the first token (the request's TTFT) and is done with it.
The prefill replica keeps the prompt's KV blocks while the cache is sent to the decode pool,
which takes prompt tokens x KV bytes per token per GPU / link bandwidth + link latency (each
prefill GPU sends its own shard over its own link; transfers do not share links). Then the
blocks are freed, the decode pool's router picks a replica and the request joins its queue with
its KV cache present (prompt computed, first token sampled): the decode scheduler allocates its
blocks there and only decodes it. A request preempted on the decode side is recomputed there.

Both pools are ordinary replicas driven by the shared schedulers; this module only wires them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import simpy

from simulator import memory
from simulator.cluster import Cluster
from simulator.disaggregation_spec import pool_scenario
from simulator.replica import Replica
from simulator.routing import Router, make_router
from simulator.scenario import Scenario
from simulator.scheduling import SeqStatus, Sequence, make_block_manager, make_scheduler
from simulator.simulation import (
    Deployment,
    _record,
    _scheduling_info,
    _sequences,
    run_counts,
    timeseries_frame,
)
from simulator.speculation import Speculation, draft_execution
from simulator.workload import Workload, generate


@dataclass
class Pool:
    """One pool: its settings as a colocated scenario, and what follows from them (KV capacity,
    step times, swap space)."""

    role: str
    deployment: Deployment

    @classmethod
    def build(cls, scenario: Scenario, role: str) -> Pool:
        return cls(role, Deployment.build(pool_scenario(scenario, role)))

    @property
    def scenario(self) -> Scenario:
        return self.deployment.scenario

    @property
    def replicas(self) -> int:
        return self.scenario.deployment.replicas

    @property
    def num_blocks(self) -> int:
        return self.deployment.num_blocks

    @property
    def execution(self):
        return self.deployment.execution

    def describe(self) -> dict:
        dep = self.scenario.deployment
        return {
            "replicas": dep.replicas,
            "hardware": self.scenario.hardware_spec().name,
            "tensor_parallel": dep.tensor_parallel,
            "policy": self.scenario.scheduler.policy,
            "router": self.scenario.router,
            "kv_blocks_per_replica": self.num_blocks,
            "kv_tokens_per_replica": self.num_blocks * self.scenario.scheduler.block_size,
            "usd_per_hour": self.scenario.price_per_hour(),
        }


@dataclass(frozen=True)
class KVLink:
    """Time to send one request's KV cache from a prefill replica to a decode replica."""

    bandwidth: float  # bytes/s per prefill GPU
    latency: float  # s per transfer
    bytes_per_token: float  # KV bytes one prefill GPU holds per token

    @classmethod
    def build(cls, scenario: Scenario, prefill: Pool) -> KVLink:
        cfg = scenario.disaggregation
        hw = prefill.scenario.hardware_spec()
        dep = prefill.scenario.deployment
        bandwidth = hw.interconnect_bandwidth if cfg.link_gbps is None else cfg.link_gbps * 1e9
        latency = hw.interconnect_latency if cfg.link_latency_us is None else cfg.link_latency_us * 1e-6
        per_token = memory.kv_bytes_per_token_per_gpu(scenario.model_spec(), dep.kv_dtype, dep.tensor_parallel)
        return cls(bandwidth, latency, per_token)

    def transfer_time(self, tokens: int) -> float:
        return tokens * self.bytes_per_token / self.bandwidth + self.latency


@dataclass
class Pools:
    prefill: Pool
    decode: Pool
    link: KVLink

    @classmethod
    def build(cls, scenario: Scenario) -> Pools:
        if scenario.disaggregation is None:
            raise ValueError(f"scenario {scenario.name!r} has no disaggregation: section")
        prefill, decode = Pool.build(scenario, "prefill"), Pool.build(scenario, "decode")
        return cls(prefill, decode, KVLink.build(scenario, prefill))


@dataclass
class Handoff:
    """Moves each request from the prefill replica that produced its first token to a decode
    replica, after its KV transfer."""

    env: simpy.Environment
    cluster: Cluster  # counts finished requests
    link: KVLink
    decode_router: Router
    requests: dict[int, Sequence]  # seq_id -> the request itself (prefill works on a job copy)
    prefill: list[Replica] = field(default_factory=list)
    decode: list[Replica] = field(default_factory=list)
    transfer_s: list[float] = field(default_factory=list)

    def prefill_done(self, job: Sequence) -> None:
        """A prefill replica finished (or rejected) a job: hand the request on."""
        seq = self.requests[job.seq_id]
        seq.first_scheduled = job.first_scheduled
        seq.num_preemptions = job.num_preemptions
        seq.num_cached_prefix = job.num_cached_prefix
        seq.replica = job.replica
        if job.finish_reason != "length":  # rejected: the request ends here
            self._finish(seq, job.finish_time, job.finish_reason)
            return
        seq.token_times = list(job.token_times)
        seq.num_output = job.num_output
        seq.num_computed = job.num_computed
        if seq.num_output >= seq.max_output:
            self._finish(seq, job.finish_time, "length")
            return
        replica = self.prefill[job.replica]
        blocks = replica.scheduler.blocks
        # The scheduler freed the job's blocks on finishing it; take as many back at once (they
        # were just freed, so they are there) and hold them until the cache has been sent.
        hold = Sequence(seq_id=job.seq_id, prompt_len=job.prompt_len, max_output=1, arrival=job.arrival)
        blocks.allocate(hold, min(job.num_computed, blocks.num_free * blocks.block_size))
        self.env.process(self._transfer(seq, replica, hold))

    def _transfer(self, seq: Sequence, prefill: Replica, hold: Sequence):
        start = self.env.now
        yield self.env.timeout(self.link.transfer_time(seq.num_computed))
        self.transfer_s.append(self.env.now - start)
        prefill.scheduler.blocks.free(hold)
        prefill.wake()  # freed blocks may admit a waiting prompt
        self.decode[self.decode_router.choose(self.decode, seq)].submit(seq)

    def _finish(self, seq: Sequence, when: float, reason: str) -> None:
        seq.status = SeqStatus.FINISHED
        seq.finish_time = when
        seq.finish_reason = reason
        self.cluster.on_finish(seq)


def _prefill_job(seq: Sequence) -> Sequence:
    return Sequence(
        seq_id=seq.seq_id,
        prompt_len=seq.prompt_len,
        max_output=1,
        arrival=seq.arrival,
        request_class=seq.request_class,
        priority=seq.priority,
        block_hashes=seq.block_hashes,
        deadline=seq.deadline,
    )


def simulate(scenario: Scenario, workload: Workload, pools: Pools | None = None):
    """Serve `workload` on the two pools. Returns (sequences, replicas, end time, handoff);
    replica ids are 0..P-1 for the prefill pool and P..P+D-1 for the decode pool."""
    pools = pools or Pools.build(scenario)
    env = simpy.Environment()
    rng_seed = scenario.seed + 1
    prefill_router = make_router(pools.prefill.scenario.router, pools.prefill.replicas, np.random.default_rng(rng_seed))
    decode_router = make_router(
        pools.decode.scenario.router, pools.decode.replicas, np.random.default_rng(rng_seed + 1)
    )
    cluster = Cluster(env, [], prefill_router)
    seqs = _sequences(workload)
    handoff = Handoff(env, cluster, pools.link, decode_router, {s.seq_id: s for s in seqs})
    merge = scenario.run.merge_decode_steps

    # Prefill jobs emit one token each: nothing to speculate. The decode pool drafts as configured.
    cfg = pools.decode.scenario.scheduler
    speculation = None if cfg.speculative is None else Speculation(
        cfg.speculative, draft_execution(pools.decode.scenario), scenario.seed
    )

    def replica(pool: Pool, replica_id: int, on_finish) -> Replica:
        dep, cfg = pool.deployment, pool.scenario.scheduler
        blocks = make_block_manager(cfg, dep.num_blocks, workload.hash_block_tokens)
        scheduler = make_scheduler(cfg, blocks, dep.max_model_len, dep.num_host_blocks, dep.device)
        return Replica(
            env, replica_id, scheduler, dep.execution, on_finish, merge, swap_s_per_token=dep.swap_s_per_token,
            speculation=speculation if pool.role == "decode" else None,
        )

    handoff.prefill = [replica(pools.prefill, i, handoff.prefill_done) for i in range(pools.prefill.replicas)]
    first_decode = pools.prefill.replicas
    handoff.decode = [
        replica(pools.decode, first_decode + j, cluster.on_finish) for j in range(pools.decode.replicas)
    ]
    cluster.replicas.extend(handoff.prefill)
    env.process(cluster.feed([_prefill_job(s) for s in seqs], len(seqs)))
    horizon = scenario.run.max_time_s or (10 * workload.span_s + 3600)
    env.run(until=env.any_of([cluster.all_done, env.timeout(horizon)]))
    return seqs, handoff.prefill + handoff.decode, env.now, handoff


def run_disaggregated(scenario: Scenario, seed: int, started: float | None = None):
    """`simulation.run` for a scenario with a `disaggregation:` section."""
    from simulator.metrics import summarize
    from simulator.results import Results

    started = time.perf_counter() if started is None else started
    pools = Pools.build(scenario)
    workload = generate(scenario.workload, seed=seed, max_context=scenario.max_model_len(), base_dir=scenario.base_dir)
    seqs, replicas, end, handoff = simulate(scenario, workload, pools)
    timeseries = timeseries_frame(replicas)
    records = [_record(s) for s in seqs]
    summary = summarize(records, slos=workload.slos, cost_per_hour=scenario.price_per_hour(), timeseries=timeseries)
    dep = scenario.deployment
    transfers = np.asarray(handoff.transfer_s)
    prefill, decode = pools.prefill.describe(), pools.decode.describe()
    info = {
        "scenario": scenario.name,
        "seed": seed,
        "model": scenario.model_spec().name,
        "hardware": prefill["hardware"] if prefill["hardware"] == decode["hardware"] else
        f"{prefill['hardware']} (prefill) + {decode['hardware']} (decode)",
        "replicas": prefill["replicas"] + decode["replicas"],
        "gpus": prefill["replicas"] * prefill["tensor_parallel"] + decode["replicas"] * decode["tensor_parallel"],
        "weight_dtype": dep.weight_dtype,
        "kv_dtype": dep.kv_dtype,
        "policy": scenario.scheduler.policy,
        "router": scenario.router,
        "disaggregation": {
            "prefill": prefill | {"replica_ids": [r.id for r in replicas[: prefill["replicas"]]]},
            "decode": decode | {"replica_ids": [r.id for r in replicas[prefill["replicas"]:]]},
            "link_gbps": pools.link.bandwidth / 1e9,
            "link_latency_us": pools.link.latency * 1e6,
            "kv_bytes_per_token_per_gpu": pools.link.bytes_per_token,
            "transfers": int(transfers.size),
            "transfer_s_mean": float(transfers.mean()) if transfers.size else None,
            "transfer_s_max": float(transfers.max()) if transfers.size else None,
        },
        "execution": {"prefill": pools.prefill.execution.describe(), "decode": pools.decode.execution.describe()},
        **run_counts(replicas, seqs, workload, end, started),
    }
    # The pools' own settings (prefix caching is off in both, whatever the policy's default).
    info.update(_scheduling_info(pools.decode.scenario, seqs, handoff.decode + handoff.prefill))
    description = (
        f"{info['model']}, disaggregated: {prefill['replicas']}x{prefill['tensor_parallel']} {prefill['hardware']} "
        f"prefill + {decode['replicas']}x{decode['tensor_parallel']} {decode['hardware']} decode, "
        f"{dep.weight_dtype} weights, {info['policy']} batching"
    )
    return Results(summary, records, timeseries, workload.slos, description, info)

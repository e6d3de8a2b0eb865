"""Serve a workload on a deployment in SimPy: requests arrive, routers pick replicas, replicas step.

Every pool is built the same way, from its plain settings: each replica gets its own block
manager and scheduler and shares the pool's step-time model. A colocated pool takes requests
directly (optionally under an autoscaler); a prefill pool hands each request to the decode pool
after its KV transfer (simulator/serving/disaggregation.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

from simulator.scheduling import Sequence, make_block_manager, make_scheduler
from simulator.serving.autoscaling import Autoscaler
from simulator.serving.cluster import Cluster
from simulator.serving.deployment import Deployment, Pool
from simulator.serving.disaggregation import Handoff, prefill_job
from simulator.serving.replica import Replica
from simulator.serving.routing import make_router
from simulator.serving.speculation import Speculation
from simulator.workload import Workload


@dataclass
class Served:
    """What a simulation leaves behind, for the records and the run's provenance."""

    seqs: list[Sequence]  # one per request, in arrival order
    replicas: list[Replica]  # every replica: the prefill pool's first, then the decode pool's
    end: float  # simulated time when the run stopped
    handoff: Handoff | None = None  # disaggregated: the prefill-to-decode transfers
    autoscaler: Autoscaler | None = None
    speculation: Speculation | None = None


def sequences(workload: Workload) -> list[Sequence]:
    """The scheduler's view of each request (with its TTFT deadline, for deadline policies)."""
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


def _speculation(pool: Pool, seed: int) -> Speculation | None:
    """One per pool and run: acceptance streams are per request, shared by the pool's replicas."""
    return Speculation(pool.scheduler.speculative, pool.draft, seed) if pool.speculates else None


def _replica_factory(
    env: simpy.Environment, pool: Pool, workload: Workload, on_finish: Callable[[Sequence], None],
    merge_decode_steps: bool, speculation: Speculation | None,
) -> Callable[[int], Replica]:  # fmt: skip
    def new_replica(replica_id: int) -> Replica:
        cfg = pool.scheduler
        blocks = make_block_manager(cfg, pool.num_blocks, workload.hash_block_tokens)
        scheduler = make_scheduler(cfg, blocks, pool.max_model_len, pool.num_host_blocks, pool.device)
        return Replica(env, replica_id, scheduler, pool.execution, on_finish, merge_decode_steps,
                       swap_s_per_token=pool.swap_s_per_token, speculation=speculation)  # fmt: skip

    return new_replica


def serve(deployment: Deployment, workload: Workload, seed: int) -> Served:
    """Serve `workload` on `deployment` until every request has finished (or `max_time_s`)."""
    env = simpy.Environment()
    entry = deployment.entry
    cluster = Cluster(env, [], make_router(entry.router, entry.replicas, np.random.default_rng(seed + 1)))
    seqs = sequences(workload)
    merge = deployment.merge_decode_steps
    handoff = autoscaler = None
    if deployment.colocated:
        speculation = _speculation(entry, seed)
        new_replica = _replica_factory(env, entry, workload, cluster.on_finish, merge, speculation)
        scaling = deployment.autoscaling
        if scaling is None:
            cluster.replicas.extend(new_replica(i) for i in range(entry.replicas))
        else:
            initial = min(max(entry.replicas, scaling.min_replicas), scaling.max_replicas)
            autoscaler = Autoscaler(env, cluster, new_replica, scaling, initial)
        env.process(cluster.feed(seqs, len(seqs)))
    else:
        prefill, decode = deployment.pools
        decode_router = make_router(decode.router, decode.replicas, np.random.default_rng(seed + 2))
        handoff = Handoff(env, cluster, deployment.link, decode_router, {s.seq_id: s for s in seqs})
        speculation = _speculation(decode, seed)
        new_prefill = _replica_factory(env, prefill, workload, handoff.prefill_done, merge, None)
        new_decode = _replica_factory(env, decode, workload, cluster.on_finish, merge, speculation)
        handoff.prefill = [new_prefill(i) for i in range(prefill.replicas)]
        handoff.decode = [new_decode(prefill.replicas + j) for j in range(decode.replicas)]
        cluster.replicas.extend(handoff.prefill)
        env.process(cluster.feed([prefill_job(s) for s in seqs], len(seqs)))
    # Without a limit the run drains the queue completely; the cap only stops runaway runs.
    horizon = deployment.max_time_s or (10 * workload.span_s + 3600)
    env.run(until=env.any_of([cluster.all_done, env.timeout(horizon)]))
    replicas = cluster.replicas if handoff is None else handoff.prefill + handoff.decode
    return Served(seqs, replicas, env.now, handoff, autoscaler, speculation)

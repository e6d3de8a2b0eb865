"""Serve a workload drawn lazily, in bounded memory: a day of a fleet's traffic.

Requests are drawn chunk by chunk (simulator/workload/stream.py) and become sequences only as
they arrive; a finished sequence is turned into its record at once and handed on in chunks
(to simulator/metrics/streaming.py: requests.csv and the summary's counts and sketches), so what
is held is the requests in flight, one chunk of draws and one chunk of records. Replicas keep
running time-weighted means instead of their per-step samples. Colocated deployments without
autoscaling; the scheduling, step times and token timestamps are those of `serve`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simpy

from simulator.common.errors import ConfigError
from simulator.metrics import RequestRecord
from simulator.scheduling import Sequence, make_block_manager, make_scheduler
from simulator.serving.cluster import Cluster
from simulator.serving.deployment import Deployment
from simulator.serving.outcome import record
from simulator.serving.replica import Replica
from simulator.serving.routing import make_router
from simulator.workload import WorkloadConfig
from simulator.workload.stream import stream_requests

RECORD_CHUNK = 2_000  # finished requests handed on at once (their table's temporaries: ~50 MB)


@dataclass
class StreamedServe:
    """What a streamed run leaves behind besides its records."""

    replicas: list[Replica]
    end: float  # simulated time when the run stopped
    requests: int
    unfinished: int
    preemptions: int
    clipped: int

    def counts(self) -> dict:
        busy_kv = [m for m in (r.time_weighted_means() for r in self.replicas) if m is not None]
        return {
            "steps": sum(r.num_steps for r in self.replicas),
            "extrapolated_steps": sum(r.num_extrapolated_steps for r in self.replicas),
            "step_sources": dict(sum((r.step_sources for r in self.replicas), Counter())),
            "preemptions": self.preemptions,
            "clipped_requests": self.clipped,
            "simulated_time_s": self.end,
            "unfinished_at_end": self.unfinished,
            "gpu_busy_fraction": float(np.mean([b for b, _ in busy_kv])) if busy_kv else None,
            "kv_usage_mean": float(np.mean([k for _, k in busy_kv])) if busy_kv else None,
        }


def serve_streamed(deployment: Deployment, config: WorkloadConfig, seed: int, *, base_dir: Path | None,
                   on_records: Callable[[list[RequestRecord]], None]) -> StreamedServe:  # fmt: skip
    """Serve `config`'s requests, drawn lazily, on `deployment`; records go to `on_records` in
    chunks (in the order requests finished; the unfinished ones last)."""
    if not deployment.colocated or deployment.autoscaling is not None or deployment.entry.speculates:
        raise ConfigError("run.stream_above: a streamed run serves a colocated deployment without autoscaling or speculative decoding; "
                          "raise run.stream_above to run this one in memory")  # fmt: skip
    env = simpy.Environment()
    pool = deployment.entry
    cluster = Cluster(env, [], make_router(pool.router, pool.replicas, np.random.default_rng(seed + 1)))
    live: dict[int, Sequence] = {}
    notes: dict[int, str] = {}  # what clipping changed, for the few requests it did
    buffer: list[RequestRecord] = []
    tally = {"preemptions": 0}

    def finished(seq: Sequence) -> None:
        live.pop(seq.seq_id, None)
        tally["preemptions"] += seq.num_preemptions
        buffer.append(record(seq, notes.pop(seq.seq_id, "")))
        if len(buffer) >= RECORD_CHUNK:
            on_records(buffer[:])
            buffer.clear()
        cluster.on_finish(seq)

    cfg = pool.scheduler
    for i in range(pool.replicas):
        blocks = make_block_manager(cfg, pool.num_blocks, None)
        scheduler = make_scheduler(cfg, blocks, pool.max_model_len, pool.num_host_blocks, pool.device)
        cluster.replicas.append(Replica(env, i, scheduler, pool.execution, finished, deployment.merge_decode_steps,
                                        swap_s_per_token=pool.swap_s_per_token, keep_samples=False))  # fmt: skip
    ttft_s = {c.name: c.slo.ttft_ms / 1000 for c in config.classes if c.slo.ttft_ms is not None}
    clipped = [0]

    def arrivals() -> Iterator[Sequence]:
        for r in stream_requests(config, seed=seed, max_context=pool.max_model_len, base_dir=base_dir):
            if r.requested is not None:
                notes[r.request_id] = r.clipping
                clipped[0] += 1
            seq = Sequence(seq_id=r.request_id, prompt_len=r.prompt_tokens, max_output=r.output_tokens,
                           arrival=r.arrival, request_class=r.request_class, priority=r.priority,
                           deadline=r.arrival + ttft_s[r.request_class] if r.request_class in ttft_s else None)
            live[seq.seq_id] = seq
            yield seq

    env.process(cluster.feed(arrivals(), None))
    stop = [cluster.all_done]
    if deployment.max_time_s is not None:
        stop.append(env.timeout(deployment.max_time_s))
    env.run(until=env.any_of(stop))
    unfinished = sorted(live.values(), key=lambda s: s.seq_id)
    for seq in unfinished:
        buffer.append(record(seq, notes.get(seq.seq_id, "")))
    on_records(buffer)
    requests = cluster.num_finished + len(unfinished)
    return StreamedServe(cluster.replicas, env.now, requests, len(unfinished),
                         tally["preemptions"] + sum(s.num_preemptions for s in unfinished), clipped[0])

"""Disaggregated serving (DistServe, Splitwise): how a request moves from the prefill pool to the
decode pool.

A request arrives at the prefill pool, whose router picks a replica. That replica runs the pool's
batching policy on a *prefill job*: the request with a one-token output, so the policy computes
the prompt, samples the first token (the request's TTFT) and is done with it. The prefill replica
keeps the prompt's KV blocks while the cache is sent to the decode pool (`KVLink`). Then the
blocks are freed, the decode pool's router picks a replica and the request joins its queue with
its KV cache present (prompt computed, first token sampled): the decode scheduler allocates its
blocks there and only decodes it. A request preempted on the decode side is recomputed there.

Both pools are ordinary replicas driven by the shared schedulers; this module only hands off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import simpy

from simulator.scheduling import SeqStatus, Sequence
from simulator.serving.cluster import Cluster
from simulator.serving.deployment import KVLink
from simulator.serving.replica import Replica
from simulator.serving.routing import Router


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
            seq.rejection = job.rejection
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


def prefill_job(seq: Sequence) -> Sequence:
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

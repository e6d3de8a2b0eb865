"""Sarathi-Serve chunked prefill (Agrawal et al., OSDI 2024).

Each step has a token budget (`chunk_size`). It first takes every running decode, one token each
(1 + k when verifying speculative tokens), so decodes never stall behind a long prompt. The rest
of the budget goes to prefill chunks: prompts already being prefilled continue first, then new
requests are admitted in arrival order, each taking as much of the remaining budget as it needs.
When KV blocks run out the newest running sequences are preempted (recompute, or swap), and
swapped-out sequences resume before anything new is admitted. vLLM V1 (`vllm`, vllm_v1.py)
batches in the same spirit but serves its running requests in admission order, decodes and
prefill chunks alike, from `max_num_batched_tokens`.
"""

from __future__ import annotations

from simulator.scheduling.base import Scheduler
from simulator.scheduling.sequence import SeqStatus, Sequence
from simulator.scheduling.step import Step


class SarathiScheduler(Scheduler):
    name = "sarathi"
    chunked_prefill = True

    @property
    def chunk_budget(self) -> int:
        return self.config.chunk_size

    def schedule(self, now: float) -> Step | None:
        budget = self.chunk_budget
        rows: list[tuple[Sequence, int]] = []
        scheduled: set[Sequence] = set()
        decodes = [(s, self._decode_tokens(s)) for s in self.running if not s.in_prefill]
        partial = [(s, s.remaining_compute) for s in self.running if s.in_prefill]
        for seq, wanted in decodes + partial:
            if budget == 0:
                break
            if seq.status is not SeqStatus.RUNNING:
                continue  # preempted to make room for an older one
            new = min(wanted, budget)
            if self._make_room(seq, seq.num_computed + new, scheduled):
                rows.append((seq, new))
                scheduled.add(seq)
                budget -= new
        if not self._preempted:
            resumed = self._resume_swapped(budget)
            rows += resumed
            budget -= sum(n for _, n in resumed)
        rows += self._admit_waiting(now, budget)
        return self._step(rows)

    def decode_run_length(self, step: Step) -> int:
        # With every running sequence decoding and nothing admitted or resumed, whatever stopped
        # the queue (seats, the budget left after decodes, free blocks) persists: the decodes
        # only take more blocks.
        if not step.is_pure_decode or len(step) != len(self.running):
            return 1
        return self._max_uniform_decode_steps(step)

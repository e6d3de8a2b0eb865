"""What every batching policy shares: queues, the step it hands out, and step completion.

A policy decides *which* sequences run in the next step and how many new tokens each computes.
Completing a step (advancing counters, sampling, finishing, freeing KV blocks) is the same for
every policy and lives here, so the simulator and the real engine cannot disagree about it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from simulator.scheduling.config import SchedulerConfig
from simulator.scheduling.kv_blocks import BlockManager
from simulator.scheduling.sequence import Sequence, SeqStatus


@dataclass
class Step:
    """One engine iteration: row i computes `new_tokens[i]` tokens of `seqs[i]` on top of
    `cached_tokens[i]` tokens already in its KV cache."""

    seqs: list[Sequence]
    new_tokens: list[int]
    cached_tokens: list[int]
    preempted: list[Sequence] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def num_batched_tokens(self) -> int:
        return sum(self.new_tokens)

    @property
    def is_pure_decode(self) -> bool:
        return all(n == 1 for n in self.new_tokens) and all(s.num_output > 0 for s in self.seqs)

    @property
    def num_prefill_tokens(self) -> int:
        return sum(n for n, s in zip(self.new_tokens, self.seqs) if s.in_prefill)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.new_tokens, dtype=np.int64), np.asarray(self.cached_tokens, dtype=np.int64)


class Scheduler:
    """Base class of batching policies. Subclasses implement `schedule`."""

    name = "base"

    def __init__(self, config: SchedulerConfig, blocks: BlockManager, max_model_len: int):
        self.config = config
        self.blocks = blocks
        self.max_model_len = max_model_len
        self.token_budget = config.token_budget(max_model_len)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    # --- queue management ------------------------------------------------------------------
    def add(self, seq: Sequence, now: float = 0.0) -> bool:
        """Queue a new request; reject it (False) if it can never be served."""
        if seq.max_total_tokens > self.max_model_len or not self.blocks.fits_ever(seq.max_total_tokens):
            seq.status = SeqStatus.FINISHED
            seq.finish_reason = "rejected"
            seq.finish_time = now
            return False
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)
        return True

    def abort(self, seq: Sequence, now: float = 0.0) -> None:
        """Drop a sequence wherever it is (a client went away) and return its blocks."""
        if seq.status is SeqStatus.FINISHED:
            return
        if seq in self.waiting:
            self.waiting.remove(seq)
        if seq in self.running:
            self.running.remove(seq)
        self.blocks.free(seq)
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = "abort"
        seq.finish_time = now

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # --- the policy ------------------------------------------------------------------------
    def schedule(self, now: float) -> Step | None:
        """The next step to run, or None when nothing can run now."""
        raise NotImplementedError  # each policy defines it

    def decode_run_length(self, step: Step) -> int:
        """How many consecutive steps, starting with `step`, this policy would schedule with the
        same sequences, one token each, if no request arrives meanwhile. The simulator merges
        them into one event; 1 is always correct."""
        return 1

    # --- helpers for policies --------------------------------------------------------------
    def _start(self, seq: Sequence, now: float) -> None:
        seq.status = SeqStatus.RUNNING
        if seq.first_scheduled is None:
            seq.first_scheduled = now

    def _preempt(self, seq: Sequence) -> None:
        """Preempt by recompute: drop its KV, requeue it at the front; prompt and generated
        tokens are prefilled again when it resumes."""
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.num_computed = 0
        seq.num_preemptions += 1
        seq.status = SeqStatus.WAITING
        self.waiting.appendleft(seq)

    def _reserve_decode_slots(self, now: float) -> tuple[list[Sequence], list[Sequence]]:
        """Give every running sequence room for one more token, oldest first, preempting the
        newest when blocks run out (vLLM's recompute policy). Returns (scheduled, preempted)."""
        scheduled: list[Sequence] = []
        preempted: list[Sequence] = []
        queue = list(self.running)
        while queue:
            seq = queue.pop(0)
            need = self.blocks.blocks_needed(seq, seq.num_computed + 1)
            while not self.blocks.can_allocate(need) and queue:
                victim = queue.pop()
                self._preempt(victim)
                preempted.append(victim)
            if not self.blocks.can_allocate(need):
                self._preempt(seq)
                preempted.append(seq)
                break
            self.blocks.allocate(seq, seq.num_computed + 1)
            scheduled.append(seq)
        return scheduled, preempted

    # --- completing a step -----------------------------------------------------------------
    def complete(self, step: Step, end_time: float, token_ids: list[int] | None = None) -> list[Sequence]:
        """Apply a finished step: advance progress, record sampled tokens, finish sequences.
        Returns the sequences that finished."""
        finished = []
        for i, (seq, n) in enumerate(zip(step.seqs, step.new_tokens)):
            if seq.status is not SeqStatus.RUNNING:
                continue  # aborted while the step ran
            seq.num_computed += n
            if seq.num_computed < seq.num_tokens:
                continue  # a prefill chunk that does not reach the end of the prompt
            seq.num_output += 1
            seq.token_times.append(end_time)
            stop = False
            if token_ids is not None:
                seq.output_token_ids.append(token_ids[i])
                stop = token_ids[i] in seq.stop_token_ids
            if stop or seq.num_output >= seq.max_output:
                self._finish(seq, end_time, "stop" if stop else "length")
                finished.append(seq)
        return finished

    def complete_decode_run(self, step: Step, end_times: np.ndarray) -> list[Sequence]:
        """Apply `len(end_times)` consecutive decode steps of `step` at once (simulator only)."""
        n = len(end_times)
        times = end_times.tolist()
        finished = []
        for seq in step.seqs:
            # The first step's slot was reserved by `schedule`; later ones are taken now, which is
            # what `schedule` would have done at each boundary since nothing else allocates.
            seq.num_computed += n
            seq.num_output += n
            self.blocks.allocate(seq, seq.num_computed)
            seq.token_times.extend(times)
            if seq.num_output >= seq.max_output:
                self._finish(seq, times[-1], "length")
                finished.append(seq)
        return finished

    def _finish(self, seq: Sequence, now: float, reason: str) -> None:
        seq.status = SeqStatus.FINISHED
        seq.finish_time = now
        seq.finish_reason = reason
        self.running.remove(seq)
        self.blocks.free(seq)

    def _max_uniform_decode_steps(self, step: Step) -> int:
        """Steps until the first sequence of `step` finishes or the free blocks run out."""
        if any(seq.stop_token_ids for seq in step.seqs):
            return 1
        k = min(seq.remaining_output for seq in step.seqs)
        if k <= 1:
            return 1
        computed = np.fromiter((s.num_computed for s in step.seqs), dtype=np.int64, count=len(step))
        owned = sum(len(s.block_table) for s in step.seqs)
        bs = self.blocks.block_size
        free = self.blocks.num_free

        def extra_blocks(j: int) -> int:  # blocks needed to have run j steps (first one reserved)
            return int(np.sum(-(-(computed + j) // bs))) - owned

        if extra_blocks(k) <= free:
            return k
        lo, hi = 1, k  # extra_blocks(lo) <= free < extra_blocks(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if extra_blocks(mid) <= free:
                lo = mid
            else:
                hi = mid
        return lo

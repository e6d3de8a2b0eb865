"""Static (request-level) batching, the baseline continuous batching is measured against.

A batch is formed from the waiting queue when the previous one has completely finished; each
request reserves KV blocks for its whole prompt and maximum output up front, so nothing is ever
preempted. New arrivals wait for the whole batch to drain: that is the cost this baseline shows.
Finished requests stop computing (a packed engine needs no padding rows), which makes this
baseline kinder than padded `generate` loops.
"""

from __future__ import annotations

from simulator.scheduling.base import Scheduler, Step
from simulator.scheduling.sequence import Sequence


class StaticBatchScheduler(Scheduler):
    name = "static"

    def schedule(self, now: float) -> Step | None:
        if not self.running:
            self._form_batch(now)
        if not self.running:
            return None
        seqs = list(self.running)
        return Step(seqs, [s.remaining_compute for s in seqs], [s.num_computed for s in seqs])

    def _form_batch(self, now: float) -> None:
        # The whole batch is prefilled in one pass, as request-level engines do: the token
        # budget of iteration-level schedulers does not apply, only seats and memory.
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            seq: Sequence = self.waiting[0]
            need = self.blocks.blocks_needed(seq, seq.max_total_tokens)
            if not self.blocks.can_allocate(need, admission=True):
                break
            self.waiting.popleft()
            self.blocks.allocate(seq, seq.max_total_tokens)  # reserve the whole generation
            self._start(seq, now)
            self.running.append(seq)

    def decode_run_length(self, step: Step) -> int:
        if not step.is_pure_decode:
            return 1
        return self._max_uniform_decode_steps(step)

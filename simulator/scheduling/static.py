"""Static (request-level) batching, the baseline continuous batching is measured against.

A batch is formed from the waiting queue when the previous one has completely finished; each
request reserves KV blocks for its whole prompt and maximum output up front, so nothing is ever
preempted. New arrivals wait for the whole batch to drain: that is the cost this baseline shows.
Finished requests stop computing (a packed engine needs no padding rows), which makes this
baseline kinder than padded `generate` loops.
"""

from __future__ import annotations

from simulator.scheduling.base import Scheduler
from simulator.scheduling.step import Step


class StaticBatchScheduler(Scheduler):
    name = "static"
    reserves_full_generation = True

    def schedule(self, now: float) -> Step | None:
        if not self.running:
            # The whole batch is prefilled in one pass, as request-level engines do: the token
            # budget of iteration-level schedulers does not apply, only seats and memory.
            self._admit_waiting(now, None)
        rows = [(s, s.remaining_compute if s.in_prefill else self._decode_tokens(s)) for s in self.running]
        return self._step(rows)

    def decode_run_length(self, step: Step) -> int:
        if not step.is_pure_decode:
            return 1
        return self._max_uniform_decode_steps(step)

"""Orca-style iteration-level batching (Yu et al., OSDI 2022), without paged KV memory.

Scheduling happens every iteration: running requests decode one token each, and waiting requests
join at any iteration, in arrival order, while seats (max_num_seqs), the token budget and memory
allow. A newcomer's whole prompt is computed in the same step as the others' decodes (selective
batching: attention per request, the linear layers over all tokens together). Without paging,
each request reserves KV space for its prompt plus its maximum output when it is admitted, so
nothing is ever preempted, at the price of memory held for tokens that may never be generated.
"""

from __future__ import annotations

from simulator.scheduling.base import Scheduler
from simulator.scheduling.step import Step


class OrcaScheduler(Scheduler):
    name = "orca"
    reserves_full_generation = True

    def schedule(self, now: float) -> Step | None:
        rows = [(s, self._decode_tokens(s)) for s in self.running]  # every one has its prompt computed
        budget = self.token_budget - sum(n for _, n in rows)
        rows += self._admit_waiting(now, max(budget, 0))
        return self._step(rows)

    def decode_run_length(self, step: Step) -> int:
        # No admission means the head did not fit (seats, budget or memory). Decodes allocate
        # nothing (the generation is reserved) and the batch is fixed, so that holds until a
        # request finishes or arrives.
        if not step.is_pure_decode:
            return 1
        return self._max_uniform_decode_steps(step)

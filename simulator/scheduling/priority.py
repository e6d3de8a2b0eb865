"""Priority classes with preemption (vLLM's `priority` scheduling policy).

Lower `priority` values are served first: the waiting queue is ordered by (priority, arrival).
When the head of the queue cannot be admitted for lack of seats or KV blocks, running requests of
strictly lower priority (higher value) are preempted, newest first, to make room, if that is
enough. When blocks run out during decoding the victim is the lowest-priority, newest running
request. Otherwise it behaves like `vllm` (prefill-first, whole prompts). A swapped-out request
holds back admissions only of requests that do not outrank it.
"""

from __future__ import annotations

from simulator.scheduling.sequence import Sequence
from simulator.scheduling.vllm import VLLMScheduler


class PriorityScheduler(VLLMScheduler):
    name = "priority"

    @staticmethod
    def queue_key(seq: Sequence) -> tuple:
        return (seq.priority, seq.arrival, seq.seq_id)

    def _victim(self, candidates: list[Sequence]) -> Sequence:
        return max(reversed(candidates), key=lambda s: s.priority)  # lowest priority, newest of those

    def _admission_blocked(self, seq: Sequence) -> bool:
        return any(s.priority <= seq.priority for s in self.swapped)

    def _try_admit(self, seq: Sequence, now: float, budget: int | None) -> int:
        new, cover = self._plan_admission(seq, budget)
        if new == 0:
            return 0
        if not self._fits(seq, cover) and self._preemption_would_fit(seq, cover):
            victims = [s for s in self.running if s.priority > seq.priority]
            while victims and not self._fits(seq, cover):
                self._preempt(victims.pop())  # newest first
        if not self._fits(seq, cover):
            return 0
        self._admit(seq, now, cover)
        return new

    def _preemption_would_fit(self, seq: Sequence, cover: int) -> bool:
        """Whether preempting every running request of lower priority than `seq` makes room."""
        victims = [s for s in self.running if s.priority > seq.priority]
        if not victims:
            return False
        seats = len(self.running) - len(victims) < self.config.max_num_seqs
        # Blocks shared with others (prefix caching) stay in use: count only sole references.
        refs = getattr(self.blocks, "ref_count", lambda block: 1)
        freed = sum(1 for s in victims for b in s.block_table if refs(b) == 1)
        need = self.blocks.blocks_to_admit(seq, cover)
        return seats and need <= self.blocks.num_free + freed - self.blocks.watermark_blocks

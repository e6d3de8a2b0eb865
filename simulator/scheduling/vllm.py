"""vLLM-style continuous batching (vLLM v0 default scheduler).

Every step first tries to admit waiting requests in arrival order (whole prompts, within the
token budget, the sequence limit and the free KV blocks above the watermark). If any were
admitted the step is a prefill step; otherwise every running sequence decodes one token, and
when blocks run out the newest running sequences are preempted by recompute.
"""

from __future__ import annotations

from simulator.scheduling.base import Scheduler, Step
from simulator.scheduling.sequence import Sequence


class VLLMScheduler(Scheduler):
    name = "vllm"

    def schedule(self, now: float) -> Step | None:
        prefills = self._admit_prefills(now)
        if prefills:
            return Step(prefills, [s.remaining_compute for s in prefills], [s.num_computed for s in prefills])
        scheduled, preempted = self._reserve_decode_slots(now)
        if not scheduled:
            return Step([], [], [], preempted) if preempted else None
        return Step(scheduled, [1] * len(scheduled), [s.num_computed for s in scheduled], preempted)

    def _admit_prefills(self, now: float) -> list[Sequence]:
        admitted: list[Sequence] = []
        budget = self.token_budget
        while self.waiting:
            seq = self.waiting[0]
            new = seq.remaining_compute
            if len(self.running) >= self.config.max_num_seqs or new > budget:
                break
            if not self.blocks.can_allocate(self.blocks.blocks_needed(seq, seq.num_tokens), admission=True):
                break
            self.waiting.popleft()
            self.blocks.allocate(seq, seq.num_tokens)
            self._start(seq, now)
            self.running.append(seq)
            admitted.append(seq)
            budget -= new
        return admitted

    def decode_run_length(self, step: Step) -> int:
        # A decode step means the head of the queue could not be admitted; with the batch fixed
        # and free blocks only shrinking, it stays so until a sequence finishes.
        if step.preempted or not step.is_pure_decode:
            return 1
        return self._max_uniform_decode_steps(step)

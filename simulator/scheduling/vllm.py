"""vLLM v0's default scheduler (prefill-first continuous batching), policy `vllm-v0`.

Every step first tries to admit waiting requests in arrival order (whole prompts, within the
token budget, the sequence limit and the free KV blocks above the watermark). If any were
admitted the step is a prefill step; otherwise every running sequence decodes one token, and
when blocks run out the newest running sequences are preempted (by recompute, or by swap when
`preemption_mode: swap`). Swapped-out sequences come back, oldest first, in decode steps without
preemptions, and nothing new is admitted while any is still out.
"""

from __future__ import annotations

from simulator.scheduling.base import Scheduler
from simulator.scheduling.step import Step


class VLLMScheduler(Scheduler):
    name = "vllm-v0"

    def schedule(self, now: float) -> Step | None:
        prefills = self._admit_waiting(now, self.token_budget)
        if prefills:
            return self._step(prefills)
        scheduled, preempted = self._reserve_decode_slots(now)
        rows = [(s, self._decode_tokens(s)) for s in scheduled]
        if not preempted:
            rows += self._resume_swapped(None)
        return self._step(rows)

    def decode_run_length(self, step: Step) -> int:
        # A decode step means the head of the queue could not be admitted; with the batch fixed
        # and free blocks only shrinking, it stays so until a sequence finishes.
        if step.preempted or not step.is_pure_decode:
            return 1
        return self._max_uniform_decode_steps(step)

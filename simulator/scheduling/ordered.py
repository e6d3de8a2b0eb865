"""Admission orders other than arrival: shortest prompt first and earliest deadline first.

Both are vLLM-style (prefill-first, whole prompts, preemption of the newest when blocks run out);
only the order of the waiting queue differs, and the head of the queue still blocks the rest
when it does not fit, as in vLLM.

- `spf`, shortest prompt first: the waiting queue is sorted by prompt length (then arrival).
  Short requests stop queueing behind long ones, which cuts mean TTFT; long prompts can starve
  under sustained load.
- `edf`, earliest deadline first: sorted by each request's TTFT deadline (arrival + its class's
  TTFT SLO, `Sequence.deadline`); requests without a deadline come after all that have one, in
  arrival order.
"""

from __future__ import annotations

from simulator.scheduling.sequence import Sequence
from simulator.scheduling.vllm import VLLMScheduler


class ShortestPromptFirstScheduler(VLLMScheduler):
    name = "spf"

    @staticmethod
    def queue_key(seq: Sequence) -> tuple:
        return (seq.prompt_len, seq.arrival, seq.seq_id)


class EarliestDeadlineFirstScheduler(VLLMScheduler):
    name = "edf"

    @staticmethod
    def queue_key(seq: Sequence) -> tuple:
        no_deadline = seq.deadline is None
        return (no_deadline, 0.0 if no_deadline else seq.deadline, seq.arrival, seq.seq_id)

"""One request's whole state while it is served: lengths, progress, KV blocks and token times."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    SWAPPED = "swapped"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """A request as the scheduler sees it.

    Progress is two counters: `num_tokens` (prompt plus generated so far) and `num_computed`
    (tokens whose KV entries are in the cache). A step computes `num_tokens - num_computed` tokens
    (or a chunk of them); when it catches up, the step samples one new token. After a preemption
    by recompute, `num_computed` drops to 0 and the generated tokens are prefilled again with the
    prompt, as vLLM does.
    """

    seq_id: int
    prompt_len: int
    max_output: int
    arrival: float
    request_class: str = "default"
    priority: int = 0  # lower value is served first by priority policies
    prompt_token_ids: list[int] | None = None  # engine only
    block_hashes: list[int] | None = None  # prefix-cache identity of each full prompt block
    deadline: float | None = None  # absolute TTFT deadline, for deadline-aware policies
    stop_token_ids: frozenset[int] = frozenset()  # engine only: EOS unless ignore_eos

    status: SeqStatus = SeqStatus.WAITING
    num_output: int = 0
    num_computed: int = 0
    num_cached_prefix: int = 0  # prompt tokens found in the prefix cache on admission
    block_table: list[int] = field(default_factory=list)
    output_token_ids: list[int] = field(default_factory=list)  # engine only
    token_times: list[float] = field(default_factory=list)
    first_scheduled: float | None = None
    finish_time: float | None = None
    num_preemptions: int = 0
    finish_reason: str | None = None  # "length", "stop", "abort" or "rejected"
    rejection: str = ""  # why a rejected request can never be served, in words
    replica: int | None = None

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_output

    @property
    def remaining_compute(self) -> int:
        """Tokens to compute before the next token can be sampled."""
        return self.num_tokens - self.num_computed

    @property
    def in_prefill(self) -> bool:
        return self.remaining_compute > 1 or self.num_output == 0

    @property
    def remaining_output(self) -> int:
        return self.max_output - self.num_output

    @property
    def max_total_tokens(self) -> int:
        return self.prompt_len + self.max_output

    @property
    def is_finished(self) -> bool:
        return self.status is SeqStatus.FINISHED

    @property
    def first_token_time(self) -> float | None:
        return self.token_times[0] if self.token_times else None

"""The unit of work a batching policy hands to an engine: which sequences run and how many tokens each."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simulator.scheduling.sequence import Sequence


@dataclass
class Step:
    """One engine iteration: row i computes `new_tokens[i]` tokens of `seqs[i]` on top of
    `cached_tokens[i]` tokens already in its KV cache."""

    seqs: list[Sequence]
    new_tokens: list[int]
    cached_tokens: list[int]
    preempted: list[Sequence] = field(default_factory=list)
    # Speculative tokens verified in each row (included in new_tokens); empty when none are.
    draft_tokens: list[int] = field(default_factory=list)
    # KV moved over the host link before the step runs: (source, destination) block copies.
    swap_out_blocks: list[tuple[int, int]] = field(default_factory=list)  # device -> host
    swap_in_blocks: list[tuple[int, int]] = field(default_factory=list)  # host -> device
    swapped_out_tokens: int = 0
    swapped_in_tokens: int = 0
    num_admitted: int = 0  # sequences that joined the running batch in this step

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

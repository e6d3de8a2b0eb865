"""The execution-time protocol: how long one engine step takes.

A step is a batch of sequences; row i computes `new_tokens[i]` tokens with `cached_tokens[i]`
tokens already in its KV cache (a prefill chunk has many new tokens, a decode one, a speculative
verification k+1). Every model answers in seconds and says where its numbers come from.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ExecutionModel(Protocol):
    provenance: str  # "roofline", "measured" or "transferred"

    def step_time(self, new_tokens: np.ndarray, cached_tokens: np.ndarray) -> float:
        """Seconds for one step over the given rows."""
        ...

    def decode_run_times(self, cached_tokens: np.ndarray, num_steps: int) -> np.ndarray:
        """Durations of `num_steps` pure-decode steps, step j with `cached_tokens + j` cached.

        Must equal calling `step_time(ones, cached_tokens + j)` for each j; the simulator merges
        consecutive decode steps with it.
        """
        ...

    def is_extrapolated(self, new_tokens: np.ndarray, cached_tokens: np.ndarray) -> bool:
        """True when the step lies outside the range the model was fitted on."""
        ...

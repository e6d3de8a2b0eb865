"""Speculative decoding in the simulator: what drafting costs and how many tokens a step emits.

Drafting costs k decode steps of the draft model (its own roofline, on the same GPUs, with the
same settings as the target) over the sequences being verified; `ngram` drafting (prompt lookup)
runs on the host and is taken as free. The verify step itself is an ordinary step of k+1 new
tokens per sequence, costed by the target's execution model. The first of the k draft steps is
charged as a one-token decode, although a real draft also re-reads the tokens accepted last step.

Acceptance: each proposed position is accepted with its probability, given that all earlier ones
were; a step emits the accepted run plus one token of the target's own (1..k+1). Draws come from
one random stream per request (keyed by the seed and the request id), so every policy sees the
same acceptance sequence for the same request: comparisons stay paired.

Memory: a draft model's weights and its KV cache (one entry per token, like the target's) come out
of the same GPU memory, so the target gets fewer KV blocks (simulator/scenario/build.py).
"""

from __future__ import annotations

import numpy as np

from simulator.common.errors import ConfigError
from simulator.execution import ExecutionModel
from simulator.scheduling import Step
from simulator.scheduling.speculative import SpeculativeConfig

_STREAM = 0x5EC  # spawn key of the acceptance streams, apart from the workload's


class Speculation:
    def __init__(self, config: SpeculativeConfig, draft: ExecutionModel | None, seed: int):
        rates = config.acceptance_by_position()
        if not rates:
            raise ConfigError(
                "scheduler.speculative.acceptance_rate: the simulator needs it (a number in [0, 1], or "
                f"one per position for the {config.num_speculative_tokens} positions)"
            )
        self.rates = np.asarray(rates, dtype=np.float64)
        self.draft = draft
        self.seed = seed
        self._streams: dict[int, np.random.Generator] = {}
        self.verify_rows = 0  # sequence-steps that verified drafts
        self.proposed = 0  # draft tokens proposed
        self.accepted = 0  # draft tokens accepted

    def _stream(self, seq_id: int) -> np.random.Generator:
        rng = self._streams.get(seq_id)
        if rng is None:
            rng = self._streams[seq_id] = np.random.default_rng(
                np.random.SeedSequence(self.seed, spawn_key=(_STREAM, seq_id))
            )
        return rng

    def emitted(self, step: Step) -> list[int]:
        """Tokens each row of `step` emits: 1 + its leading accepted drafts."""
        out = []
        k = len(self.rates)
        for seq, drafts in zip(step.seqs, step.draft_tokens or [0] * len(step)):
            if drafts == 0:
                out.append(1)
                continue
            # Always draw k positions, so a request's stream does not depend on how many it verifies.
            ok = self._stream(seq.seq_id).random(k)[:drafts] < self.rates[:drafts]
            run = drafts if ok.all() else int(np.argmin(ok))
            out.append(run + 1)
            self.verify_rows += 1
            self.proposed += drafts
            self.accepted += run
            if seq.num_output + run + 1 >= seq.max_output:
                self._streams.pop(seq.seq_id, None)  # its last verify step
        return out

    def draft_time(self, step: Step) -> float:
        """Seconds the draft model takes to propose the tokens `step` verifies."""
        if self.draft is None or not step.draft_tokens:
            return 0.0
        drafts = np.asarray(step.draft_tokens)
        cached = np.asarray(step.cached_tokens)
        total = 0.0
        for j in range(int(drafts.max())):
            rows = drafts > j
            total += self.draft.step_time(np.ones(int(rows.sum()), dtype=np.int64), cached[rows] + j)
        return total

    def report(self) -> dict:
        return {
            "verify_steps": self.verify_rows,
            "draft_tokens_proposed": self.proposed,
            "draft_tokens_accepted": self.accepted,
            "acceptance": self.accepted / self.proposed if self.proposed else None,
            "tokens_per_verify_step": (self.accepted + self.verify_rows) / self.verify_rows
            if self.verify_rows
            else None,
        }

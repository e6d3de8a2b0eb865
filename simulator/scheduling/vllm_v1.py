"""vLLM V1's scheduler (vllm/v1/core/sched/scheduler.py `Scheduler.schedule`, v0.33.0).

There are no prefill and decode phases: each step has one token budget
(`max_num_batched_tokens`), and every request is given tokens so that its computed tokens catch
up with its known ones (prompt, generated, speculative). The budget goes first to the RUNNING
requests, in running order: decodes (1 token, or 1 + k when verifying k draft tokens) and
prefills continuing from the last step alike. Then, if nothing was preempted in this step, to
the WAITING ones, in queue order, while seats (`max_num_seqs`) are free: a newcomer's prefix
found in the cache is not computed again, and the rest of its prompt is chunked to what is left
of the budget (chunked prefill is always on).

- `long_prefill_token_threshold` caps the tokens one request computes in a step, unless it is
  the only request (running or waiting), which then may use the whole budget.
- A running request that cannot get the blocks for its tokens (plus `lookahead` slots for a draft
  model's proposals) preempts the last request of the running list (recompute: its KV is freed
  and its progress reset; it goes back to the front of the waiting queue); if that is itself,
  no more running requests are scheduled in this step.
- A waiting request is admitted only if the free blocks cover its blocks for this step and, with
  `scheduler_reserve_full_isl`, its whole known sequence (`allocate_slots(full_sequence_must_fit)`),
  each time plus the `watermark` when some request is already running. The first waiting
  request that does not fit stops admission.
"""

from __future__ import annotations

from simulator.common.errors import ConfigError
from simulator.scheduling.base import Scheduler
from simulator.scheduling.kv_blocks import BlockManager, blocks_for
from simulator.scheduling.sequence import Sequence
from simulator.scheduling.step import Step
from simulator.scheduling.v1_prefix_cache import V1PrefixCache


class VLLMV1Scheduler(Scheduler):
    name = "vllm"
    chunked_prefill = True
    prefix_cache = V1PrefixCache

    def __init__(
        self, config, blocks: BlockManager, max_model_len: int, num_host_blocks: int = 0, device=None
    ):
        super().__init__(config, blocks, max_model_len, num_host_blocks, device)
        cfg = self.config
        if self.token_budget < cfg.max_num_seqs:
            raise ConfigError(
                f"scheduler.max_num_batched_tokens: got {self.token_budget}, below max_num_seqs "
                f"({cfg.max_num_seqs}); allowed: at least max_num_seqs, as vLLM requires"
            )
        if cfg.long_prefill_token_threshold > max_model_len:
            raise ConfigError(
                f"scheduler.long_prefill_token_threshold: got {cfg.long_prefill_token_threshold}; allowed: "
                f"at most max_model_len ({max_model_len})"
            )
        spec = cfg.speculative
        # A draft model writes KV for the positions it proposes; n-gram lookup writes none.
        self.lookahead = spec.num_speculative_tokens if spec is not None and spec.uses_draft_model else 0

    def _fits_ever(self, seq: Sequence) -> bool:
        # V1's watermark only holds back admissions beside running requests: alone, a request
        # may use every block.
        return blocks_for(seq.max_total_tokens, self.blocks.block_size) <= self.blocks.num_blocks

    def schedule(self, now: float) -> Step | None:
        budget = self.token_budget
        cap = self.config.long_prefill_token_threshold if len(self.running) + len(self.waiting) > 1 else 0
        rows: list[tuple[Sequence, int]] = []
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            new = self._capped(
                self._decode_tokens(seq) if not seq.in_prefill else seq.remaining_compute, cap, budget
            )
            if not self._grow_or_preempt(seq, new):
                break  # it preempted itself: nothing after it can be scheduled either
            rows.append((seq, new))
            budget -= new
            i += 1
        if not self._preempted:
            while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
                new = self._admit_head(now, cap, budget)
                if new == 0:
                    break
                rows.append((self.running[-1], new))
                budget -= new
        return self._step(rows)

    @staticmethod
    def _capped(wanted: int, cap: int, budget: int) -> int:
        return min(cap if 0 < cap < wanted else wanted, budget)

    def _cover(self, tokens: int) -> int:
        """Tokens a row's blocks must hold: its tokens plus the draft model's lookahead slots."""
        return min(tokens + self.lookahead, self.max_model_len)

    def _grow_or_preempt(self, seq: Sequence, new: int) -> bool:
        """Allocate running `seq`'s blocks for `new` tokens, preempting from the end of the
        running list until they fit. False if `seq` itself had to go."""
        cover = self._cover(seq.num_computed + new)
        blocks = self.blocks
        if len(seq.block_table) * blocks.block_size < cover:  # else it already holds them (most decodes)
            while not blocks.can_allocate(blocks.blocks_needed(seq, cover)):
                victim = self.running[-1]
                self._preempt(victim)
                if victim is seq:
                    return False
            blocks.allocate(seq, cover)
        blocks.cache_blocks(seq, seq.num_computed + new)
        return True

    def _admit_head(self, now: float, cap: int, budget: int) -> int:
        """Admit the head of the waiting queue if its blocks fit; the tokens it computes now
        (0: not admitted)."""
        seq = self.waiting[0]
        cached = self.blocks.prefix_match(seq) if seq.num_computed == 0 else 0
        computed = seq.num_computed + cached  # a request may arrive with its KV computed elsewhere
        new = self._capped(seq.num_tokens - computed, cap, budget)
        reserve = self.blocks.watermark_blocks if self.running else 0
        free = self.blocks.num_free - reserve
        if self.config.scheduler_reserve_full_isl and self.blocks.blocks_to_admit(seq, seq.num_tokens) > free:
            return 0
        cover = self._cover(computed + new)
        if self.blocks.blocks_to_admit(seq, cover) > free:
            return 0
        self._admit(seq, now, cover)
        self.blocks.cache_blocks(seq, computed + new)
        return new

    def decode_run_length(self, step: Step) -> int:
        # Every running request decoded and nothing was admitted: whatever kept the waiting ones
        # out (seats, the budget left after the decodes, free blocks) persists while the batch
        # is fixed, since decodes only take blocks. Evicting a cached block a waiting request
        # would have reused turns it into a fresh one: it needs as many blocks as before.
        if not step.is_pure_decode or len(step) != len(self.running) or step.preempted:
            return 1
        return self._max_uniform_decode_steps(step)

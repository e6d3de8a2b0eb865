"""What every batching policy shares: queues, the step it hands out, and step completion.

A policy decides *which* sequences run in the next step and how many new tokens each computes.
Completing a step (advancing counters, sampling, finishing, freeing KV blocks) is the same for
every policy and lives here, so the simulator and the real engine cannot disagree about it.
So do the building blocks policies are made of: admission (with prefix-cache hits), preemption
by recompute or swap, swapping back in, and decode rows that verify speculative tokens.
"""

from __future__ import annotations

import bisect
from collections import deque

import numpy as np

from simulator.scheduling.config import SchedulerConfig
from simulator.scheduling.kv_blocks import BlockManager, blocks_for
from simulator.scheduling.policy_defaults import DeviceClass, resolve
from simulator.scheduling.prefix_cache import PrefixCachingBlockManager
from simulator.scheduling.sequence import SeqStatus, Sequence
from simulator.scheduling.step import Step
from simulator.scheduling.swap import HostSwapSpace

REJECT_CONTEXT = "longer than the context"
REJECT_KV = "larger than the whole KV cache"


class Scheduler:
    """Base class of batching policies. Subclasses implement `schedule`."""

    name = "base"
    chunked_prefill = False  # admissions may take part of a prompt (else whole prompts only)
    reserves_full_generation = False  # admissions reserve blocks for prompt + max output
    prefix_cache: type[BlockManager] = PrefixCachingBlockManager  # the block manager when caching prefixes

    def __init__(
        self,
        config: SchedulerConfig,
        blocks: BlockManager,
        max_model_len: int,
        num_host_blocks: int = 0,
        device: DeviceClass | None = None,
    ):
        # Unset settings take the policy's defaults (some of vLLM V1's depend on the device).
        config = resolve(config, device)
        self.config = config
        self.blocks = blocks
        self.max_model_len = max_model_len
        self.token_budget = config.token_budget(max_model_len)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.swapped: deque[Sequence] = deque()  # preempted by swap, oldest preemption first
        self.host = HostSwapSpace(num_host_blocks if config.preemption_mode == "swap" else 0)
        # What happened while building the next step, handed out with it by `_step`.
        self._preempted: list[Sequence] = []
        self._swap_out: list[tuple[int, int]] = []
        self._swap_in: list[tuple[int, int]] = []
        self._admitted = 0

    # --- queue management ------------------------------------------------------------------
    def add(self, seq: Sequence, now: float = 0.0) -> bool:
        """Queue a new request; reject it (False) if it can never be served."""
        why = self.rejection(seq)
        if why:
            seq.status = SeqStatus.FINISHED
            seq.finish_reason = "rejected"
            seq.rejection = why
            seq.finish_time = now
            return False
        seq.status = SeqStatus.WAITING
        self._enqueue(seq)
        return True

    def abort(self, seq: Sequence, now: float = 0.0) -> None:
        """Drop a sequence wherever it is (a client went away) and return its blocks."""
        if seq.status is SeqStatus.FINISHED:
            return
        if seq in self.waiting:
            self.waiting.remove(seq)
        if seq in self.running:
            self.running.remove(seq)
        if seq in self.swapped:
            self.swapped.remove(seq)
            self.host.release(seq)
        self.blocks.free(seq)
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = "abort"
        seq.finish_time = now

    def rejection(self, seq: Sequence) -> str:
        """Why `seq` can never be served here ("" when it can): a kind, then the numbers."""
        total = seq.max_total_tokens
        if total > self.max_model_len:
            return f"{REJECT_CONTEXT}: prompt + output {total:,} tokens, max_model_len {self.max_model_len:,}"
        if not self._fits_ever(seq):
            blocks = self.blocks
            return (f"{REJECT_KV}: prompt + output {total:,} tokens, the cache holds {blocks.num_blocks:,} "
                    f"blocks of {blocks.block_size} tokens (watermark included)")  # fmt: skip
        return ""

    def _fits_ever(self, seq: Sequence) -> bool:
        """Whether `seq` could run to its end with the cache otherwise empty (above the watermark)."""
        return self.blocks.fits_ever(seq.max_total_tokens)

    @property
    def num_waiting(self) -> int:
        """Requests waiting to run, swapped-out ones included."""
        return len(self.waiting) + len(self.swapped)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.swapped)

    # --- the policy ------------------------------------------------------------------------
    def schedule(self, now: float) -> Step | None:
        """The next step to run, or None when nothing can run now."""
        raise NotImplementedError  # each policy defines it

    def decode_run_length(self, step: Step) -> int:
        """How many consecutive steps, starting with `step`, this policy would schedule with the
        same sequences, one token each, if no request arrives meanwhile. The simulator merges
        them into one event; 1 is always correct."""
        return 1

    # --- helpers for policies --------------------------------------------------------------
    def _start(self, seq: Sequence, now: float) -> None:
        seq.status = SeqStatus.RUNNING
        if seq.first_scheduled is None:
            seq.first_scheduled = now

    def _enqueue(self, seq: Sequence, preempted: bool = False) -> None:
        """Put `seq` in the waiting queue: arrival order, a preempted sequence at the front.
        Policies with another order define `queue_key` instead."""
        key = getattr(self, "queue_key", None)
        if key is not None:
            bisect.insort(self.waiting, seq, key=key)
        elif preempted:
            self.waiting.appendleft(seq)
        else:
            self.waiting.append(seq)

    def _victim(self, candidates: list[Sequence]) -> Sequence:
        """Which of `candidates` (running, in admission order) to preempt first: the newest."""
        return candidates[-1]

    def _decode_tokens(self, seq: Sequence) -> int:
        """New tokens of a decode row: one, or 1 + k when verifying k speculative tokens (never
        more than the sequence may still emit)."""
        spec = self.config.speculative
        if spec is None:
            return 1
        return 1 + max(0, min(spec.num_speculative_tokens, seq.remaining_output - 1))

    def _preempt(self, seq: Sequence) -> None:
        """Preempt by swap when configured and the host has room: its KV moves to host memory and
        it resumes where it stopped. Otherwise by recompute: drop its KV and requeue it; prompt
        and generated tokens are prefilled again when it resumes."""
        self.running.remove(seq)
        seq.num_preemptions += 1
        self._preempted.append(seq)
        if self.config.preemption_mode == "swap" and self.host.can_hold(seq):
            self._swap_out += self.host.swap_out(seq, self.blocks)
            seq.status = SeqStatus.SWAPPED
            self.swapped.append(seq)
            return
        self.blocks.free(seq)
        seq.num_computed = 0
        seq.status = SeqStatus.WAITING
        self._enqueue(seq, preempted=True)

    def _reserve_decode_slots(self, now: float) -> tuple[list[Sequence], list[Sequence]]:
        """Give every running sequence room for its next decode row, oldest first, preempting
        the newest (`_victim`) when blocks run out, as vLLM does. Returns (scheduled, preempted)."""
        scheduled: list[Sequence] = []
        preempted: list[Sequence] = []
        queue = list(self.running)
        while queue:
            seq = queue.pop(0)
            need = self.blocks.blocks_needed(seq, seq.num_computed + self._decode_tokens(seq))
            while not self.blocks.can_allocate(need) and queue:
                victim = self._victim(queue)
                queue.remove(victim)
                self._preempt(victim)
                preempted.append(victim)
            if not self.blocks.can_allocate(need):
                self._preempt(seq)
                preempted.append(seq)
                break
            self.blocks.allocate(seq, seq.num_computed + self._decode_tokens(seq))
            scheduled.append(seq)
        return scheduled, preempted

    def _make_room(self, seq: Sequence, num_tokens: int, protected: set[Sequence]) -> bool:
        """Grow running `seq` to cover `num_tokens`, preempting other running sequences (not
        `protected`, newest first) when blocks run out, and `seq` itself as a last resort.
        Returns whether `seq` got its blocks."""
        need = self.blocks.blocks_needed(seq, num_tokens)
        while not self.blocks.can_allocate(need):
            others = [s for s in self.running if s is not seq and s not in protected]
            victim = self._victim(others) if others else seq
            self._preempt(victim)
            if victim is seq:
                return False
        self.blocks.allocate(seq, num_tokens)
        return True

    # --- admission -------------------------------------------------------------------------
    def _admission_blocked(self, seq: Sequence) -> bool:
        """Swapped-out sequences resume before anything new is admitted."""
        return bool(self.swapped)

    def _plan_admission(self, seq: Sequence, budget: int | None) -> tuple[int, int]:
        """(tokens `seq` would compute in this step, tokens its blocks must cover) if admitted
        now with `budget` new tokens left (None: no budget). 0 tokens: the budget forbids it.
        Cached prefix tokens are not computed again. A whole prompt longer than the budget runs
        when the step is otherwise empty, so it cannot wait forever. A sequence may arrive with
        its KV already computed elsewhere (disaggregated decode): it keeps that progress."""
        cached = self.blocks.prefix_match(seq) if seq.num_computed == 0 else 0
        todo = seq.remaining_compute - cached
        if budget is None:
            new = todo
        elif self.chunked_prefill:
            new = min(todo, budget)
        else:
            new = todo if todo <= budget or budget == self.token_budget else 0
        cover = seq.max_total_tokens if self.reserves_full_generation else seq.num_computed + cached + new
        return new, cover

    def _fits(self, seq: Sequence, cover: int) -> bool:
        """Whether a seat and the blocks (above the watermark) are free to admit `seq`."""
        return len(self.running) < self.config.max_num_seqs and self.blocks.can_allocate(
            self.blocks.blocks_to_admit(seq, cover), admission=True
        )

    def _admit(self, seq: Sequence, now: float, cover: int) -> None:
        """Move waiting `seq` to running: claim its cached prefix, allocate the rest."""
        self.waiting.remove(seq)
        if seq.num_computed == 0:
            cached = self.blocks.claim_prefix(seq)
            seq.num_computed = cached
            if seq.first_scheduled is None:
                seq.num_cached_prefix = cached
        self.blocks.allocate(seq, cover)
        self._admitted += 1
        self._start(seq, now)
        self.running.append(seq)

    def _try_admit(self, seq: Sequence, now: float, budget: int | None) -> int:
        """Admit `seq` if budget, seats and blocks allow; returns the tokens it computes now (0: not
        admitted)."""
        new, cover = self._plan_admission(seq, budget)
        if new == 0 or not self._fits(seq, cover):
            return 0
        self._admit(seq, now, cover)
        return new

    def _admit_waiting(self, now: float, budget: int | None) -> list[tuple[Sequence, int]]:
        """Admit waiting sequences in queue order until one does not fit; returns their rows."""
        rows: list[tuple[Sequence, int]] = []
        while self.waiting and not self._admission_blocked(self.waiting[0]):
            seq = self.waiting[0]
            new = self._try_admit(seq, now, budget)
            if new == 0:
                break
            rows.append((seq, new))
            if budget is not None:
                budget -= new
        return rows

    def _resume_swapped(self, budget: int | None) -> list[tuple[Sequence, int]]:
        """Swap sequences back in, oldest preemption first, while seats, `budget` and blocks
        (above the watermark) allow. Each resumes with its next row's blocks reserved."""
        rows: list[tuple[Sequence, int]] = []
        while self.swapped and len(self.running) < self.config.max_num_seqs:
            seq = self.swapped[0]
            new = seq.remaining_compute if seq.in_prefill else self._decode_tokens(seq)
            if budget is not None:
                new = min(new, budget)
            if new == 0:
                break
            need = max(self.host.blocks_held(seq), blocks_for(seq.num_computed + new, self.blocks.block_size))
            if not self.blocks.can_allocate(need, admission=True):
                break
            self.swapped.popleft()
            self._swap_in += self.host.swap_in(seq, self.blocks)
            self.blocks.allocate(seq, seq.num_computed + new)
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            rows.append((seq, new))
            if budget is not None:
                budget -= new
        return rows

    def _step(self, rows: list[tuple[Sequence, int]]) -> Step | None:
        """The step computing `rows` (sequence, new tokens), with the preemptions and swaps made
        while building it. None when nothing runs and nothing changed."""
        preempted, self._preempted = self._preempted, []
        swap_out, self._swap_out = self._swap_out, []
        swap_in, self._swap_in = self._swap_in, []
        admitted, self._admitted = self._admitted, 0
        if not rows and not preempted:
            return None
        seqs = [s for s, _ in rows]
        new = [n for _, n in rows]
        drafts = [0 if s.in_prefill else n - 1 for s, n in rows]
        bs = self.blocks.block_size
        return Step(
            seqs,
            new,
            [s.num_computed for s in seqs],
            preempted,
            draft_tokens=drafts if any(drafts) else [],
            swap_out_blocks=swap_out,
            swap_in_blocks=swap_in,
            swapped_out_tokens=len(swap_out) * bs,
            swapped_in_tokens=len(swap_in) * bs,
            num_admitted=admitted,
        )

    # --- completing a step -----------------------------------------------------------------
    def complete(
        self,
        step: Step,
        end_time: float,
        token_ids: list[int] | list[list[int]] | None = None,
        num_emitted: list[int] | None = None,
    ) -> list[Sequence]:
        """Apply a finished step: advance progress, record sampled tokens, finish sequences.
        Returns the sequences that finished.

        A row verifying speculative tokens emits 1..k+1 tokens: `num_emitted[i]` of them, or as
        many as the list `token_ids[i]` holds (default 1, every draft rejected)."""
        finished = []
        for i, (seq, n) in enumerate(zip(step.seqs, step.new_tokens)):
            if seq.status is not SeqStatus.RUNNING:
                continue  # aborted while the step ran
            drafts = step.draft_tokens[i] if step.draft_tokens else 0
            ids = None if token_ids is None else token_ids[i]
            if ids is not None and not isinstance(ids, list):
                ids = [ids]
            emitted = len(ids) if ids is not None else (num_emitted[i] if num_emitted is not None else 1)
            if not 1 <= emitted <= drafts + 1:
                raise ValueError(f"row {i} verified {drafts} draft tokens but emits {emitted} tokens")
            # Accepted drafts keep their KV entries; rejected ones are overwritten later.
            seq.num_computed += n - drafts + emitted - 1
            self.blocks.cache_computed(seq)
            if seq.num_computed < seq.num_tokens:
                continue  # a prefill chunk that does not reach the end of the prompt
            for j in range(emitted):
                seq.num_output += 1
                seq.token_times.append(end_time)
                stop = False
                if ids is not None:
                    seq.output_token_ids.append(ids[j])
                    stop = ids[j] in seq.stop_token_ids
                if stop or seq.num_output >= seq.max_output:
                    self._finish(seq, end_time, "stop" if stop else "length")
                    finished.append(seq)
                    break
        return finished

    def complete_decode_run(self, step: Step, end_times: np.ndarray) -> list[Sequence]:
        """Apply `len(end_times)` consecutive decode steps of `step` at once (simulator only)."""
        n = len(end_times)
        times = end_times.tolist()
        finished = []
        for seq in step.seqs:
            # The first step's slot was reserved by `schedule`; later ones are taken now, which is
            # what `schedule` would have done at each boundary since nothing else allocates.
            seq.num_computed += n
            seq.num_output += n
            self.blocks.allocate(seq, seq.num_computed)
            # What the last step's scheduling would have published (a no-op unless the block
            # manager publishes at scheduling, as vLLM V1's does).
            self.blocks.cache_blocks(seq, seq.num_tokens - 1)
            seq.token_times.extend(times)
        # Finish only after every allocation, as the last single step would: which blocks a
        # prefix cache evicts depends on that order.
        for seq in step.seqs:
            if seq.num_output >= seq.max_output:
                self._finish(seq, times[-1], "length")
                finished.append(seq)
        return finished

    def _finish(self, seq: Sequence, now: float, reason: str) -> None:
        seq.status = SeqStatus.FINISHED
        seq.finish_time = now
        seq.finish_reason = reason
        self.running.remove(seq)
        self.blocks.free(seq)

    def _max_uniform_decode_steps(self, step: Step) -> int:
        """Steps until the first sequence of `step` finishes or the free blocks run out."""
        if any(seq.stop_token_ids for seq in step.seqs):
            return 1
        if step.num_admitted or step.preempted or step.swapped_in_tokens or step.swapped_out_tokens:
            return 1  # the batch or the free blocks just changed; swaps also cost link time
        if self.config.speculative is not None:
            return 1  # each verify step emits a random number of tokens
        k = min(seq.remaining_output for seq in step.seqs)
        if k <= 1:
            return 1
        computed = np.fromiter((s.num_computed for s in step.seqs), dtype=np.int64, count=len(step))
        owned = sum(len(s.block_table) for s in step.seqs)
        bs = self.blocks.block_size
        free = self.blocks.num_free

        def extra_blocks(j: int) -> int:  # blocks needed to have run j steps (first one reserved)
            return int(np.sum(-(-(computed + j) // bs))) - owned

        if extra_blocks(k) <= free:
            return k
        lo, hi = 1, k  # extra_blocks(lo) <= free < extra_blocks(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if extra_blocks(mid) <= free:
                lo = mid
            else:
                hi = mid
        return lo

"""vLLM V1's prefix cache: every full block is cached, generated tokens included, from the
moment a step is scheduled to compute it.

Differences from PrefixCachingBlockManager (which the other policies keep):

- Blocks are published when the step that computes them is scheduled, not after it ran, so a
  request admitted later in the same step already finds them (vllm/v1/core/kv_cache_manager.py
  `allocate_slots` caches up to the scheduled tokens, capped at the request's known tokens, so
  unverified draft tokens never are).
- Every full block of a sequence is named, not only full prompt blocks: its token ids on the
  engine (prompt and output), the trace's hash ids on the simulator where it has them, and a
  name of its own otherwise (such tokens are unique to the sequence). So a sequence preempted by
  recompute finds its own blocks again if they were not evicted meanwhile (V1 hashes output
  tokens as they are appended, `Request.block_hashes`).
- A lookup may cover up to `num_tokens - 1` tokens (prompt and, after a preemption, the tokens
  generated so far), never the last one, whose logits are needed
  (`KVCacheManager.get_computed_blocks`).

Eviction order is the base manager's, which is V1's (vllm/v1/core/block_pool.py `free_blocks`):
freed blocks that hold no cached prefix are reused first, cached ones least recently freed first,
a sequence's tail before its head.
"""

from __future__ import annotations

from simulator.scheduling.block_hash import ROOT_HASH, hash_block
from simulator.scheduling.prefix_cache import PrefixCachingBlockManager, block_identities
from simulator.scheduling.sequence import Sequence


class V1PrefixCache(PrefixCachingBlockManager):
    def __init__(self, num_blocks: int, block_size: int = 16, watermark: float = 0.0, hash_block_tokens=None):
        super().__init__(num_blocks, block_size, watermark, hash_block_tokens)
        self._trace_ids: dict[Sequence, list[tuple]] = {}

    # --- block names --------------------------------------------------------------------------
    def _identity(self, seq: Sequence, j: int) -> tuple:
        bs = self.block_size
        if seq.prompt_token_ids is not None:
            return tuple(int(t) for t in _tokens(seq, j * bs, (j + 1) * bs))
        named = self._trace_ids.get(seq)
        if named is None:
            named = self._trace_ids[seq] = block_identities(seq, bs, self.hash_block_tokens)
        return named[j] if j < len(named) else ("seq", seq.seq_id, j)

    def _chain(self, seq: Sequence) -> list[int]:
        """Chained hashes of the sequence's full blocks of known tokens, extended as it grows."""
        chain = self._chains.setdefault(seq, [])
        full = seq.num_tokens // self.block_size
        parent = chain[-1] if chain else ROOT_HASH
        for j in range(len(chain), full):
            parent = hash_block(parent, self._identity(seq, j))
            chain.append(parent)
        return chain

    def _match(self, seq: Sequence) -> list[int]:
        if seq.num_computed or seq.block_table:
            return []  # progress made elsewhere (or already admitted): nothing to look up
        found = []
        for h in self._chain(seq)[: (seq.num_tokens - 1) // self.block_size]:
            block = self._by_hash.get(h)
            if block is None:
                break
            found.append(block)
        return found

    # --- publishing -----------------------------------------------------------------------------
    def cache_computed(self, seq: Sequence) -> None:
        """Nothing to do after a step: its blocks were published when it was scheduled."""

    def cache_blocks(self, seq: Sequence, num_tokens: int) -> None:
        done = min(num_tokens, seq.num_tokens, len(seq.block_table) * self.block_size) // self.block_size
        start = self._published.get(seq, 0)
        if done <= start:
            return
        chain = self._chain(seq)
        for j in range(start, done):
            block, h = seq.block_table[j], chain[j]
            if h not in self._by_hash and block not in self._hash_of:
                self._by_hash[h] = block
                self._hash_of[block] = h
        self._published[seq] = done

    def free(self, seq: Sequence) -> None:
        super().free(seq)
        self._trace_ids.pop(seq, None)


def _tokens(seq: Sequence, start: int, end: int) -> list[int]:
    """Token ids start..end-1 of prompt followed by output."""
    prompt = seq.prompt_token_ids
    n = len(prompt)
    head = prompt[start:end] if start < n else []
    tail = seq.output_token_ids[max(start - n, 0) : max(end - n, 0)] if end > n else []
    return [*head, *tail]

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

from simulator.scheduling.block_hash import ROOT_HASH, chain_hashes, hash_block
from simulator.scheduling.prefix_cache import PrefixCachingBlockManager, block_identities
from simulator.scheduling.sequence import Sequence


class V1PrefixCache(PrefixCachingBlockManager):
    # --- block names --------------------------------------------------------------------------
    # A block past the trace's named ones holds tokens unique to its sequence, so its chained hash
    # is unique too: it is stood for by a key of its own, -(seq_id * 2**32 + j + 1), which no
    # hash (64 bits, not negative) equals, with no hashing and published in bulk.
    def _own_key(self, seq: Sequence, j: int) -> int:
        return -((seq.seq_id << 32) + j + 1)

    def _named(self, seq: Sequence) -> list[int]:
        """Chained hashes of the blocks the trace names (sequences without token ids)."""
        chain = self._chains.get(seq)
        if chain is None:
            chain = self._chains[seq] = chain_hashes(block_identities(seq, self.block_size, self.hash_block_tokens))
        return chain

    def _token_chain(self, seq: Sequence) -> list[int]:
        """Chained hashes of the sequence's full blocks of known token ids, extended as it grows."""
        chain = self._chains.setdefault(seq, [])
        bs = self.block_size
        parent = chain[-1] if chain else ROOT_HASH
        for j in range(len(chain), seq.num_tokens // bs):
            parent = hash_block(parent, tuple(int(t) for t in _tokens(seq, j * bs, (j + 1) * bs)))
            chain.append(parent)
        return chain

    def _match(self, seq: Sequence) -> list[int]:
        if seq.num_computed or seq.block_table:
            return []  # progress made elsewhere (or already admitted): nothing to look up
        limit = (seq.num_tokens - 1) // self.block_size
        tokens = seq.prompt_token_ids is not None
        named = self._token_chain(seq) if tokens else self._named(seq)
        found = []
        for h in named[:limit]:
            block = self._by_hash.get(h)
            if block is None:
                return found
            found.append(block)
        # A sequence's own blocks were only ever published by itself, before a preemption.
        if tokens or not seq.num_preemptions:
            return found
        for j in range(len(named), limit):
            block = self._by_hash.get(self._own_key(seq, j))
            if block is None:
                break
            found.append(block)
        return found

    # --- publishing -----------------------------------------------------------------------------
    def cache_computed(self, seq: Sequence) -> None:
        """Nothing to do after a step: its blocks were published when it was scheduled."""

    def _publish(self, j_blocks, keys) -> None:
        for block, h in zip(j_blocks, keys):
            if h not in self._by_hash and block not in self._hash_of:
                self._by_hash[h] = block
                self._hash_of[block] = h

    def cache_blocks(self, seq: Sequence, num_tokens: int) -> None:
        done = min(num_tokens, seq.num_tokens, len(seq.block_table) * self.block_size) // self.block_size
        start = self._published.get(seq, 0)
        if done <= start:
            return
        table = seq.block_table
        if seq.prompt_token_ids is not None:
            self._publish(table[start:done], self._token_chain(seq)[start:done])
            self._published[seq] = done
            return
        named = self._named(seq)
        if start < len(named):
            self._publish(table[start:min(done, len(named))], named[start:done])
        lo = max(start, len(named))
        if done > lo:
            keys = list(range(self._own_key(seq, lo), self._own_key(seq, done), -1))  # one int object per key
            if seq.num_preemptions:
                self._publish(table[lo:done], keys)
            else:  # none of these keys is published yet, and blocks past `start` never are
                blocks = table[lo:done]
                self._by_hash.update(zip(keys, blocks))
                self._hash_of.update(zip(blocks, keys))
        self._published[seq] = done


def _tokens(seq: Sequence, start: int, end: int) -> list[int]:
    """Token ids start..end-1 of prompt followed by output."""
    prompt = seq.prompt_token_ids
    n = len(prompt)
    head = prompt[start:end] if start < n else []
    tail = seq.output_token_ids[max(start - n, 0) : max(end - n, 0)] if end > n else []
    return [*head, *tail]

"""Automatic prefix caching: KV blocks shared between sequences whose prompts start alike.

Each full prompt block is named by a hash chained over its parent block's hash and its own tokens,
so two blocks with the same hash hold the same tokens after the same prefix. A block carries a
reference count; when nobody references a cached block it keeps its contents and can still be
found, until a fresh block is needed and the least recently freed one is evicted. Free and
evictable blocks both count as free capacity.

Token identity: the engine hashes `seq.prompt_token_ids`; the simulator uses `seq.block_hashes`
(ids naming `hash_block_tokens`-token blocks, as in the Mooncake trace), each cut into this
manager's smaller blocks by a sub-index. A sequence with neither shares nothing. Only full blocks
of computed prompt tokens are published, after the step that computed them.
"""

from __future__ import annotations

from collections import OrderedDict

from simulator.scheduling.block_hash import chain_hashes
from simulator.scheduling.kv_blocks import BlockManager, blocks_for
from simulator.scheduling.sequence import Sequence


def block_identities(seq: Sequence, block_size: int, hash_block_tokens: int | None) -> list[tuple]:
    """What each full prompt block of `seq` holds, as hashable tuples (empty when unknown)."""
    full = seq.prompt_len // block_size
    if seq.prompt_token_ids is not None:
        ids = seq.prompt_token_ids
        return [tuple(ids[j * block_size : (j + 1) * block_size]) for j in range(full)]
    if not seq.block_hashes or not hash_block_tokens:
        return []
    size, names, out = hash_block_tokens, seq.block_hashes, []
    for j in range(full):
        start, end = j * block_size, (j + 1) * block_size
        first, last = start // size, (end - 1) // size
        if last >= len(names):
            break
        # Offset into the first named block, then every named block this one overlaps.
        out.append((start - first * size, *names[first : last + 1]))
    return out


class PrefixCachingBlockManager(BlockManager):
    def __init__(
        self,
        num_blocks: int,
        block_size: int = 16,
        watermark: float = 0.01,
        hash_block_tokens: int | None = None,
    ):
        super().__init__(num_blocks, block_size, watermark)
        self.hash_block_tokens = hash_block_tokens
        self._refs = [0] * num_blocks
        self._hash_of: dict[int, int] = {}  # block -> chain hash, for blocks holding a published prefix
        self._by_hash: dict[int, int] = {}  # chain hash -> block
        self._evictable: OrderedDict[int, None] = OrderedDict()  # cached, unreferenced; oldest first
        self._chains: dict[Sequence, list[int]] = {}  # chain hashes of live sequences' full prompt blocks
        self._published: dict[Sequence, int] = {}  # leading blocks of each sequence already published

    # --- capacity --------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        return len(self._free) + len(self._evictable)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    @property
    def num_cached(self) -> int:
        return len(self._by_hash)

    def can_allocate(self, num_blocks: int, *, admission: bool = False) -> bool:
        reserve = self.watermark_blocks if admission else 0
        return num_blocks <= self.num_free - reserve

    def ref_count(self, block: int) -> int:
        return self._refs[block]

    # --- lookup ------------------------------------------------------------------------------
    def _chain(self, seq: Sequence) -> list[int]:
        chain = self._chains.get(seq)
        if chain is None:
            chain = self._chains[seq] = chain_hashes(
                block_identities(seq, self.block_size, self.hash_block_tokens)
            )
        return chain

    def _match(self, seq: Sequence) -> list[int]:
        # At least one prompt token is always computed (its logits give the first output token),
        # so at most (prompt_len - 1) // block_size whole blocks can come from the cache.
        if seq.num_computed or seq.block_table:
            return []  # progress made elsewhere (or already admitted): nothing to claim
        limit = (seq.prompt_len - 1) // self.block_size
        found = []
        for h in self._chain(seq)[:limit]:
            block = self._by_hash.get(h)
            if block is None:
                break
            found.append(block)
        return found

    def prefix_match(self, seq: Sequence) -> int:
        return len(self._match(seq)) * self.block_size

    def blocks_to_admit(self, seq: Sequence, num_tokens: int) -> int:
        match = self._match(seq)
        fresh = max(0, blocks_for(num_tokens, self.block_size) - len(match))
        revived = sum(1 for b in match if self._refs[b] == 0)  # leave the evictable pool
        return fresh + revived

    # --- changes -----------------------------------------------------------------------------
    def claim_prefix(self, seq: Sequence) -> int:
        if seq.block_table:
            raise RuntimeError(f"sequence {seq.seq_id} already holds blocks; claim its prefix on admission")
        match = self._match(seq)
        for block in match:
            if self._refs[block] == 0:
                del self._evictable[block]
            self._refs[block] += 1
        seq.block_table = list(match)
        self._published[seq] = len(match)
        return len(match) * self.block_size

    def allocate(self, seq: Sequence, num_tokens: int) -> None:
        need = self.blocks_needed(seq, num_tokens)
        if need > self.num_free:
            raise RuntimeError(f"KV cache over capacity: need {need} blocks, {self.num_free} free")
        free, refs, table = self._free, self._refs, seq.block_table
        for _ in range(need):  # `_take`, inlined: this runs once per block of every sequence
            if free:
                block = free.popleft()
            else:
                block, _ = self._evictable.popitem(last=False)  # least recently freed
                del self._by_hash[self._hash_of.pop(block)]
            refs[block] = 1
            table.append(block)

    def free(self, seq: Sequence) -> None:
        # Tail blocks first, so that a prompt's later blocks are evicted before its shared start.
        refs, cached, evictable, free = self._refs, self._hash_of, self._evictable, self._free
        for block in reversed(seq.block_table):
            refs[block] -= 1
            if refs[block] == 0:
                if block in cached:
                    evictable[block] = None
                else:
                    free.append(block)
        seq.block_table = []
        self._chains.pop(seq, None)
        self._published.pop(seq, None)

    def cache_computed(self, seq: Sequence) -> None:
        done = min(seq.num_computed, seq.prompt_len) // self.block_size
        start = self._published.get(seq, 0)
        if done <= start:
            return
        chain = self._chain(seq)
        for j in range(start, min(done, len(chain))):
            block, h = seq.block_table[j], chain[j]
            if h not in self._by_hash and block not in self._hash_of:
                self._by_hash[h] = block
                self._hash_of[block] = h
        self._published[seq] = done

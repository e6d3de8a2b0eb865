"""Paged KV-cache block manager: which physical blocks each sequence owns.

Plain Python, shared by the simulator and the real engine (the engine uses the block ids as
indices into its KV tensors). The manager never hands out more blocks than it has; callers
check `can_allocate` first and preempt when it says no.
"""

from __future__ import annotations

from collections import deque

from simulator.scheduling.sequence import Sequence


def blocks_for(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int = 16, watermark: float = 0.01):
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        # Admissions keep this many blocks free so running sequences can still grow
        # (vLLM's watermark); decode growth may use them.
        self.watermark_blocks = int(watermark * num_blocks)
        self._free: deque[int] = deque(range(num_blocks))

    # --- queries ---------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def usage(self) -> float:
        return self.num_used / self.num_blocks

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        """Extra blocks `seq` needs so that its table covers `num_tokens` tokens."""
        return max(0, blocks_for(num_tokens, self.block_size) - len(seq.block_table))

    def can_allocate(self, num_blocks: int, *, admission: bool = False) -> bool:
        reserve = self.watermark_blocks if admission else 0
        return num_blocks <= len(self._free) - reserve

    def fits_ever(self, num_tokens: int) -> bool:
        """Whether a sequence of this length could fit at all, with the cache otherwise empty."""
        return blocks_for(num_tokens, self.block_size) <= self.num_blocks - self.watermark_blocks

    # --- changes ---------------------------------------------------------------------------
    def allocate(self, seq: Sequence, num_tokens: int) -> None:
        """Grow `seq`'s block table to cover `num_tokens` tokens."""
        need = self.blocks_needed(seq, num_tokens)
        if need > len(self._free):
            raise RuntimeError(f"KV cache over capacity: need {need} blocks, {len(self._free)} free")
        for _ in range(need):
            seq.block_table.append(self._free.popleft())

    def free(self, seq: Sequence) -> None:
        self._free.extend(seq.block_table)
        seq.block_table = []

    def prefix_match(self, seq: Sequence) -> int:
        """Prompt tokens already cached for this sequence (none without prefix caching)."""
        return 0

    # --- prefix-caching hooks (no-ops here; see PrefixCachingBlockManager) ------------------
    def blocks_to_admit(self, seq: Sequence, num_tokens: int) -> int:
        """Free blocks that admitting the waiting `seq` to cover `num_tokens` tokens would use."""
        return self.blocks_needed(seq, num_tokens)

    def claim_prefix(self, seq: Sequence) -> int:
        """Start `seq`'s block table with its cached prefix blocks; returns the tokens they hold."""
        return 0

    def cache_computed(self, seq: Sequence) -> None:
        """Called after a step computed tokens of `seq`, so that full blocks can be shared."""

    def cache_blocks(self, seq: Sequence, num_tokens: int) -> None:
        """Called when a step is scheduled to compute `seq` up to `num_tokens` tokens (vLLM V1
        publishes full blocks then, see v1_prefix_cache.py)."""

"""Host (CPU) memory holding the KV blocks of sequences preempted by swapping.

Swapping out copies a sequence's device blocks to host blocks and frees the device blocks;
swapping in allocates fresh device blocks and copies the data back. Each copy is returned as
(source block, destination block) pairs, which the engine executes and the simulator charges
at the host link's bandwidth. The sequence keeps its progress: nothing is computed again.
"""

from __future__ import annotations

from collections import deque

from simulator.scheduling.kv_blocks import BlockManager
from simulator.scheduling.sequence import Sequence


class HostSwapSpace:
    def __init__(self, num_blocks: int = 0):
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        self.num_blocks = num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._tables: dict[Sequence, list[int]] = {}
        self.num_swap_outs = 0
        self.num_swap_ins = 0

    @property
    def num_free(self) -> int:
        return len(self._free)

    def can_hold(self, seq: Sequence) -> bool:
        return 0 < len(seq.block_table) <= len(self._free)

    def blocks_held(self, seq: Sequence) -> int:
        return len(self._tables[seq])

    def swap_out(self, seq: Sequence, blocks: BlockManager) -> list[tuple[int, int]]:
        """Move `seq`'s KV to host memory. Returns (device block, host block) copies."""
        host = [self._free.popleft() for _ in seq.block_table]
        copies = list(zip(seq.block_table, host))
        blocks.free(seq)
        self._tables[seq] = host
        self.num_swap_outs += 1
        return copies

    def swap_in(self, seq: Sequence, blocks: BlockManager) -> list[tuple[int, int]]:
        """Bring `seq`'s KV back into fresh device blocks. Returns (host block, device block) copies;
        the caller has checked that the device has room."""
        host = self._tables.pop(seq)
        blocks.allocate(seq, len(host) * blocks.block_size)
        self._free.extend(host)
        self.num_swap_ins += 1
        return list(zip(host, seq.block_table))

    def release(self, seq: Sequence) -> None:
        """Forget a swapped sequence that will not resume (aborted)."""
        self._free.extend(self._tables.pop(seq, []))

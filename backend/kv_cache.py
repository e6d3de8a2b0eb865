"""The paged KV cache: K and V tensors cut into fixed-size blocks.

Which blocks belong to which sequence is decided elsewhere (the scheduler's block manager); this
class only holds the tensors. Token `pos` of a sequence with block table `table` lives in slot
`table[pos // block_size] * block_size + pos % block_size`.
"""

from __future__ import annotations

import torch


class PagedKVCache:
    """Per layer, K and V shaped [num_blocks, block_size, num_kv_heads, head_dim].

    All layers share one tensor for K and one for V (layer is the leading dimension), so the cache
    is two allocations whatever the depth of the model.
    """

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ):
        if min(num_layers, num_blocks, block_size, num_kv_heads, head_dim) <= 0:
            raise ValueError("every dimension of the KV cache must be positive")
        self.num_layers = num_layers
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = torch.device(device)
        shape = (num_layers, num_blocks, block_size, num_kv_heads, head_dim)
        # Zeros, not empty: padded positions read by batched attention must hold finite values
        # (they get zero weight, and 0 * NaN would still be NaN).
        self.k = torch.zeros(shape, dtype=dtype, device=self.device)
        self.v = torch.zeros(shape, dtype=dtype, device=self.device)
        # Flat per-slot views, the form writes use: [num_blocks * block_size, kv_heads, head_dim].
        self._k_slots = [self.k[i].view(-1, num_kv_heads, head_dim) for i in range(num_layers)]
        self._v_slots = [self.v[i].view(-1, num_kv_heads, head_dim) for i in range(num_layers)]

    @classmethod
    def for_model(cls, spec, num_blocks: int, block_size: int = 16, dtype=torch.float32, device="cpu"):
        """A cache shaped for a ModelSpec."""
        return cls(spec.num_layers, num_blocks, block_size, spec.num_kv_heads, spec.head_dim, dtype, device)

    # --- sizes ------------------------------------------------------------------------------
    @property
    def num_slots(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def bytes_per_token(self) -> int:
        """K and V of one token across all layers."""
        element = torch.finfo(self.dtype).bits // 8
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * element

    @property
    def bytes_per_block(self) -> int:
        return self.bytes_per_token * self.block_size

    @property
    def total_bytes(self) -> int:
        return self.bytes_per_block * self.num_blocks

    # --- access -----------------------------------------------------------------------------
    def write(self, layer: int, slot_mapping: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store new tokens' K and V ([T, kv_heads, head_dim]) into their slots ([T] int64)."""
        self._k_slots[layer].index_copy_(0, slot_mapping, k)
        self._v_slots[layer].index_copy_(0, slot_mapping, v)

    def gather(self, layer: int, block_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of whole blocks: block_ids [..., n] gives [..., n * block_size, kv_heads, head_dim]."""
        shape = (
            *block_ids.shape[:-1],
            block_ids.shape[-1] * self.block_size,
            self.num_kv_heads,
            self.head_dim,
        )
        flat = block_ids.reshape(-1)
        return self.k[layer].index_select(0, flat).view(shape), self.v[layer].index_select(0, flat).view(
            shape
        )

    def read(self, layer: int, block_table: list[int], num_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `num_tokens` K and V entries of one sequence, [num_tokens, kv_heads, head_dim]."""
        blocks = -(-num_tokens // self.block_size)
        ids = torch.tensor(block_table[:blocks], dtype=torch.long, device=self.device)
        k, v = self.gather(layer, ids)
        return k[:num_tokens], v[:num_tokens]

    def __repr__(self) -> str:
        return (
            f"PagedKVCache(layers={self.num_layers}, blocks={self.num_blocks}x{self.block_size}, "
            f"kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, dtype={self.dtype}, "
            f"{self.total_bytes / 2**20:.1f} MiB)"
        )

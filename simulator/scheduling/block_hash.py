"""Chained block hashes: the prefix-cache name of each full KV block.

A block's hash covers its own contents and its parent's hash, so equal hashes mean equal
prefixes, whatever the block's position. vLLM V1 names blocks this way (vllm/v1/core/
kv_cache_utils.py `hash_block_tokens`, v0.33.0: SHA-256 of (parent hash, token ids, extra keys)
seeded with a fixed string). Here the hash is SHA-256 of a canonical text form, cut to 64 bits:
the same in every process and on every machine, unlike Python's `hash` of strings, so the
simulator and the real engine name the same tokens alike.

A block's *identity* (what is hashed with the parent) is a tuple of ints and strings: its token
ids on the engine, or trace hash ids on the simulator (see prefix_cache.block_identities).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

ROOT_HASH = int.from_bytes(hashlib.sha256(b"llmsim-prefix-cache-root").digest()[:8], "little")


def hash_block(parent: int, identity: tuple) -> int:
    """The hash of a block holding `identity` after the block whose hash is `parent`."""
    data = repr((parent, identity)).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little")


def chain_hashes(identities: Iterable[tuple], parent: int = ROOT_HASH) -> list[int]:
    """The chained hash of each block in order, starting after `parent`."""
    out = []
    for identity in identities:
        parent = hash_block(parent, identity)
        out.append(parent)
    return out


def token_block_hashes(token_ids: Sequence[int], block_size: int) -> list[int]:
    """Chained hashes of the full `block_size`-token blocks of `token_ids` (a partial last block
    has no hash: it cannot be shared until it is full)."""
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    full = len(token_ids) // block_size
    return chain_hashes(tuple(token_ids[j * block_size : (j + 1) * block_size]) for j in range(full))

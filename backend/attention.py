"""One engine step's batch, the index tensors derived from it, and attention over the paged KV cache.

A step runs any mix of prefill chunks (many new tokens, maybe after a cached prefix) and decodes
(one new token). The new tokens of all sequences are concatenated into one [T, hidden] tensor so
every linear layer is a single matmul. Only attention looks at sequences separately:

- decodes are batched: each one's blocks are gathered into a padded [B, L, kv_heads, head_dim]
  tensor and one scaled_dot_product_attention call runs them all, with a length mask;
- each prefill chunk is one scaled_dot_product_attention call, causal with an offset when part of
  the sequence is already cached (query i, at position cached + i, sees keys 0 .. cached + i).

Grouped-query attention never copies K/V per query head: SDPA's `enable_gqa` shares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from itertools import chain

import torch
import torch.nn.functional as F

from backend import native
from backend.kv_cache import PagedKVCache


@dataclass
class StepBatch:
    """What the engine asks the model to compute in one step, one entry per sequence.

    `token_ids[i]` are sequence i's new tokens, `cached_tokens[i]` how many of its tokens already
    have K/V in the cache (the new ones take positions from there on), `block_tables[i]` the ids
    of the cache blocks it owns, in order (at least enough to hold cached + new tokens).
    """

    token_ids: list[list[int]]
    cached_tokens: list[int]
    block_tables: list[list[int]]

    def __post_init__(self):
        if not (len(self.token_ids) == len(self.cached_tokens) == len(self.block_tables)):
            raise ValueError(
                f"StepBatch needs one entry per sequence in each list; got {len(self.token_ids)} token "
                f"lists, {len(self.cached_tokens)} cached counts, {len(self.block_tables)} block tables"
            )
        if not self.token_ids:
            raise ValueError("StepBatch is empty")

    @classmethod
    def of(cls, seqs) -> StepBatch:
        """From (new_token_ids, cached_tokens, block_table) triples."""
        token_ids, cached, tables = zip(*seqs)
        return cls(list(token_ids), list(cached), list(tables))

    @property
    def num_seqs(self) -> int:
        return len(self.token_ids)

    @property
    def num_tokens(self) -> int:
        return sum(len(t) for t in self.token_ids)


@dataclass
class PrefillChunk:
    """One sequence with several new tokens in this step."""

    rows: slice  # its tokens in the step's flattened [T, ...] tensors
    cached: int
    blocks: torch.Tensor | None  # [num_blocks] covering cached + new tokens; None when nothing is cached
    mask: torch.Tensor | None  # [new, cached + new] bool, True where a query may attend


@dataclass
class StepMetadata:
    """Index tensors computed once per step and shared by every layer."""

    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    slot_mapping: torch.Tensor  # [T] physical KV slot of each new token
    last_token_index: torch.Tensor  # [num_seqs] row of each sequence's last new token
    decode_rows: slice | torch.Tensor | None  # rows of single-token sequences, None if there are none
    decode_blocks: torch.Tensor | None  # [B, max_blocks] padded block tables of those sequences
    decode_lengths: torch.Tensor | None  # [B] keys of each of those sequences, the new token's included
    prefills: list[PrefillChunk]
    block_size: int

    @cached_property
    def decode_mask(self) -> torch.Tensor | None:
        """[B, 1, 1, max_blocks * block_size] bool, True where a key exists: built on first use
        (torch's attention; the native kernel reads the lengths)."""
        if self.decode_lengths is None:
            return None
        slots = torch.arange(self.decode_blocks.shape[1] * self.block_size, device=self.decode_lengths.device)
        return (slots < self.decode_lengths[:, None])[:, None, None, :]

    @property
    def all_decode(self) -> bool:
        return not self.prefills


def prepare_step(batch: StepBatch, block_size: int, device: torch.device) -> StepMetadata:
    """Turn a StepBatch's lists into the index tensors the model needs (built on CPU, moved once)."""
    counts = [len(t) for t in batch.token_ids]
    needed = []
    for i, (n, cached, table) in enumerate(zip(counts, batch.cached_tokens, batch.block_tables)):
        if n == 0:
            raise ValueError(f"sequence {i} of the step has no new tokens")
        blocks = -(-(cached + n) // block_size)
        if len(table) < blocks:
            raise ValueError(
                f"sequence {i}: {cached} cached + {n} new tokens need {blocks} blocks of {block_size}, "
                f"its block table has {len(table)}"
            )
        needed.append(blocks)
    num_tokens = sum(counts)
    if num_tokens == len(counts):
        return _prepare_decode(batch, needed, block_size, device)
    width = max(needed)
    tables = torch.tensor([list(t[:b]) + [0] * (width - b) for t, b in zip(batch.block_tables, needed)])

    counts_t = torch.tensor(counts)
    cached_t = torch.tensor(batch.cached_tokens)
    ends = torch.cumsum(counts_t, 0)
    starts = ends - counts_t
    seq_of_token = torch.repeat_interleave(torch.arange(len(counts)), counts_t)
    positions = cached_t[seq_of_token] + torch.arange(num_tokens) - starts[seq_of_token]
    slots = tables[seq_of_token, positions // block_size] * block_size + positions % block_size

    decode = [i for i, n in enumerate(counts) if n == 1]
    decode_rows = decode_blocks = decode_lengths = None
    if decode:
        rows = starts[decode]
        contiguous = int(rows[-1] - rows[0]) == len(decode) - 1
        decode_rows = slice(int(rows[0]), int(rows[-1]) + 1) if contiguous else rows.to(device)
        dec_width = max(needed[i] for i in decode)
        decode_blocks = tables[decode, :dec_width].to(device)
        decode_lengths = (cached_t[decode] + 1).to(device)

    prefills = []
    for i, n in enumerate(counts):
        if n == 1:
            continue
        cached, start = batch.cached_tokens[i], int(starts[i])
        blocks = mask = None
        if cached:
            blocks = tables[i, : needed[i]].to(device)
            query_pos = torch.arange(cached, cached + n)
            mask = (torch.arange(cached + n)[None, :] <= query_pos[:, None]).to(device)
        prefills.append(PrefillChunk(slice(start, start + n), cached, blocks, mask))

    input_ids = torch.tensor(list(chain.from_iterable(batch.token_ids)))
    return StepMetadata(
        input_ids=input_ids.to(device),
        positions=positions.to(device),
        slot_mapping=slots.to(device),
        last_token_index=(ends - 1).to(device),
        decode_rows=decode_rows,
        decode_blocks=decode_blocks,
        decode_lengths=decode_lengths,
        prefills=prefills,
        block_size=block_size,
    )


def _prepare_decode(
    batch: StepBatch, needed: list[int], block_size: int, device: torch.device
) -> StepMetadata:
    """prepare_step for a step of decodes only (one new token per sequence), from Python lists:
    the common step, and at batch 1 its index tensors otherwise cost as much as its attention."""
    num_seqs, cached = batch.num_seqs, batch.cached_tokens
    width = max(needed)
    tables = [list(t[:b]) + [0] * (width - b) for t, b in zip(batch.block_tables, needed)]
    slots = [t[c // block_size] * block_size + c % block_size for t, c in zip(tables, cached)]
    return StepMetadata(
        input_ids=torch.tensor([t[0] for t in batch.token_ids], device=device),
        positions=torch.tensor(cached, device=device),
        slot_mapping=torch.tensor(slots, device=device),
        last_token_index=torch.arange(num_seqs, device=device),
        decode_rows=slice(0, num_seqs),
        decode_blocks=torch.tensor(tables, device=device),
        decode_lengths=torch.tensor(cached, device=device) + 1,
        prefills=[],
        block_size=block_size,
    )


def paged_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, step: StepMetadata, kv: PagedKVCache, layer: int
) -> torch.Tensor:
    """Attention of the step's new tokens over everything their sequences have cached.

    q [T, heads, head_dim]; k, v [T, kv_heads, head_dim] are the new tokens' keys and values, which
    must already be written to `kv`. Returns [T, heads, head_dim].
    """
    if step.all_decode:
        return _decode_attention(q, step, kv, layer)
    out = torch.empty_like(q)
    if step.decode_rows is not None:
        out[step.decode_rows] = _decode_attention(q[step.decode_rows], step, kv, layer)
    for chunk in step.prefills:
        qc = q[chunk.rows].transpose(0, 1).unsqueeze(0)  # [1, heads, n, d]
        if chunk.blocks is None:  # nothing cached: the new keys are the whole context
            kc, vc = k[chunk.rows], v[chunk.rows]
            o = F.scaled_dot_product_attention(
                qc,
                kc.transpose(0, 1).unsqueeze(0),
                vc.transpose(0, 1).unsqueeze(0),
                is_causal=True,
                enable_gqa=True,
            )
        else:
            context = chunk.mask.shape[1]
            kc, vc = kv.gather(layer, chunk.blocks)
            kc, vc = kc[:context].transpose(0, 1).unsqueeze(0), vc[:context].transpose(0, 1).unsqueeze(0)
            o = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=chunk.mask, enable_gqa=True)
        out[chunk.rows] = o[0].transpose(0, 1)
    return out


def _decode_attention(q: torch.Tensor, step: StepMetadata, kv: PagedKVCache, layer: int) -> torch.Tensor:
    """Single-token queries [B, heads, d] against their cached contexts, in one batched call."""
    native_ok = (
        q.device.type == "cpu" and q.dtype == torch.float32 and q.shape[-1] % native.HEAD_DIM_MULTIPLE == 0
    )
    if native_ok and native.available():
        return native.paged_decode_attention(
            q, kv.k[layer], kv.v[layer], step.decode_blocks, step.decode_lengths
        )
    keys, values = kv.gather(layer, step.decode_blocks)  # [B, L, kv_heads, d]
    if q.device.type == "cpu" and q.dtype != torch.float32:
        # torch's CPU flash kernel is several times slower in bf16/fp16 than two plain matmuls here.
        b, h, d = q.shape
        groups = h // keys.shape[2]
        scores = torch.matmul(q.view(b, -1, groups, d), keys.permute(0, 2, 3, 1)).float() * d**-0.5
        probs = torch.softmax(scores.masked_fill_(~step.decode_mask, float("-inf")), dim=-1).to(q.dtype)
        return torch.matmul(probs, values.transpose(1, 2)).view(b, h, d)
    o = F.scaled_dot_product_attention(
        q.unsqueeze(2),
        keys.transpose(1, 2),
        values.transpose(1, 2),
        attn_mask=step.decode_mask,
        enable_gqa=True,
    )
    return o.squeeze(2)

"""The shapes `llmsim profile` measures: which steps, in which regions, up to which limits.

Plain Python (no torch), so tests and other tools can build the same sweep without a device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from simulator.scheduling import BlockManager, Sequence, Step
from simulator.scheduling.kv_blocks import blocks_for


@dataclass(frozen=True)
class SweepPlan:
    prefill_new: tuple[int, ...]
    prefill_cached: tuple[int, ...]
    decode_batches: tuple[int, ...]
    decode_contexts: tuple[int, ...]
    ragged_batches: tuple[int, ...]
    mixed_chunks: tuple[int, ...]
    mixed_batches: tuple[int, ...]
    mixed_contexts: tuple[int, ...]
    warmup: int
    repeats: int


def _geometric(top: int, per_octave: int) -> tuple[int, ...]:
    values = np.unique(np.round(2 ** np.arange(1, np.log2(top) + 1e-9, 1 / per_octave)).astype(int))
    return tuple(int(v) for v in values)


FULL = SweepPlan(
    prefill_new=_geometric(8192, 2),  # 2, 3, 4, 6, 8, 11, 16, ... clipped to the maximum
    prefill_cached=(0, 128, 512, 1024),
    decode_batches=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256),
    decode_contexts=(16, 128, 512, 1024, 2047),
    ragged_batches=(8, 32, 64),
    mixed_chunks=(16, 128, 512),
    mixed_batches=(4, 16, 64),
    mixed_contexts=(128, 1024),
    warmup=1,
    repeats=5,
)
QUICK = SweepPlan(
    prefill_new=(2, 8, 32, 128, 512),
    prefill_cached=(0, 256),
    decode_batches=(1, 4, 16, 32),
    decode_contexts=(16, 256, 1024),
    ragged_batches=(16,),
    mixed_chunks=(32, 256),
    mixed_batches=(4, 16),
    mixed_contexts=(256,),
    warmup=1,
    repeats=3,
)


def with_routing_range(plan: SweepPlan, num_experts: int, top_k: int) -> SweepPlan:
    """The plan with every token count at which a mixture of experts still reaches new experts.

    A step of T tokens routed to k of E experts each touches E (1 - (1 - k/E)^T) distinct experts
    on average, so its weight reads climb from k experts to all E over the first few dozen tokens
    and are flat after. Decode batches and prefill chunks of every size up to where 95% of the
    experts are reached pin that curve; past it the dense grid's sizes suffice.
    """
    if not num_experts:
        return plan
    miss = 1.0 - top_k / num_experts
    reach = int(np.ceil(np.log(0.05) / np.log(miss))) if miss > 0 else 1
    dense = tuple(range(1, reach + 1))
    return replace(
        plan,
        decode_batches=tuple(sorted({*plan.decode_batches, *dense})),
        prefill_new=tuple(sorted({*plan.prefill_new, *dense[1:]})),
    )


@dataclass(frozen=True)
class Point:
    region: str
    rows: tuple[tuple[int, int], ...]  # (new, cached) per sequence


def sweep_points(
    plan: SweepPlan, *, max_tokens: int, max_batch: int, max_context: int, kv_blocks: int, block_size: int
) -> list[Point]:
    """Every step shape of the plan that fits the limits (tokens, rows, context, KV blocks)."""

    def fits(rows) -> bool:
        return (
            sum(n for n, _ in rows) <= max_tokens
            and len(rows) <= max_batch
            and max(n + c for n, c in rows) <= max_context
            and sum(blocks_for(n + c, block_size) for n, c in rows) <= kv_blocks
        )

    contexts = sorted({min(c, max_context - 1) for c in plan.decode_contexts})
    candidates: list[Point] = []
    for cached in plan.prefill_cached:
        news = plan.prefill_new if cached == 0 else plan.prefill_new[::2]  # thinner grid on a cache
        news = sorted({*news, max_tokens}) if cached == 0 else news  # the largest step is measured
        candidates += [Point("prefill", ((n, cached),)) for n in news]
    for context in contexts:
        candidates += [Point("decode", ((1, context),) * b) for b in plan.decode_batches]
    for b in plan.ragged_batches:  # contexts spread evenly from short to the longest
        spread = np.linspace(min(contexts), max(contexts), b).round().astype(int)
        candidates.append(Point("decode", tuple((1, int(c)) for c in spread)))
    for chunk in plan.mixed_chunks:
        for context in plan.mixed_contexts:
            for b in plan.mixed_batches:
                candidates.append(Point("mixed", ((chunk, 0),) + ((1, context),) * b))
    seen, points = set(), []
    for p in candidates:
        if p.rows not in seen and fits(p.rows):
            seen.add(p.rows)
            points.append(p)
    return points


def build_step(rows, num_blocks: int, block_size: int) -> Step:
    """A step over synthetic sequences whose KV blocks come from a fresh block manager."""
    blocks = BlockManager(num_blocks, block_size, watermark=0.0)
    seqs = []
    for i, (new, cached) in enumerate(rows):
        # prompt ends with this step's tokens: every row samples, as a decode or a final chunk does
        seq = Sequence(seq_id=i, prompt_len=cached + new, max_output=1, arrival=0.0)
        blocks.allocate(seq, cached + new)
        seqs.append(seq)
    return Step(seqs, [n for n, _ in rows], [c for _, c in rows])

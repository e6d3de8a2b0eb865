"""Which layer is which: dense or MoE, full or sliding attention, and which pipeline stage holds it.

The catalog gives counts, not patterns, so the pattern is fixed here: dense layers first (as
DeepSeek's first_k_dense_replace), sliding layers interleaved evenly with the full ones, the
first layer sliding (gpt-oss alternates sliding/full from layer 0; Llama 4 has three chunked
layers then a global one). Pipeline stages split layers as vLLM's `get_pp_indices` does: equal
shares, the remainder added to the stages before the last.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from simulator.spec.model import ModelSpec


@dataclass(frozen=True)
class LayerCounts:
    """How many layers of each kind one pipeline stage holds."""

    dense_full: int = 0
    dense_sliding: int = 0
    moe_full: int = 0
    moe_sliding: int = 0
    first: bool = True  # holds the embedding (and a vision encoder)
    last: bool = True  # holds the final norm and the LM head

    @property
    def layers(self) -> int:
        return self.dense_full + self.dense_sliding + self.moe_full + self.moe_sliding

    @property
    def moe(self) -> int:
        return self.moe_full + self.moe_sliding

    @property
    def dense(self) -> int:
        return self.dense_full + self.dense_sliding

    @property
    def sliding(self) -> int:
        return self.dense_sliding + self.moe_sliding

    @property
    def full(self) -> int:
        return self.dense_full + self.moe_full


def is_sliding(model: ModelSpec, layer: int) -> bool:
    s, n = model.num_sliding_window_layers, model.num_layers
    return ceil((layer + 1) * s / n) > ceil(layer * s / n)


def is_moe(model: ModelSpec, layer: int) -> bool:
    return model.is_moe and layer >= model.first_dense_layers


def stage_sizes(num_layers: int, pp: int) -> list[int]:
    sizes = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        sizes[-i] += 1
    return sizes


def stages(model: ModelSpec, pp: int = 1) -> list[LayerCounts]:
    """The layer counts of each pipeline stage, first to last."""
    out, start = [], 0
    sizes = stage_sizes(model.num_layers, pp)
    for index, size in enumerate(sizes):
        counts = {"dense_full": 0, "dense_sliding": 0, "moe_full": 0, "moe_sliding": 0}
        for layer in range(start, start + size):
            kind = ("moe_" if is_moe(model, layer) else "dense_") + ("sliding" if is_sliding(model, layer) else "full")
            counts[kind] += 1
        out.append(LayerCounts(**counts, first=index == 0, last=index == len(sizes) - 1))
        start += size
    return out

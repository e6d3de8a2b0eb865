"""The kernels one tensor-parallel rank runs per layer, at their per-rank shapes.

Sharding follows vLLM's Llama implementation (and simulator.spec.memory): q/k/v are one fused
column-parallel GEMM, gate and up another, o and down are row-parallel and each followed by an
all-reduce of the layer's activations; the embedding is vocabulary-parallel (one all-reduce) and
the LM head column-parallel (its logits gathered across ranks). KV heads are split across ranks,
or replicated one per rank when tp exceeds their number.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.spec import ModelSpec
from simulator.spec.memory import ACTIVATION_BYTES, kv_heads_per_rank


@dataclass(frozen=True)
class Gemm:
    """y[M, n] = x[M, k] @ W[k, n] with M = the step's tokens (or sequences for the LM head)."""

    name: str
    n: int
    k: int


@dataclass(frozen=True)
class RankShapes:
    model: str
    tp: int
    num_layers: int
    hidden: int
    heads: int  # query heads on this rank
    kv_heads: int  # KV heads on this rank
    head_dim: int
    intermediate: int  # MLP width on this rank
    vocab: int  # LM-head columns on this rank
    layer_gemms: tuple[Gemm, ...]
    lm_head: Gemm

    @property
    def allreduce_bytes_per_token(self) -> float:
        """Bytes of one all-reduce per token: the hidden activations in 16 bits."""
        return self.hidden * ACTIVATION_BYTES

    @property
    def allreduces_per_step(self) -> int:
        """After attention and after the MLP in every layer, plus the embedding's."""
        return 2 * self.num_layers + 1 if self.tp > 1 else 0


def rank_shapes(model: ModelSpec, tp: int) -> RankShapes:
    """Per-rank shapes; raises ConfigError for a tp the model cannot be split by."""
    kv = kv_heads_per_rank(model, tp)  # validates tp
    heads = model.num_heads // tp
    d, h = model.head_dim, model.hidden_size
    inter = model.intermediate_size // tp
    vocab = -(-model.vocab_size // tp)
    gemms = (
        Gemm("qkv", (heads + 2 * kv) * d, h),
        Gemm("o", h, heads * d),
        Gemm("gate_up", 2 * inter, h),
        Gemm("down", h, inter),
    )
    return RankShapes(
        model=model.name, tp=tp, num_layers=model.num_layers, hidden=h, heads=heads, kv_heads=kv,
        head_dim=d, intermediate=inter, vocab=vocab, layer_gemms=gemms, lm_head=Gemm("lm_head", vocab, h),
    )


def valid_tp_degrees(model: ModelSpec, candidates=(1, 2, 4, 8)) -> list[int]:
    """The tensor-parallel degrees among `candidates` the model can be split by."""
    from simulator.common.errors import ConfigError

    out = []
    for tp in candidates:
        try:
            kv_heads_per_rank(model, tp)
        except ConfigError:
            continue
        if model.intermediate_size % tp == 0:
            out.append(tp)
    return out


def gemm_query_shape(n: int, k: int, n_max: int) -> tuple[int, int, int]:
    """(n per block, k, blocks): a GEMM wider than the widest measured N runs as equal column
    blocks, which splits its work exactly (each block is an independent GEMM of the same M, K)."""
    blocks = max(1, -(-n // n_max))
    return -(-n // blocks), k, blocks

"""Bytes one GPU holds for its pipeline stage: weight shards and KV cache per token.

Sharding follows vLLM: q/o (GQA) or q_b/kv_b/o (MLA) split over the tp ranks, MLA's down
projections q_a and kv_a replicated; KV heads split or, past their count, replicated one per
rank; an MLA latent cannot be split by heads, so every tp rank caches all of it. Dense MLPs and
shared experts follow attention (1/tp each, replicated over dp groups); routed experts are spread
over ep ranks with each expert 1/moe_tp wide; routers, norms, biases and sinks are replicated.
The embedding (and a vision encoder) sit on the first stage, the LM head on the last, both
vocabulary-parallel over tp. Embeddings, norms, routers, biases and the encoder stay in 16 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.common.errors import ConfigError
from simulator.spec.dtypes import dtype_bytes
from simulator.spec.layers import LayerCounts, stages
from simulator.spec.model import ModelSpec
from simulator.spec.parallel import Parallelism

HIGH_BYTES = 2.0  # 16-bit tensors


def kv_heads_per_rank(model: ModelSpec, tp: int) -> int:
    """KV heads one rank holds; raises ConfigError for a tp the model cannot be split by."""
    if tp < 1 or model.num_heads % tp:
        raise ConfigError(
            f"tensor parallelism tp={tp} must be a positive divisor of {model.name}'s "
            f"num_heads ({model.num_heads})"
        )
    if model.num_kv_heads % tp == 0:
        return model.num_kv_heads // tp
    if tp % model.num_kv_heads == 0:
        return 1  # replicated, as vLLM does when tp exceeds the KV head count
    raise ConfigError(
        f"tp={tp} must divide {model.name}'s num_kv_heads ({model.num_kv_heads}) or be a multiple of it"
    )


def attention_params_per_rank(model: ModelSpec, tp: int) -> float:
    """One layer's attention projection weights on one tensor-parallel rank."""
    if model.uses_mla:
        h, heads, rope = model.hidden_size, model.num_heads, model.qk_rope_head_dim
        qk = model.head_dim + rope
        replicated = h * (model.kv_lora_rank + rope) + (h * model.q_lora_rank if model.q_lora_rank else 0)
        q_b = (model.q_lora_rank or h) * heads * qk
        split = q_b + model.kv_lora_rank * heads * (model.head_dim + model.v_head_dim) + heads * model.v_head_dim * h
        return replicated + split / tp
    kv_heads = kv_heads_per_rank(model, tp)
    q_and_o = 2 * model.hidden_size * model.num_heads * model.head_dim / tp
    k_and_v = 2 * model.hidden_size * kv_heads * model.head_dim
    bias = (model.num_heads / tp + 2 * kv_heads) * model.head_dim if model.attention_bias else 0
    return q_and_o + k_and_v + bias


@dataclass(frozen=True)
class StageWeights:
    """Parameters one rank of a stage holds, by storage precision."""

    linear: float  # stored in the weight dtype
    experts: float  # routed experts, stored in the expert dtype
    high: float  # 16-bit

    def bytes(self, weight_dtype: str, expert_dtype: str) -> float:
        out = self.linear * dtype_bytes(weight_dtype) + self.high * HIGH_BYTES
        return out + self.experts * dtype_bytes(expert_dtype) if self.experts else out


def stage_weights(model: ModelSpec, layout: Parallelism, stage: LayerCounts, *, tied_head_bytes: bool = True
                  ) -> StageWeights:  # fmt: skip
    """Parameters one rank of `stage` holds. A tied LM head is stored with the embedding on the
    first stage; a last stage without it keeps its own 16-bit copy (counted as high precision)."""
    tp = layout.tp
    linear = stage.layers * attention_params_per_rank(model, tp)
    linear += stage.dense * model.mlp_params_per_layer / tp + stage.moe * model.shared_expert_params / tp
    experts = stage.moe * (model.num_experts // layout.ep) * model.expert_params / layout.moe_tp
    high = stage.layers * (2 * model.hidden_size + model.attention_extra_params_per_layer)
    high += stage.moe * model.router_params
    if stage.first:
        high += (model.embedding_params + model.encoder_params) / tp
    if stage.last:
        high += model.hidden_size  # final norm
        if not model.tie_embeddings:
            linear += model.lm_head_params / tp
        elif not stage.first:
            high += model.lm_head_params / tp
    return StageWeights(linear, experts, high)


def stage_kv_bytes_per_token(model: ModelSpec, layout: Parallelism, stage: LayerCounts, kv_dtype: str,
                             sliding: bool) -> float:  # fmt: skip
    """KV bytes one rank of `stage` holds per token in its full (sliding=False) or sliding layers."""
    layers = stage.sliding if sliding else stage.full
    if model.uses_mla:
        return layers * model.kv_bytes_per_token_per_layer(kv_dtype)
    return 2 * layers * kv_heads_per_rank(model, layout.tp) * model.head_dim * dtype_bytes(kv_dtype)


def all_stages(model: ModelSpec, layout: Parallelism) -> list[LayerCounts]:
    return stages(model, layout.pp)

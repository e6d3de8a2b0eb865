"""A model's architecture as numbers, and the quantities derived from them.

Only primary numbers are typed into the catalog (layer counts, widths, vocabulary); parameter
counts, weight bytes, FLOPs and KV bytes per token are computed here, so a catalog entry cannot
contradict itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.common.errors import ConfigError
from simulator.spec.dtypes import dtype_bytes


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer: GQA or MLA attention, a gated MLP or a mixture of experts.

    Mixture of experts (0 experts: every layer has the dense MLP of `intermediate_size`): each MoE
    layer routes every token to `num_experts_per_token` of `num_experts` experts, each a gated MLP
    of `moe_intermediate_size`, plus shared experts every token passes through
    (`shared_expert_intermediate_size` in total); the first `first_dense_layers` layers keep the
    dense MLP. Multi-head latent attention (DeepSeek, `kv_lora_rank` > 0): keys and values are
    compressed to a latent of `kv_lora_rank` plus a `qk_rope_head_dim` rotary part, which is what
    the KV cache holds. Sliding-window attention: `num_sliding_window_layers` layers attend to the
    last `sliding_window` tokens only.
    """

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    max_context: int
    head_dim: int = 0  # 0 means hidden_size // num_heads
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = False
    attention_bias: bool = False  # Qwen2 puts biases on the q, k and v projections
    # mixture of experts
    num_experts: int = 0  # routed experts per MoE layer
    num_experts_per_token: int = 0  # top-k
    moe_intermediate_size: int = 0  # one routed expert's gated-MLP width
    shared_expert_intermediate_size: int = 0  # all shared experts together
    first_dense_layers: int = 0  # leading layers with the dense MLP
    # multi-head latent attention
    kv_lora_rank: int = 0
    q_lora_rank: int = 0  # 0: queries are not compressed
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0  # 0: head_dim
    # sliding-window attention and attention sinks
    sliding_window: int = 0
    num_sliding_window_layers: int = 0
    attention_sinks: bool = False
    source: str = ""

    def __post_init__(self):
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.v_head_dim == 0:
            object.__setattr__(self, "v_head_dim", self.head_dim)
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"model {self.name!r}: num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )
        if self.num_experts and not (
            1 <= self.num_experts_per_token <= self.num_experts and self.moe_intermediate_size > 0
        ):
            raise ConfigError(
                f"model {self.name!r}: with num_experts {self.num_experts}, num_experts_per_token must be in "
                f"1..{self.num_experts} (got {self.num_experts_per_token}) and moe_intermediate_size > 0 "
                f"(got {self.moe_intermediate_size})"
            )
        if not 0 <= self.first_dense_layers <= self.num_layers:
            raise ConfigError(f"model {self.name!r}: first_dense_layers must be in 0..{self.num_layers}")
        if not 0 <= self.num_sliding_window_layers <= self.num_layers or (
            self.num_sliding_window_layers and self.sliding_window < 1
        ):
            raise ConfigError(
                f"model {self.name!r}: num_sliding_window_layers must be in 0..{self.num_layers}, with "
                "sliding_window >= 1 tokens when any layer slides"
            )

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.first_dense_layers if self.is_moe else 0

    @property
    def uses_mla(self) -> bool:
        return self.kv_lora_rank > 0

    # --- parameter counts -------------------------------------------------------------------
    @property
    def attention_params_per_layer(self) -> int:
        q = self.hidden_size * self.num_heads * self.head_dim
        kv = 2 * self.hidden_size * self.num_kv_heads * self.head_dim
        o = self.num_heads * self.head_dim * self.hidden_size
        bias = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim if self.attention_bias else 0
        return q + kv + o + bias

    @property
    def mlp_params_per_layer(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size  # gate, up, down

    @property
    def linear_params_per_layer(self) -> int:
        return self.attention_params_per_layer + self.mlp_params_per_layer

    @property
    def norm_params(self) -> int:
        return (2 * self.num_layers + 1) * self.hidden_size

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def num_params(self) -> int:
        """Total parameters as a checkpoint counts them (a tied LM head counted once)."""
        head = 0 if self.tie_embeddings else self.lm_head_params
        return self.embedding_params + self.num_layers * self.linear_params_per_layer + self.norm_params + head

    @property
    def layer_linear_params(self) -> int:
        """Parameters every token multiplies through in the transformer layers."""
        return self.num_layers * self.linear_params_per_layer

    # --- bytes and FLOPs --------------------------------------------------------------------
    def weight_bytes(self, dtype: str = "fp16") -> float:
        """Bytes of all weights when linear layers are stored in `dtype`.

        Embeddings and norms stay in 16 bits, as quantised checkpoints keep them; the LM head is
        quantised with the other linear layers unless it is tied to the embedding.
        """
        linear = self.layer_linear_params + (0 if self.tie_embeddings else self.lm_head_params)
        high = self.embedding_params + self.norm_params
        return linear * dtype_bytes(dtype) + high * 2.0

    def streamed_weight_bytes(self, dtype: str = "fp16") -> float:
        """Bytes one forward pass reads: layer weights plus the LM head (embeddings are gathered)."""
        head_bytes = dtype_bytes("fp16") if self.tie_embeddings else dtype_bytes(dtype)
        return self.layer_linear_params * dtype_bytes(dtype) + self.lm_head_params * head_bytes

    def kv_bytes_per_token(self, dtype: str = "fp16") -> float:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes(dtype)

    def linear_flops_per_token(self) -> float:
        """Multiply-adds of the layers' linear projections, counted as 2 FLOPs each."""
        return 2.0 * self.layer_linear_params

    def lm_head_flops_per_token(self) -> float:
        return 2.0 * self.lm_head_params

    def attention_flops(self, query_tokens, context_tokens):
        """FLOPs of QK^T and PV for `query_tokens` attending to `context_tokens` keys each (on average)."""
        return 4.0 * self.num_layers * self.num_heads * self.head_dim * query_tokens * context_tokens

    def flops_per_token(self, context: int = 0) -> float:
        """Forward FLOPs for one token at a given context length (linear + attention + LM head)."""
        return self.linear_flops_per_token() + self.lm_head_flops_per_token() + self.attention_flops(1, context)

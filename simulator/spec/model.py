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
    """A decoder-only transformer of the Llama family (GQA attention, gated MLP)."""

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
    source: str = ""

    def __post_init__(self):
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"model {self.name!r}: num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})"
            )

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

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
    the KV cache holds; `head_dim` is then the non-rotary query/key width (qk_nope_head_dim).
    Sliding-window attention: `num_sliding_window_layers` layers attend to the last
    `sliding_window` tokens only, interleaved evenly with the full layers (simulator/spec/layers.py);
    with `chunked_attention` they attend within fixed chunks of that many tokens instead (Llama 4).
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
    # details that change parameter counts and bytes, not shapes
    chunked_attention: bool = False  # the local layers attend within chunks of sliding_window tokens
    qk_norm: bool = False  # RMSNorm weights over each head's q and k (Qwen3)
    attention_output_bias: bool = False  # a bias on the o projection too (gpt-oss)
    moe_bias: bool = False  # biases on the router and on every expert's projections (gpt-oss)
    expert_dtype: str = ""  # the checkpoint's expert weights when they differ (gpt-oss: mxfp4)
    num_mtp_layers: int = 0  # DeepSeek's multi-token-prediction module, loaded only to speculate
    encoder_params: int = 0  # a vision encoder and projector loaded with the model (Llama 4)
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
        if self.expert_dtype:
            dtype_bytes(self.expert_dtype)  # names the allowed dtypes
        if self.num_mtp_layers < 0 or self.encoder_params < 0:
            raise ConfigError(f"model {self.name!r}: num_mtp_layers and encoder_params must be >= 0")

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.first_dense_layers if self.is_moe else 0

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    @property
    def uses_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def num_full_attention_layers(self) -> int:
        return self.num_layers - self.num_sliding_window_layers

    # --- parameter counts -------------------------------------------------------------------
    @property
    def attention_params_per_layer(self) -> int:
        """The attention block's projection weights (and the q/k/v biases of `attention_bias`)."""
        if self.uses_mla:
            return self._mla_params_per_layer
        q = self.hidden_size * self.num_heads * self.head_dim
        kv = 2 * self.hidden_size * self.num_kv_heads * self.head_dim
        o = self.num_heads * self.head_dim * self.hidden_size
        bias = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim if self.attention_bias else 0
        return q + kv + o + bias

    @property
    def _mla_params_per_layer(self) -> int:
        h, heads = self.hidden_size, self.num_heads
        qk = self.head_dim + self.qk_rope_head_dim
        q = self.q_lora_rank * (h + heads * qk) if self.q_lora_rank else h * heads * qk
        kv_a = h * (self.kv_lora_rank + self.qk_rope_head_dim)
        kv_b = self.kv_lora_rank * heads * (self.head_dim + self.v_head_dim)
        return q + kv_a + kv_b + heads * self.v_head_dim * h

    @property
    def attention_extra_params_per_layer(self) -> int:
        """Small 16-bit tensors of the attention block: MLA's latent norms, the o bias, one sink
        logit per head, and q/k norm weights."""
        extra = (self.q_lora_rank + self.kv_lora_rank) if self.uses_mla else 0
        extra += self.hidden_size if self.attention_output_bias else 0
        extra += self.num_heads if self.attention_sinks else 0
        extra += 2 * self.head_dim if self.qk_norm else 0
        return extra

    @property
    def mlp_params_per_layer(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size  # gate, up, down

    @property
    def expert_params(self) -> int:
        """One routed expert's gate, up and down projections."""
        return 3 * self.hidden_size * self.moe_intermediate_size

    @property
    def shared_expert_params(self) -> int:
        return 3 * self.hidden_size * self.shared_expert_intermediate_size

    @property
    def router_params(self) -> int:
        """The router of one MoE layer (kept in 16 bits by quantised checkpoints), with the biases
        of `moe_bias` on it and on every expert."""
        bias = self.num_experts * (1 + 2 * self.moe_intermediate_size + self.hidden_size) if self.moe_bias else 0
        return self.hidden_size * self.num_experts + bias if self.is_moe else 0

    @property
    def linear_params_per_layer(self) -> int:
        """Attention plus dense MLP weights of a dense layer."""
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
    def routed_expert_params(self) -> int:
        """Every routed expert of every MoE layer."""
        return self.num_moe_layers * self.num_experts * self.expert_params

    @property
    def dense_linear_params(self) -> int:
        """Linear weights outside the routed experts: attention, dense MLPs, shared experts."""
        return (
            self.num_layers * self.attention_params_per_layer
            + self.num_dense_layers * self.mlp_params_per_layer
            + self.num_moe_layers * self.shared_expert_params
        )

    @property
    def small_params(self) -> int:
        """16-bit parameters besides embeddings and norms: routers, biases, sinks, latent norms."""
        return self.num_layers * self.attention_extra_params_per_layer + self.num_moe_layers * self.router_params

    @property
    def num_params(self) -> int:
        """Total parameters as a checkpoint counts them (a tied LM head counted once; the MTP
        module, which checkpoints ship apart and engines load only to speculate, left out)."""
        head = 0 if self.tie_embeddings else self.lm_head_params
        if not self.is_moe and not self.small_params and not self.encoder_params:
            return self.embedding_params + self.num_layers * self.linear_params_per_layer + self.norm_params + head
        return (self.embedding_params + self.dense_linear_params + self.routed_expert_params + self.small_params
                + self.norm_params + head + self.encoder_params)  # fmt: skip

    @property
    def active_params(self) -> int:
        """Parameters one token multiplies through: every layer's attention, dense MLP or shared
        experts plus its top-k experts and router, the norms and the LM head; the embedding table
        is only gathered from, and the vision encoder does not run for text."""
        experts = self.num_moe_layers * self.num_experts_per_token * self.expert_params
        return self.dense_linear_params + experts + self.small_params + self.norm_params + self.lm_head_params

    @property
    def mtp_params(self) -> int:
        """DeepSeek's multi-token-prediction module as its checkpoint stores it: per MTP layer one
        MoE decoder layer, the projection of [embedding; hidden] (2h x h), three norms, and copies
        of the embedding and the output head."""
        if not self.num_mtp_layers:
            return 0
        h = self.hidden_size
        layer = (self.attention_params_per_layer + self.attention_extra_params_per_layer + self.shared_expert_params
                 + self.num_experts * self.expert_params + self.router_params + 2 * h)  # fmt: skip
        return self.num_mtp_layers * (layer + 2 * h * h + 3 * h + self.embedding_params + self.lm_head_params)

    @property
    def layer_linear_params(self) -> int:
        """Parameters every token multiplies through in the transformer layers (a dense model's)."""
        return self.num_layers * self.linear_params_per_layer

    # --- bytes and FLOPs --------------------------------------------------------------------
    def resolved_expert_dtype(self, weight_dtype: str, expert_dtype: str | None = None) -> str:
        """The dtype routed experts are stored in: a deployment's choice, else the checkpoint's own
        (gpt-oss ships MXFP4 experts), else the other weights'."""
        return expert_dtype or self.expert_dtype or weight_dtype

    def weight_bytes(self, dtype: str = "fp16", expert_dtype: str | None = None) -> float:
        """Bytes of all weights when linear layers are stored in `dtype` (routed experts in
        `resolved_expert_dtype`).

        Embeddings, norms, routers and biases stay in 16 bits, as quantised checkpoints keep them;
        the LM head is quantised with the other linear layers unless it is tied to the embedding.
        """
        head = 0 if self.tie_embeddings else self.lm_head_params
        if not self.is_moe and not self.small_params and not self.encoder_params:
            linear = self.layer_linear_params + head
            high = self.embedding_params + self.norm_params
            return linear * dtype_bytes(dtype) + high * 2.0
        linear = self.dense_linear_params + head
        high = self.embedding_params + self.norm_params + self.small_params + self.encoder_params
        experts = self.routed_expert_params * dtype_bytes(self.resolved_expert_dtype(dtype, expert_dtype))
        return linear * dtype_bytes(dtype) + experts + high * 2.0

    def streamed_weight_bytes(self, dtype: str = "fp16") -> float:
        """Bytes one forward pass of a dense model reads: layer weights plus the LM head."""
        head_bytes = dtype_bytes("fp16") if self.tie_embeddings else dtype_bytes(dtype)
        return self.layer_linear_params * dtype_bytes(dtype) + self.lm_head_params * head_bytes

    def kv_bytes_per_token_per_layer(self, dtype: str = "fp16") -> float:
        """KV-cache bytes one token takes in one layer: K and V of every KV head, or MLA's latent
        plus its rotary key (shared by all heads)."""
        if self.uses_mla:
            return (self.kv_lora_rank + self.qk_rope_head_dim) * dtype_bytes(dtype)
        return 2 * self.num_kv_heads * self.head_dim * dtype_bytes(dtype)

    def kv_bytes_per_token(self, dtype: str = "fp16") -> float:
        """KV-cache bytes one token takes in every layer (a sliding layer keeps only its window)."""
        if self.uses_mla:
            return self.num_layers * self.kv_bytes_per_token_per_layer(dtype)
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes(dtype)

    def kv_bytes_per_sequence(self, context: int, dtype: str = "fp16") -> float:
        """KV-cache bytes of one sequence of `context` tokens: full layers hold every token, sliding
        layers at most `sliding_window`."""
        window = min(context, self.sliding_window) if self.num_sliding_window_layers else 0
        held = self.num_full_attention_layers * context + self.num_sliding_window_layers * window
        return held * self.kv_bytes_per_token_per_layer(dtype)

    def linear_flops_per_token(self) -> float:
        """Multiply-adds of the layers' linear projections, counted as 2 FLOPs each (a dense
        model's; for a mixture of experts, those of the active parameters)."""
        if self.is_moe:
            experts = self.num_moe_layers * self.num_experts_per_token * self.expert_params
            return 2.0 * (self.dense_linear_params + experts)
        return 2.0 * self.layer_linear_params

    def lm_head_flops_per_token(self) -> float:
        return 2.0 * self.lm_head_params

    @property
    def attention_width(self) -> int:
        """Per head, the widths QK^T and PV multiply over: q/k width plus v width."""
        if self.uses_mla:
            return self.head_dim + self.qk_rope_head_dim + self.v_head_dim
        return 2 * self.head_dim

    def attention_flops(self, query_tokens, context_tokens):
        """FLOPs of QK^T and PV for `query_tokens` attending to `context_tokens` keys each (on average),
        in every layer."""
        if self.uses_mla:
            return 2.0 * self.num_layers * self.num_heads * self.attention_width * query_tokens * context_tokens
        return 4.0 * self.num_layers * self.num_heads * self.head_dim * query_tokens * context_tokens

    def flops_per_token(self, context: int = 0) -> float:
        """Forward FLOPs for one token at a given context length (linear + attention + LM head)."""
        return self.linear_flops_per_token() + self.lm_head_flops_per_token() + self.attention_flops(1, context)

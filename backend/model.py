"""The Llama architecture, built from a ModelSpec, running one engine step over a paged KV cache.

Read top to bottom: RMSNorm, rotary embeddings, attention, decoder layer, model (the linear layer
and the MLP are in backend/layers.py, the mixture-of-experts layer in backend/moe.py). Two
fusions keep the matmul count low: q, k and v share one projection (`qkv_proj`, rows in that
order) and so do the MLP's gate and up (`gate_up_proj`, gate rows first). The loader fills those
fused weights from a checkpoint's separate tensors. A spec with experts makes its MoE layers
mixtures of experts (Mixtral, Qwen2-MoE, Qwen3-MoE); `Variant` carries what differs between
those families without changing a step's cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from backend import native
from backend.attention import StepBatch, StepMetadata, paged_attention, prepare_step
from backend.device import resolve_device, resolve_dtype
from backend.fused_decode import LayerPlan, StepArgs
from backend.kv_cache import PagedKVCache
from backend.layers import MLP, Linear, linear, native_fp32
from backend.moe import SparseMoE
from backend.variant import Variant
from simulator.spec import ModelSpec

__all__ = ["Llama", "StepBatch", "Variant", "build_model", "linear"]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, dtype: torch.dtype):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if native_fp32(x):
            return native.add_rms_norm(x.contiguous(), None, self.weight, self.eps)
        if x.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # Half precision: normalise in fp32, scale after rounding back (as the reference does).
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype)

    def add_and_norm(self, residual: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """residual += delta, in place; return the normalised residual (one kernel where it can)."""
        if native_fp32(residual) and residual.is_contiguous():
            return native.add_rms_norm(residual, delta, self.weight, self.eps)
        return self(residual.add_(delta))


def rope_tables(head_dim: int, max_positions: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin, [max_positions, head_dim], for the rotate-half rotary convention.

    rotate_half(x) = cat(-x2, x1) = roll(x, d/2) * [-1.., +1..], so the sign is folded into the
    sin table and applying rotary embeddings is x * cos + roll(x) * sin.
    """
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv_freq)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([cos, cos], -1).float(), torch.cat([-sin, sin], -1).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, heads, d]; cos, sin [T, 1, d]."""
    return torch.addcmul(x * cos, torch.roll(x, x.shape[-1] // 2, -1), sin)


@dataclass
class Rotary:
    """A step's rotary embeddings: the model's fp32 tables and the new tokens' positions. The
    per-token rows are gathered once per step, and only when a layer takes the torch path."""

    cos_table: torch.Tensor  # [max_positions, head_dim]
    sin_table: torch.Tensor
    positions: torch.Tensor  # [T]
    dtype: torch.dtype

    @cached_property
    def per_token(self) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [T, 1, head_dim] in the model's dtype."""
        return (
            self.cos_table[self.positions].unsqueeze(1).to(self.dtype),
            self.sin_table[self.positions].unsqueeze(1).to(self.dtype),
        )


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec, layer: int, dtype: torch.dtype, qk_norm: bool = False):
        super().__init__()
        self.layer = layer
        self.num_heads, self.num_kv_heads, self.head_dim = spec.num_heads, spec.num_kv_heads, spec.head_dim
        q_size, kv_size = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
        self.qkv_proj = Linear(spec.hidden_size, q_size + 2 * kv_size, bias=spec.attention_bias, dtype=dtype)
        self.o_proj = Linear(q_size, spec.hidden_size, bias=False, dtype=dtype)
        self.q_norm = RMSNorm(spec.head_dim, spec.rms_norm_eps, dtype) if qk_norm else None
        self.k_norm = RMSNorm(spec.head_dim, spec.rms_norm_eps, dtype) if qk_norm else None

    def forward(self, x, step: StepMetadata, rope: Rotary, kv: PagedKVCache) -> torch.Tensor:
        t, h, hk, d = x.shape[0], self.num_heads, self.num_kv_heads, self.head_dim
        qkv = self.qkv_proj(x)
        if self.q_norm is not None:  # per-head norms of q and k, in place, before the rotation
            qk = qkv[:, : (h + hk) * d].view(t, h + hk, d)
            qk[:, :h] = self.q_norm(qk[:, :h])
            qk[:, h:] = self.k_norm(qk[:, h:])
        v = qkv[:, (h + hk) * d :].view(t, hk, d)
        if native_fp32(qkv):  # rotate q and k in place and store k and v: one kernel
            native.rope_and_cache_(
                qkv, h, hk, rope.positions, rope.cos_table, rope.sin_table, step.slot_mapping,
                kv.k[self.layer], kv.v[self.layer],
            )  # fmt: skip
            q, k = qkv[:, : h * d].view(t, h, d), qkv[:, h * d : (h + hk) * d].view(t, hk, d)
        else:
            qk = apply_rope(qkv[:, : (h + hk) * d].view(t, h + hk, d), *rope.per_token)
            q, k = qk[:, :h], qk[:, h:]
            kv.write(self.layer, step.slot_mapping, k, v)
        out = paged_attention(q, k, v, step, kv, self.layer)
        return self.o_proj(out.reshape(t, h * d))


class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec, layer: int, dtype: torch.dtype, variant: Variant | None = None):
        super().__init__()
        variant = variant or Variant.for_spec(spec)
        self.input_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps, dtype)
        self.self_attn = Attention(spec, layer, dtype, variant.qk_norm)
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps, dtype)
        if spec.is_moe and layer >= spec.first_dense_layers:
            self.mlp = SparseMoE(spec, variant, dtype)
        else:
            self.mlp = MLP(spec.hidden_size, spec.intermediate_size, dtype)

    def forward(self, x, step: StepMetadata, rope: Rotary, kv: PagedKVCache) -> torch.Tensor:
        """x is the residual stream: updated in place and returned."""
        attended = self.self_attn(self.input_layernorm(x), step, rope, kv)
        return x.add_(self.mlp(self.post_attention_layernorm.add_and_norm(x, attended)))

    def native_plan(self) -> LayerPlan | None:
        """The plan to run this layer with the fused native decode kernel (None when its weights
        cannot take it: int8, biases other than qkv's, an odd head size, experts, q/k norms);
        remade when a weight tensor is replaced."""
        if not isinstance(self.mlp, MLP) or self.self_attn.q_norm is not None:
            return None  # the kernel runs a dense MLP and no q/k norms
        plan = self.__dict__.get("_plan")
        if plan is None or not plan.current(self):
            plan = self.__dict__["_plan"] = LayerPlan(self)
        return plan if plan.usable else None


class Llama(nn.Module):
    """A Llama-family decoder. Weights are allocated but not initialised: see build_model and the loader."""

    def __init__(
        self,
        spec: ModelSpec,
        dtype: str | torch.dtype = "fp32",
        device: str | torch.device = "cpu",
        variant: Variant | None = None,
    ):
        super().__init__()
        self.spec = spec
        self.variant = variant or Variant.for_spec(spec)
        dtype, device = resolve_dtype(dtype), resolve_device(device)
        with torch.device("meta"):  # allocate once, on the target device, without a throwaway init
            self.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size, dtype=dtype)
            self.layers = nn.ModuleList(DecoderLayer(spec, i, dtype, self.variant) for i in range(spec.num_layers))
            self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps, dtype)
            self.lm_head = (
                None
                if spec.tie_embeddings
                else Linear(spec.hidden_size, spec.vocab_size, bias=False, dtype=dtype)
            )
        self.to_empty(device=device)
        cos, sin = rope_tables(spec.head_dim, spec.max_context, spec.rope_theta)
        self.register_buffer("rope_cos", cos.to(device), persistent=False)
        self.register_buffer("rope_sin", sin.to(device), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    def init_weights(self, seed: int = 0, std: float = 0.02) -> None:
        """Norms to one, every other weight N(0, std); drawn on CPU, so a seed gives one model anywhere."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if name.endswith("norm.weight"):  # layer norms, q/k norms, the final norm
                    param.fill_(1.0)
                else:
                    param.copy_(torch.randn(param.shape, generator=gen) * std)

    @property
    def moe_layers(self) -> list[SparseMoE]:
        return [layer.mlp for layer in self.layers if isinstance(layer.mlp, SparseMoE)]

    def experts_touched(self) -> float:
        """Distinct experts the last step's tokens were routed to, averaged over the MoE layers (0 without)."""
        layers = self.moe_layers
        return sum(m.experts_touched for m in layers) / len(layers) if layers else 0.0

    def make_kv_cache(self, num_blocks: int, block_size: int = 16) -> PagedKVCache:
        return PagedKVCache.for_model(self.spec, num_blocks, block_size, self.dtype, self.device)

    @torch.inference_mode()
    def forward(self, batch: StepBatch, kv: PagedKVCache, all_logits: bool = False) -> torch.Tensor:
        """Run one step; return logits [num_seqs, vocab] of each sequence's last new token.

        With all_logits, return logits [num_tokens, vocab] of every new token (in batch order), as
        verifying speculative tokens needs.
        """
        longest = max(c + len(t) for c, t in zip(batch.cached_tokens, batch.token_ids))
        if longest > self.spec.max_context:
            raise ValueError(f"a sequence reaches {longest} tokens, past max_context {self.spec.max_context}")
        step = prepare_step(batch, kv.block_size, self.device)
        rope = Rotary(self.rope_cos, self.rope_sin, step.positions, self.dtype)
        x = self.embed_tokens(step.input_ids)
        # Decodes of 1-32 sequences: one native call per layer instead of some 25 ops.
        fused = None
        if step.all_decode and x.shape[0] <= native.MAX_ROWS and native_fp32(x):
            fused = StepArgs.of(step, self.rope_cos, self.rope_sin, kv)
        for layer in self.layers:
            plan = layer.native_plan() if fused is not None else None
            if plan is not None:
                plan.run(x, fused, kv)
            else:
                x = layer(x, step, rope, kv)
        if not all_logits and not step.all_decode:  # a decode step's rows are its sequences already
            x = x[step.last_token_index]
        x = self.norm(x)
        if self.lm_head is None:
            return linear(x, self.embed_tokens.weight)
        return self.lm_head(x)


def build_model(
    spec: ModelSpec,
    seed: int = 0,
    dtype: str | torch.dtype = "fp32",
    device: str | torch.device = "cpu",
    std: float = 0.02,
    variant: Variant | None = None,
) -> Llama:
    """A model of the given shape with seeded random weights (step times do not depend on values)."""
    model = Llama(spec, dtype, device, variant)
    model.init_weights(seed, std)
    return model

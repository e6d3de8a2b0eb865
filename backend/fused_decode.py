"""Whole decoder layers in one native call, for steps of 1-32 decodes in fp32 on CPU.

At batch 1 a layer's four matrix-vector products take some 500 µs and the rest of the layer
(norms, rotary, the cache write, attention, SiLU) about 40 µs of kernels; run as separate torch
or native ops from Python it costs another 60-70 µs of interpreter and thread-team starts. The
native `decode_layer` kernel runs the layer in one call. What stays in Python is prepared once:
a `LayerPlan` per layer (its weights checked and their addresses taken, rebuilt only when a
weight tensor is replaced) and a `StepArgs` per step (index tensors shared by every layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from backend import native
from backend.attention import StepMetadata
from backend.kv_cache import PagedKVCache

__all__ = ["LayerPlan", "StepArgs"]


@dataclass(frozen=True)
class StepArgs:
    """The step's side of the kernel's arguments, shared by every layer."""

    batch: int
    head_dim: int
    kv_heads: int
    args: tuple  # positions, cos, sin, max_positions, slots, tables, table width, lengths, blocks, block size
    keep: tuple[torch.Tensor, ...]  # the tensors those addresses point into, alive as long as this

    @classmethod
    def of(cls, step: StepMetadata, cos: torch.Tensor, sin: torch.Tensor, kv: PagedKVCache) -> StepArgs:
        if not step.all_decode or step.decode_lengths is None:
            raise ValueError("the fused decode layer runs steps of decodes only")
        if cos.dtype != torch.float32 or cos.shape != sin.shape or cos.shape[1] != kv.head_dim:
            raise ValueError(f"rotary tables must be fp32 [positions, {kv.head_dim}]")
        positions, slots, tables, lengths = (
            t.to(torch.int64).contiguous()
            for t in (step.positions, step.slot_mapping, step.decode_blocks, step.decode_lengths)
        )
        cos, sin = cos.contiguous(), sin.contiguous()
        args = (
            positions.data_ptr(), cos.data_ptr(), sin.data_ptr(), cos.shape[0], slots.data_ptr(),
            tables.data_ptr(), tables.shape[1], lengths.data_ptr(), kv.num_blocks, kv.block_size,
        )  # fmt: skip
        return cls(
            len(lengths), kv.head_dim, kv.num_kv_heads, args, (positions, cos, sin, slots, tables, lengths)
        )


def _weights(layer) -> tuple:
    """A decoder layer's tensors in the kernel's order: input norm, qkv weight and bias (or None),
    o, post-attention norm, gate_up ([gate rows | up rows]), down."""
    attn, mlp = layer.self_attn, layer.mlp
    return (
        layer.input_layernorm.weight, attn.qkv_proj.weight, attn.qkv_proj.bias, attn.o_proj.weight,
        layer.post_attention_layernorm.weight, mlp.gate_up_proj.weight, mlp.down_proj.weight,
    )  # fmt: skip


class LayerPlan:
    """One decoder layer's side of the kernel's arguments, checked once."""

    def __init__(self, layer):
        attn, mlp = layer.self_attn, layer.mlp
        self.weights = _weights(layer)
        input_norm, w_qkv, b_qkv, w_o, post_norm, w_gate_up, w_down = self.weights
        hidden, inter = w_qkv.shape[1], w_down.shape[1]
        heads, kv_heads, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
        q_width, qkv_width = heads * d, (heads + 2 * kv_heads) * d
        shapes = (
            (input_norm, (hidden,)), (w_qkv, (qkv_width, hidden)), (b_qkv, (qkv_width,)), (w_o, (hidden, q_width)),
            (post_norm, (hidden,)), (w_gate_up, (2 * inter, hidden)), (w_down, (hidden, inter)),
        )  # fmt: skip
        plain = all(
            isinstance(m, nn.Linear) for m in (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj)
        )
        self.usable = (
            plain
            and attn.o_proj.bias is None
            and mlp.gate_up_proj.bias is None
            and mlp.down_proj.bias is None
            and d % native.HEAD_DIM_MULTIPLE == 0
            and all(
                t is None
                or (
                    t.shape == shape
                    and t.dtype == torch.float32
                    and t.is_contiguous()
                    and t.device.type == "cpu"
                )
                for t, shape in shapes
            )
        )
        self.hidden, self.heads, self.kv_heads, self.head_dim = hidden, heads, kv_heads, d
        self.layer = attn.layer
        self.args = (
            hidden, input_norm.data_ptr(), w_qkv.data_ptr(), None if b_qkv is None else b_qkv.data_ptr(),
            w_o.data_ptr(), post_norm.data_ptr(), w_gate_up.data_ptr(), w_down.data_ptr(), inter,
            layer.input_layernorm.eps, heads, kv_heads, d,
        )  # fmt: skip

    def current(self, layer) -> bool:
        """Whether the layer still has the very weight tensors this plan was made from."""
        return all(a is b for a, b in zip(_weights(layer), self.weights))

    def run(self, x: torch.Tensor, step: StepArgs, kv: PagedKVCache) -> None:
        """The layer on x [batch, hidden] (the residual stream, updated in place); k and v of the
        new tokens go to this layer's cache."""
        lib = native.loaded()
        if not (
            x.shape == (step.batch, self.hidden)
            and x.dtype == torch.float32
            and x.is_contiguous()
            and 1 <= step.batch <= native.MAX_ROWS
            and (step.head_dim, step.kv_heads) == (self.head_dim, self.kv_heads)
        ):
            raise ValueError(
                f"fused decode layer: x {tuple(x.shape)} or the cache does not fit a layer of hidden size "
                f"{self.hidden} at 1 to {native.MAX_ROWS} sequences"
            )
        code = lib.decode_layer(
            x.data_ptr(), step.batch, *self.args, *step.args, kv.k[self.layer].data_ptr(),
            kv.v[self.layer].data_ptr(), torch.get_num_threads(),
        )  # fmt: skip
        native.check_code(code, "decode_layer")

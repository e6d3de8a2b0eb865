"""The shapes `llmsim profile --ops` measures for a catalog model: the kernel-table axes.

Plain Python (no torch). For every tensor-parallel degree the model splits by (1, 2, 4, 8), the
per-rank shapes of simulator/execution/kernels/shapes.py give the GEMMs (each N x K, measured
along an M axis of token counts) and the attention slices (query heads / KV heads / head dim per
rank) the kernel-table step model will read; the axes follow aiconfigurator's tables, shorter on
a CPU and shorter still with --quick. Cells whose work exceeds the plan's budget (large batch x
long sequence) are left unmeasured, as in aiconfigurator's tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.common.errors import ConfigError
from simulator.execution.kernels.shapes import rank_shapes, valid_tp_degrees
from simulator.spec import ModelSpec


@dataclass(frozen=True)
class OpPlan:
    gemm_m: tuple[int, ...]
    context_batch: tuple[int, ...]
    context_seq: tuple[int, ...]
    context_tokens: int  # most batch x seq tokens of one prefill-attention cell
    decode_batch: tuple[int, ...]
    decode_len: tuple[int, ...]
    decode_tokens: int  # most batch x KV length of one decode-attention cell
    elementwise_m: tuple[int, ...]
    collective_bytes: tuple[int, ...]
    warmup: int
    repeats: int


def _powers(lo: int, hi: int) -> tuple[int, ...]:
    out, v = [], lo
    while v <= hi:
        out.append(v)
        v *= 2
    return tuple(out)


GPU = OpPlan(
    gemm_m=(*range(1, 17), 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144,
            8192, 16384),
    context_batch=_powers(1, 256), context_seq=_powers(16, 16384), context_tokens=262144,
    decode_batch=_powers(1, 1024), decode_len=_powers(16, 131072), decode_tokens=1 << 21,
    elementwise_m=_powers(1, 16384), collective_bytes=_powers(1024, 1 << 30), warmup=3, repeats=10,
)  # fmt: skip
CPU = OpPlan(
    gemm_m=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512, 1024, 2048),
    context_batch=(1, 2, 4, 8), context_seq=_powers(16, 2048), context_tokens=8192,
    decode_batch=(1, 2, 4, 8, 16, 32, 64, 128), decode_len=_powers(16, 2048), decode_tokens=65536,
    elementwise_m=_powers(1, 2048), collective_bytes=_powers(1024, 1 << 26), warmup=1, repeats=5,
)  # fmt: skip
QUICK = OpPlan(
    gemm_m=(1, 4, 16, 64, 256), context_batch=(1, 4), context_seq=(16, 64, 256), context_tokens=1024,
    decode_batch=(1, 4, 16), decode_len=(16, 128, 1024), decode_tokens=16384, elementwise_m=(1, 16, 256),
    collective_bytes=(1024, 65536, 1 << 22), warmup=1, repeats=3,
)  # fmt: skip


def plan_for(device_type: str, quick: bool) -> OpPlan:
    return QUICK if quick else GPU if device_type == "cuda" else CPU


@dataclass(frozen=True)
class Slice:
    heads: int
    kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class ModelOps:
    """What one model needs measured: its TP degrees, GEMM shapes (n, k) and attention slices."""

    tensor_parallel: tuple[int, ...]
    gemms: tuple[tuple[int, int], ...]
    slices: tuple[Slice, ...]


def model_ops(model: ModelSpec, max_tp: int = 8) -> ModelOps:
    if model.is_moe:
        raise ConfigError(
            f"--ops --model {model.name}: the kernel-table step model prices dense models only; a mixture "
            "of experts has no kernel tables (profile its steps with llmsim profile instead)"
        )
    tps = tuple(tp for tp in valid_tp_degrees(model) if tp <= max_tp)
    gemms, slices = [], []
    for tp in tps:
        shapes = rank_shapes(model, tp)
        for g in (*shapes.layer_gemms, shapes.lm_head):
            if (g.n, g.k) not in gemms:
                gemms.append((g.n, g.k))
        s = Slice(shapes.heads, shapes.kv_heads, shapes.head_dim)
        if s not in slices:
            slices.append(s)
    return ModelOps(tps, tuple(gemms), tuple(slices))

"""Memory-bound kernels between the GEMMs and attention: norms, rotary, KV-cache writes, the
gated activation, residual adds (fused into the norms), the embedding gather and sampling.

No measured table covers them, so each kernel costs a floor plus its bytes at a fraction of the
memory bandwidth (the element-wise model and constants of the kernel-table file's source).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.execution.kernels.shapes import RankShapes
from simulator.spec.memory import ACTIVATION_BYTES, LOGIT_BYTES


@dataclass(frozen=True)
class MemoryKernel:
    name: str
    bytes_per_token: float  # per token (per sequence for sampling)


def layer_kernels(shapes: RankShapes, kv_bytes: float) -> list[MemoryKernel]:
    """The memory-bound kernels of one layer, with the bytes each moves per token."""
    a = ACTIVATION_BYTES
    h, d = shapes.hidden, shapes.head_dim
    q_and_k = (shapes.heads + shapes.kv_heads) * d
    kv = 2 * shapes.kv_heads * d
    return [
        MemoryKernel("add_rmsnorm_1", 4 * h * a),  # read x and residual, write both
        MemoryKernel("rotary", 2 * q_and_k * a),  # read and write q and k
        MemoryKernel("kv_cache_write", kv * a + kv * kv_bytes),  # read k and v, write the cache
        MemoryKernel("add_rmsnorm_2", 4 * h * a),
        MemoryKernel("silu_and_mul", 3 * shapes.intermediate * a),  # read gate and up, write one
    ]


def embedding_kernel(shapes: RankShapes) -> MemoryKernel:
    return MemoryKernel("embedding", 2 * shapes.hidden * ACTIVATION_BYTES)  # gather rows, write them


def sampling_kernels(vocab_size: int) -> list[MemoryKernel]:
    """Per sequence: logits to fp32, softmax over them, and the sampling pass."""
    return [MemoryKernel(name, 2 * vocab_size * LOGIT_BYTES) for name in ("logits_to_fp32", "softmax", "sample")]


def seconds(kernels: list[MemoryKernel], count: np.ndarray, bandwidth: float, floor_s: float) -> np.ndarray:
    """Seconds of running `kernels` over `count` tokens (or sequences); nothing when count is 0."""
    count = np.asarray(count, dtype=np.float64)
    per = sum(k.bytes_per_token for k in kernels)
    return np.where(count > 0, len(kernels) * floor_s + count * per / bandwidth, 0.0)

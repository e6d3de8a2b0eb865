"""The engine's memory-bound ops timed by token count, and the kernel-table element-wise model
fitted to them.

The kernel-table step model prices norms, rotary, the KV-cache write and the gated activation
as `floor + bytes / (bandwidth x efficiency)` per kernel, with the byte counts of
simulator/execution/kernels/elementwise.py. Here the backend's own ops run at the model's
per-rank shapes (fused residual add + RMSNorm; rotary and the cache write, one native call on
the CPU fp32 path and two torch ops elsewhere; SiLU-and-mul), and the floor and the achieved
bandwidth are fitted to all of them at once, relative error, against those byte counts: the file
then prices these kernels as this device ran them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import nnls

from backend import native
from backend.kv_cache import PagedKVCache
from backend.layers import native_fp32, silu_and_mul
from backend.model import RMSNorm, apply_rope, rope_tables
from simulator.execution.kernels.elementwise import layer_kernels
from simulator.execution.kernels.shapes import RankShapes


@dataclass
class ElementwiseCase:
    op: str
    kernels: tuple[str, ...]  # the model's kernels this op does (their bytes and floors)
    tokens: int
    run: object  # a callable


def elementwise_cases(shapes: RankShapes, tokens: tuple[int, ...], dtype: torch.dtype,
                      device: torch.device) -> list[ElementwiseCase]:  # fmt: skip
    """One case per op and token count, with its inputs allocated once."""
    h, heads, kv_heads, d, inter = shapes.hidden, shapes.heads, shapes.kv_heads, shapes.head_dim, shapes.intermediate
    top = max(tokens)
    gen = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape):
        return torch.randn(shape, generator=gen).to(dtype=dtype, device=device)

    norm = RMSNorm(h, 1e-5, dtype).to(device)
    with torch.no_grad():
        norm.weight.fill_(1.0)
    residual, delta = rand(top, h), rand(top, h)
    qkv = rand(top, (heads + 2 * kv_heads) * d)
    gate_up = rand(top, 2 * inter)
    blocks = -(-top // 16)
    kv = PagedKVCache(1, blocks, 16, kv_heads, d, dtype, device)
    cos, sin = (t.to(device) for t in rope_tables(d, top, 10000.0))
    positions = torch.arange(top, device=device)
    slots = torch.arange(top, device=device)
    fused_rope = native_fp32(qkv)
    cases = []
    for m in tokens:
        cases.append(ElementwiseCase("add_rmsnorm", ("add_rmsnorm_1",), m,
                                     lambda m=m: norm.add_and_norm(residual[:m], delta[:m])))  # fmt: skip
        cases.append(ElementwiseCase("silu_and_mul", ("silu_and_mul",), m, lambda m=m: silu_and_mul(gate_up[:m])))
        if fused_rope:  # the CPU fp32 engine rotates q and k and writes the cache in one call
            def rope_and_cache(m=m):
                native.rope_and_cache_(qkv[:m], heads, kv_heads, positions[:m], cos, sin, slots[:m], kv.k[0], kv.v[0])

            cases.append(ElementwiseCase("rope_and_cache", ("rotary", "kv_cache_write"), m, rope_and_cache))
            continue
        per_token = (cos[:m].unsqueeze(1).to(dtype), sin[:m].unsqueeze(1).to(dtype))
        qk = qkv[:m, : (heads + kv_heads) * d].view(m, heads + kv_heads, d)
        k = qkv[:m, heads * d : (heads + kv_heads) * d].view(m, kv_heads, d)
        v = qkv[:m, (heads + kv_heads) * d :].view(m, kv_heads, d)
        cases.append(ElementwiseCase("rotary", ("rotary",), m, lambda qk=qk, p=per_token: apply_rope(qk, *p)))
        cases.append(ElementwiseCase("kv_cache_write", ("kv_cache_write",), m,
                                     lambda m=m, k=k, v=v: kv.write(0, slots[:m], k, v)))  # fmt: skip
    return cases


def fit_elementwise(cases: list[ElementwiseCase], seconds: np.ndarray, shapes: RankShapes, kv_bytes: float):
    """(achieved bytes/s, floor seconds per kernel, largest relative error) of the model
    floor x kernels + tokens x bytes / bandwidth over every case, fitted on relative error."""
    per_token = {k.name: k.bytes_per_token for k in layer_kernels(shapes, kv_bytes)}
    kernels = np.array([len(c.kernels) for c in cases], dtype=np.float64)
    moved = np.array([c.tokens * sum(per_token[k] for k in c.kernels) for c in cases], dtype=np.float64)
    a = np.column_stack([kernels, moved]) / seconds[:, None]
    (floor, inverse), _ = nnls(a, np.ones(len(cases)))
    inverse = max(inverse, 1e-15)  # a positive bandwidth, however fast
    predicted = floor * kernels + moved * inverse
    return 1.0 / inverse, float(floor), float(np.max(np.abs(predicted / seconds - 1.0)))

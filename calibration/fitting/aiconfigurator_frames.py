"""aiconfigurator-core's measurement frames as llmsim tables: its dtype names and units, the
kernel each table mostly measured, GEMM sites and attention slices on one grid."""

from __future__ import annotations

import numpy as np

from simulator.execution.kernels.op_table import (
    AttentionSlice,
    AttentionTable,
    GemmSite,
    GemmTable,
    format_numbers,
)

# per-tensor fp8 W8A8, as vLLM serves fp8 checkpoints; NVFP4 W4A4 where measured (Blackwell)
GEMM_DTYPES = {"bfloat16": "bf16", "fp8": "fp8", "nvfp4": "fp4"}
KV_DTYPES = {"bfloat16": "bf16", "fp8": "fp8"}
MS_TO_US = 1000.0


def densest(frame, column: str = "kernel_source") -> str:
    """The kernel with the most measurements (the engine's main path for that table)."""
    counts = frame.groupby(column).size()
    return str(counts.sort_values(ascending=False, kind="stable").index[0])


def gemm_table_from_frame(frame, source_dtype: str) -> GemmTable | None:
    """Every measured shape of one GEMM dtype (its densest kernel), as one of our GEMM tables."""
    rows = frame[frame["gemm_dtype"] == source_dtype]
    if rows.empty:
        return None
    kernel = densest(rows)
    rows = rows[rows["kernel_source"] == kernel]
    grid = rows.pivot_table(index=["n", "k"], columns="m", values="latency", aggfunc="min")
    return GemmTable(
        dtype=GEMM_DTYPES[source_dtype], kernel=kernel, m=format_numbers(np.array(grid.columns, dtype=float)),
        n_max=int(rows["n"].max()), k_max=int(rows["k"].max()),
        sites=[GemmSite(n=int(n), k=int(k), us=format_numbers(v * MS_TO_US)) for (n, k), v in
               zip(grid.index, grid.to_numpy())],
    )


def attention_candidates(frame, phase: str, head_dim: int) -> list[tuple[AttentionSlice, object]]:
    """Every measured heads / KV heads slice at `head_dim` (bf16 attention, each KV dtype's densest
    kernel), with its rows; `seq` is the prompt length (prefill) or the KV length isl + step (decode)."""
    frame = frame[(frame["attn_dtype"] == "bfloat16") & (frame["head_dim"] == head_dim)]
    for column, value in (("beam_width", 1), ("window_size", 0)):
        if column in frame:
            frame = frame[frame[column] == value]
    frame = frame.assign(seq=frame["isl"] + (frame["step"] if phase == "generation" else 0))
    out = []
    for source_kv, kv_dtype in KV_DTYPES.items():
        rows = frame[frame["kv_cache_dtype"] == source_kv]
        if rows.empty:
            continue
        kernel = densest(rows)
        for (q, kv), group in rows[rows["kernel_source"] == kernel].groupby(["num_heads", "num_key_value_heads"]):
            out.append((AttentionSlice(heads=int(q), kv_heads=int(kv), head_dim=head_dim, kv_dtype=kv_dtype,
                                       kernel=kernel, us=""), group))
    return out


def attention_table(kept) -> AttentionTable:
    """Slices (with their rows) on one shared batch x seq grid; `nan` where a slice lacks a cell."""
    batch = np.array(sorted({int(b) for _, g in kept for b in g["batch_size"]}), dtype=float)
    seq = np.array(sorted({int(v) for _, g in kept for v in g["seq"]}), dtype=float)
    slices = []
    for s, group in kept:
        grid = group.pivot_table(index="batch_size", columns="seq", values="latency", aggfunc="min")
        grid = grid.reindex(index=batch, columns=seq)
        slices.append(s.model_copy(update={"us": format_numbers(grid.to_numpy().ravel() * MS_TO_US)}))
    return AttentionTable(batch=format_numbers(batch), seq=format_numbers(seq), slices=slices)

"""The mixture-of-experts part of `llmsim calibrate --from-aiconfigurator`: a model's MoE layer
(its hidden size, expert width, top-k and expert count at every expert layout of up to a node's
GPUs and every expert dtype measured), the GEMMs of its dense parts, and latent attention's
(MLA) measured modules."""

from __future__ import annotations

import numpy as np

from calibration.fitting.aiconfigurator_frames import KV_DTYPES, MS_TO_US, attention_table, densest
from calibration.fitting.aiconfigurator_source import AicSystem, read_table, relative
from simulator.common.errors import ConfigError
from simulator.execution.kernels.moe_step_model import attention_gemms, mlp_gemms
from simulator.execution.kernels.op_table import (
    AttentionSlice,
    MLAModuleTable,
    MoELayout,
    MoETable,
    format_numbers,
)
from simulator.execution.kernels.shapes import Gemm

# llmsim expert dtype -> the package's MoE quantisation modes, in order of preference; the first one
# measured at the model's shape is kept. DeepSeek-V3 and Qwen3's fp8 checkpoints are 128x128
# block-scaled, and vLLM serves them with the block kernels; the per-tensor kernel (ModelOpt
# checkpoints) measures several times slower at small batches, so it only stands in for a shape
# without block-scaled measurements, never for a missing layout.
MOE_DTYPES = {"bf16": ("bfloat16",), "fp8": ("fp8_block", "fp8"), "fp4": ("nvfp4",), "mxfp4": ("w4a16_mxfp4",)}
MOE_SHAPE = ("hidden_size", "inter_size", "topk", "num_experts")


def moe_attention_tps(model, gpus: int) -> list[int]:
    """Attention tensor-parallel degrees (1, 2, 4, 8 up to a node) the model's heads split by."""
    out = []
    for tp in (1, 2, 4, 8):
        if tp > gpus or model.num_heads % tp:
            continue
        if not model.uses_mla and model.num_kv_heads % tp and tp % model.num_kv_heads:
            continue
        if model.intermediate_size % tp or model.shared_expert_intermediate_size % tp:
            continue
        out.append(tp)
    return out


def moe_model_gemms(model, tps: list[int]) -> list:
    """Every dense GEMM shape the MoE step model reads at these attention tp degrees."""
    out = []
    for tp in tps:
        out += attention_gemms(model, tp)
        if model.first_dense_layers:
            out += mlp_gemms(model.hidden_size, model.intermediate_size, tp, "mlp")
        out += mlp_gemms(model.hidden_size, model.shared_expert_intermediate_size, tp, "shared")
        out.append(Gemm("lm_head", -(-model.vocab_size // tp), model.hidden_size))
    return out


def moe_table_from_frame(frame, model, source_dtype: str, dtype: str, max_ranks: int) -> MoETable | None:
    """The measurements of the model's MoE shape in one quantisation mode, every layout of at most
    `max_ranks` ranks; balanced routing where measured (the simulator applies its own imbalance).
    Where several kernels measured a layout, the one with the most points (then the faster) is kept."""
    shape = (model.hidden_size, model.moe_intermediate_size, model.num_experts_per_token, model.num_experts)
    rows = frame[(frame["moe_dtype"] == source_dtype)]
    for column, value in zip(MOE_SHAPE, shape):
        rows = rows[rows[column] == value]
    rows = rows[rows["moe_tp_size"] * rows["moe_ep_size"] <= max_ranks]
    if rows.empty:
        return None
    distributions = set(rows["distribution"])
    distribution = "balanced" if "balanced" in distributions else densest(rows, "distribution")
    rows = rows[rows["distribution"] == distribution]
    tokens = np.array(sorted({int(t) for t in rows["num_tokens"]}), dtype=float)
    layouts = []
    for (tp, ep), group in rows.groupby(["moe_tp_size", "moe_ep_size"]):
        stats = group.groupby("kernel_source")["latency"].agg(["size", "median"])
        kernel = str(stats.sort_values(["size", "median"], ascending=[False, True], kind="stable").index[0])
        series = group[group["kernel_source"] == kernel].groupby("num_tokens")["latency"].min().reindex(tokens)
        layouts.append(MoELayout(tp=int(tp), ep=int(ep), kernel=kernel, us=format_numbers(series.to_numpy() * MS_TO_US)))
    return MoETable(dtype=dtype, source_dtype=source_dtype, hidden=shape[0], inter=shape[1], topk=shape[2],
                    experts=shape[3], distribution=distribution, tokens=format_numbers(tokens), layouts=layouts)


def moe_tables(system: AicSystem, backend: str, version: str, model, gpus: int, files: dict,
                notes: list) -> list[MoETable]:
    found = system.table_dir("moe", backend, version, "moe")
    if found is None:
        raise ConfigError(f"aiconfigurator {system.name}: no {backend} MoE table at or below {version}")
    folder, used_version = found
    frame = read_table(folder, "moe")
    missing = [c for c in ("moe_dtype", "num_tokens", *MOE_SHAPE, "moe_tp_size", "moe_ep_size", "distribution",
                           "kernel_source", "latency") if c not in frame]  # fmt: skip
    if missing:
        raise ConfigError(f"{folder}/moe_perf: missing column(s) {', '.join(missing)}")
    out = []
    for dtype, sources in MOE_DTYPES.items():
        for source_dtype in sources:
            table = moe_table_from_frame(frame, model, source_dtype, dtype, gpus)
            if table is not None:
                out.append(table)
                break
    if not out:
        raise ConfigError(
            f"aiconfigurator {system.name}/{backend} {used_version}: no MoE measurements of {model.name}'s shape "
            f"(hidden {model.hidden_size}, expert width {model.moe_intermediate_size}, top-{model.num_experts_per_token} "
            f"of {model.num_experts})"
        )
    kernels = sorted({x.kernel for t in out for x in t.layouts})
    files["moe"] = f"{relative(folder, system.root)}/moe_perf ({'; '.join(kernels)}, version {used_version})"
    notes += [f"moe {t.dtype} ({t.source_dtype}, {t.distribution} routing): layouts moe_tp x ep "
              f"{' '.join(f'{x.tp}x{x.ep}' for x in t.layouts)}" for t in out]
    return out



# --- multi-head latent attention ------------------------------------------------------------
# The package's MLA module tables name the model they were measured with; the catalog shapes
# they stand for (hidden, heads, q_lora, kv_lora, rope, nope, v).
MLA_SHAPES = {"deepseek-ai/DeepSeek-V3": (7168, 128, 1536, 512, 64, 128, 128)}
MLA_GEMM_DTYPES = {"bfloat16": "bf16", "fp8_block": "fp8"}


def mla_shape(model) -> tuple:
    return (model.hidden_size, model.num_heads, model.q_lora_rank, model.kv_lora_rank, model.qk_rope_head_dim,
            model.head_dim, model.v_head_dim)


def mla_tables_from_frame(frame, model, tps: list[int], notes: list, phase: str = "generation"
                          ) -> list[MLAModuleTable]:  # fmt: skip
    """MLA modules measured at the model's shape: per projection dtype, the slices of the heads
    one rank holds at each tp and each KV dtype. Decode: the KV dtype's densest kernel, seq = KV
    length. Prefill: the engine switches kernels with the prompt length, so each cell takes the
    fastest kernel measured there, seq = prompt length."""
    names = [name for name, shape in MLA_SHAPES.items() if shape == mla_shape(model)]
    rows = frame[frame["model"].isin(names) & (frame["mla_dtype"] == "bfloat16")]
    if rows.empty:
        notes.append(f"no MLA module measured at {model.name}'s shape: its attention from the roofline")
        return []
    rows = rows.assign(seq=rows["isl"] + (rows["step"] if phase == "generation" else 0))
    head_dim = model.kv_lora_rank + model.qk_rope_head_dim
    wanted = sorted({model.num_heads // tp for tp in tps})
    out = []
    for source_gemm, gemm_dtype in MLA_GEMM_DTYPES.items():
        kept = []
        for source_kv, kv_dtype in KV_DTYPES.items():
            part = rows[(rows["gemm_type"] == source_gemm) & (rows["kv_cache_dtype"] == source_kv)]
            if part.empty:
                continue
            if phase == "generation":
                kernel = densest(part)
                part = part[part["kernel_source"] == kernel]
            else:
                kernel = " / ".join(sorted(set(part["kernel_source"])))
            for heads, group in part.groupby("num_heads"):
                if int(heads) in wanted:
                    kept.append((AttentionSlice(heads=int(heads), kv_heads=1, head_dim=head_dim, kv_dtype=kv_dtype,
                                                kernel=kernel, us=""), group))
        if kept and phase == "context":
            # kernels switch at different prompt lengths per heads count: keep the lengths every
            # slice measured, so no slice has a column to carry across a gap
            common = set.intersection(*({int(v) for v in g["seq"]} for _, g in kept))
            kept = [(x, g[g["seq"].isin(common)]) for x, g in kept]
        if kept:
            out.append(MLAModuleTable(phase=phase, gemm_dtype=gemm_dtype, source_gemm_dtype=source_gemm,
                                      table=attention_table(kept)))
    return out


def mla_tables(system: AicSystem, backend: str, version: str, model, tps: list[int], files: dict,
                notes: list) -> list[MLAModuleTable]:
    out = []
    for phase in ("generation", "context"):
        name = f"mla_{phase}_module"
        found = system.table_dir("mla", backend, version, name)
        if found is None:
            notes.append(f"no {backend} {name} table: that MLA phase from the roofline")
            continue
        folder, used_version = found
        frame = read_table(folder, name)
        missing = [c for c in ("model", "mla_dtype", "gemm_type", "kv_cache_dtype", "kernel_source", "num_heads",
                               "batch_size", "isl", "step", "latency") if c not in frame]  # fmt: skip
        if missing:
            raise ConfigError(f"{folder}/{name}_perf: missing column(s) {', '.join(missing)}")
        tables = mla_tables_from_frame(frame, model, tps, notes, phase)
        if tables:
            kernels = sorted({x.kernel for t in tables for x in t.table.slices})
            files[name] = f"{relative(folder, system.root)}/{name}_perf ({'; '.join(kernels)}, version {used_version})"
        out += tables
    return out

"""`llmsim calibrate --from-aiconfigurator`: aiconfigurator-core's measured kernel tables ->
one llmsim kernel-table file for one model on one GPU under one serving engine.

For every tensor-parallel degree the model can be split by (1, 2, 4, 8), the converter works out
the per-rank shapes (simulator/execution/kernels/shapes.py) and keeps only the measurements the
step model will read for them: the GEMM sites at or around each N x K, the attention slices at
or around each rank's heads, the collectives for those rank counts. It asks the runtime's own
selection rules which ones those are, so file and model cannot disagree.

A mixture of experts gets its MoE layer (the measurements of its hidden size, expert width, top-k
and expert count, at every expert layout of up to a node's GPUs and every expert dtype measured)
and the GEMMs of its attention projections, dense MLPs, shared experts and LM head; its
attention and exchanges stay on the roofline, so no attention or collective tables are kept.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from calibration.fitting.aiconfigurator_source import (
    BACKENDS,
    LICENCE,
    PACKAGE,
    AicSystem,
    open_system,
    read_table,
    relative,
)
from simulator.common.errors import ConfigError, unknown_choice
from simulator.execution.kernels.attention import resolve_slice
from simulator.execution.kernels.gemm import GemmCurves
from simulator.execution.kernels.moe_step_model import attention_gemms, mlp_gemms
from simulator.execution.kernels.op_table import (
    FORMAT,
    AttentionSlice,
    AttentionTable,
    CollectiveCurve,
    CollectiveTable,
    ElementwiseModel,
    GemmSite,
    GemmTable,
    KernelTables,
    MLAModuleTable,
    MoELayout,
    MoETable,
    Source,
    format_numbers,
    version_key,
    write_kernel_tables,
)
from simulator.execution.kernels.shapes import Gemm, rank_shapes, valid_tp_degrees
from simulator.spec import get_model

# per-tensor fp8 W8A8, as vLLM serves fp8 checkpoints; NVFP4 W4A4 where measured (Blackwell)
GEMM_DTYPES = {"bfloat16": "bf16", "fp8": "fp8", "nvfp4": "fp4"}
KV_DTYPES = {"bfloat16": "bf16", "fp8": "fp8"}
MS_TO_US = 1000.0
ELEMENT_BYTES = 2.0  # collective tables count 16-bit elements


def _densest(frame, column: str = "kernel_source") -> str:
    """The kernel with the most measurements (the engine's main path for that table)."""
    counts = frame.groupby(column).size()
    return str(counts.sort_values(ascending=False, kind="stable").index[0])


def gemm_table_from_frame(frame, source_dtype: str) -> GemmTable | None:
    """Every measured shape of one GEMM dtype (its densest kernel), as one of our GEMM tables."""
    rows = frame[frame["gemm_dtype"] == source_dtype]
    if rows.empty:
        return None
    kernel = _densest(rows)
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
        kernel = _densest(rows)
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


def _gemm_tables(system: AicSystem, backend: str, version: str, gemms, files: dict) -> list[GemmTable]:
    found = system.table_dir("gemm", backend, version, "gemm")
    if found is None:
        raise ConfigError(f"aiconfigurator {system.name}: no {backend} GEMM table at or below {version}")
    folder, used_version = found
    frame = read_table(folder, "gemm")
    out = []
    for source_dtype, dtype in GEMM_DTYPES.items():
        full = gemm_table_from_frame(frame, source_dtype)
        if full is None:
            continue
        kernel = full.kernel
        curves = GemmCurves(full)
        used = set()
        for g in gemms:
            used |= curves.used_sites(g.n, g.k)
        full.sites = [s for s in full.sites if (s.n, s.k) in used]
        out.append(full)
        files[f"gemm_{dtype}"] = f"{relative(folder, system.root)}/gemm_perf ({kernel}, version {used_version})"
    if not out:
        raise ConfigError(f"aiconfigurator {system.name}/{backend}: no bfloat16, fp8 or nvfp4 GEMM measurements")
    return out


def _attention_table(system: AicSystem, backend: str, version: str, phase: str, shapes_by_tp,
                     head_dim: int, files: dict, notes: list) -> AttentionTable | None:
    table = f"{phase}_attention"
    found = system.table_dir("attention", backend, version, table)
    if found is None:
        notes.append(f"no {table} table: the model prices it with the roofline")
        return None
    folder, used_version = found
    candidates = attention_candidates(read_table(folder, table), phase, head_dim)
    kernels = sorted({f"{s.kv_dtype}: {s.kernel}" for s, _ in candidates})
    if not candidates:
        notes.append(f"{table}: nothing measured at head dim {head_dim}")
        return None
    probe = AttentionTable(batch="1", seq="1", slices=[s for s, _ in candidates])
    used = set()
    for shapes in shapes_by_tp.values():
        for kv_dtype in {s.kv_dtype for s, _ in candidates}:
            resolved = resolve_slice(probe, shapes.heads, shapes.kv_heads, head_dim, kv_dtype)
            if resolved is None:
                notes.append(f"{table}: no slice for {shapes.heads}/{shapes.kv_heads} heads {kv_dtype} (tp {shapes.tp})")
                continue
            used |= {id(s) for s, _ in resolved[0]}
    kept = [(s, g) for s, g in candidates if id(s) in used]
    files[table] = f"{relative(folder, system.root)}/{table}_perf ({'; '.join(kernels)}, version {used_version})"
    return attention_table(kept)


def _collectives(system: AicSystem, backend: str, version: str, ranks: list[int], files: dict,
                 notes: list) -> CollectiveTable | None:
    curves, sizes = [], set()
    found = system.table_dir("comm", backend, version, "custom_allreduce")
    if found is not None:
        folder, used_version = found
        frame = read_table(folder, "custom_allreduce")
        frame = frame[frame["allreduce_dtype"] == "bfloat16"]
        for kernel, rows in frame.groupby("kernel_source"):
            mode = "custom_graph" if "graph" in kernel else "custom_eager" if "eager" in kernel else "custom"
            curves += [("all_reduce", mode, kernel, r) for r in _by_ranks(rows, ranks)]
        files["custom_allreduce"] = f"{relative(folder, system.root)}/custom_allreduce_perf (version {used_version})"
    else:
        notes.append(f"no {backend} custom all-reduce table")
    nccl_version = str(system.spec.get("misc", {}).get("nccl_version", ""))
    nccl_versions = system.versions("comm", "nccl")
    if nccl_versions:
        chosen = nccl_version if nccl_version in nccl_versions else nccl_versions[-1]
        folder = system.data_dir / "comm" / "nccl" / chosen
        frame = read_table(folder, "nccl")
        frame = frame[frame["nccl_dtype"] == "half"]
        for op in ("all_reduce", "all_gather"):
            curves += [(op, "nccl", "NCCL", r) for r in _by_ranks(frame[frame["op_name"] == op], ranks)]
        files["nccl"] = f"{relative(folder, system.root)}/nccl_perf (NCCL {chosen})"
    if not curves:
        return None
    for *_, rows in curves:
        sizes |= {int(v) for v in rows["message_size"]}
    axis = np.array(sorted(sizes), dtype=float)
    out = []
    for op, mode, kernel, rows in curves:
        series = rows.groupby("message_size")["latency"].min().reindex(axis)
        out.append(CollectiveCurve(op=op, implementation=mode, ranks=int(rows["num_gpus"].iloc[0]), kernel=kernel,
                                   us=format_numbers(series.to_numpy() * MS_TO_US)))
    return CollectiveTable(bytes=format_numbers(axis * ELEMENT_BYTES), curves=out)


def _by_ranks(rows, ranks: list[int]):
    return [group for n, group in rows.groupby("num_gpus") if int(n) in ranks]


def _device(system: AicSystem, backend: str, version: str) -> str:
    found = system.table_dir("gemm", backend, version, "gemm")
    if found is None:
        return ""
    frame = read_table(*found[:1], "gemm")
    return str(frame["device"].iloc[0]) if "device" in frame and len(frame) else ""


def convert(system_name: str, backend: str, model_name: str, version: str | None = None,
            aiconfigurator_root: str | None = None, command: str = "") -> KernelTables:
    """Build the kernel-table file contents for one model on one aiconfigurator system."""
    if backend not in BACKENDS:
        raise ConfigError(unknown_choice("backend", backend, BACKENDS))
    system, hardware = open_system(system_name, aiconfigurator_root)
    known = sorted({v for family in ("gemm", "attention") for v in system.versions(family, backend)}, key=version_key)
    if not known:
        raise ConfigError(f"aiconfigurator system {system.name!r} has no {backend} tables")
    version = version or system.current_version(backend)
    if version not in known:
        raise ConfigError(f"--version {version}: {system.name} has {backend} tables for {', '.join(known)}")
    model = get_model(model_name)
    gpus = int(system.spec.get("node", {}).get("num_gpus_per_node", 8))
    files, notes = {}, []
    if model.is_moe:
        tps = moe_attention_tps(model, gpus)
        gemm = _gemm_tables(system, backend, version, moe_model_gemms(model, tps), files)
        moe = _moe_tables(system, backend, version, model, gpus, files, notes)
        mla = _mla_tables(system, backend, version, model, tps, files, notes) if model.uses_mla else []
        return _tables(system, hardware, backend, version, model, tps, files, notes, command, gemm=gemm, moe=moe,
                       mla=mla)
    tps = [tp for tp in valid_tp_degrees(model) if tp <= gpus]
    shapes_by_tp = {tp: rank_shapes(model, tp) for tp in tps}
    gemm = _gemm_tables(system, backend, version, [g for shapes in shapes_by_tp.values()
                                                   for g in (*shapes.layer_gemms, shapes.lm_head)], files)
    context = _attention_table(system, backend, version, "context", shapes_by_tp, model.head_dim, files, notes)
    generation = _attention_table(system, backend, version, "generation", shapes_by_tp, model.head_dim, files, notes)
    collectives = _collectives(system, backend, version, [tp for tp in tps if tp > 1], files, notes)
    return _tables(system, hardware, backend, version, model, tps, files, notes, command, gemm=gemm,
                   context_attention=context, generation_attention=generation, collectives=collectives)


def _tables(system: AicSystem, hardware: str, backend: str, version: str, model, tps: list[int], files: dict,
            notes: list, command: str, **families) -> KernelTables:
    """The file's header fields around its families of tables."""
    gpu = system.spec.get("gpu", {})
    efficiency = float(gpu.get("mem_bw_empirical_scaling_factor", 0.8))
    floor_s = float(gpu.get("mem_empirical_constant_latency", 3e-6))
    source = Source(
        package=PACKAGE, package_version=system.package_version, licence=LICENCE, system=system.name,
        device=_device(system, backend, version), backend=backend, backend_version=version, files=files,
        converted_on=datetime.date.today().isoformat(), command=command, notes=notes,
    )
    elementwise = ElementwiseModel(
        bandwidth_efficiency=efficiency, floor_us=floor_s * 1e6,
        source=f"{PACKAGE} {system.package_version} systems/{system.name}.yaml: mem_bw_empirical_scaling_factor "
        f"{efficiency:g}, mem_empirical_constant_latency {floor_s:g} s (its analytic model of memory-bound "
        "kernels; it ships no measured table for them)",
    )
    return KernelTables(format=FORMAT, model=model.name, hardware=hardware, engine=backend, engine_version=version,
                        tensor_parallel=tps, source=source, elementwise=elementwise, **families)


# --- mixtures of experts --------------------------------------------------------------------
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
    distribution = "balanced" if "balanced" in distributions else _densest(rows, "distribution")
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


def _moe_tables(system: AicSystem, backend: str, version: str, model, gpus: int, files: dict,
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
                kernel = _densest(part)
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


def _mla_tables(system: AicSystem, backend: str, version: str, model, tps: list[int], files: dict,
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

def _header(tables: KernelTables) -> str:
    s = tables.source
    return (
        f"# {tables.model} on {tables.hardware} under {s.backend} {s.backend_version}: measured kernel times from\n"
        f"# {s.package} {s.package_version} ({s.licence}), system {s.system} ({s.device}), converted {s.converted_on}.\n"
        "# Times in microseconds; axes and tables are space-separated numbers (nan: not measured).\n"
        "# Format: simulator/execution/kernels/op_table.py; how a step is priced: docs/kernel_tables.md.\n"
        + (f"# MoE layers: {s.files['moe']}.\n" if "moe" in s.files else "")
        + "".join(f"# MLA {what} layers: {s.files[key]}.\n" for what, key in
                  (("decode", "mla_generation_module"), ("prefill", "mla_context_module")) if key in s.files)
    )


def write(tables: KernelTables, out: str | Path) -> Path:
    """Write the file with its provenance header; an existing file of another kind is kept."""
    return write_kernel_tables(tables, out, _header(tables))


def run_cli(args) -> int:
    if not args.model:
        raise ConfigError("--from-aiconfigurator needs --model (a catalog model, e.g. llama-3-8b)")
    if not args.out:
        raise ConfigError("--from-aiconfigurator needs --out FILE")
    command = (f"llmsim calibrate --from-aiconfigurator {args.from_aiconfigurator} --backend {args.backend}"
               f"{f' --version {args.version}' if args.version else ''} --model {args.model} --out {args.out}")
    tables = convert(args.from_aiconfigurator, args.backend, args.model, args.version, args.aiconfigurator_root,
                     command)
    path = write(tables, args.out)
    kb = path.stat().st_size / 1024
    s = tables.source
    print(f"kernel tables: {path} ({kb:.0f} KB) for {tables.model} on {tables.hardware}, tp {tables.tensor_parallel}, "
          f"from {s.package} {s.package_version} {s.system} {s.backend} {s.backend_version}")
    for note in s.notes:
        print(f"  note: {note}")
    return 0

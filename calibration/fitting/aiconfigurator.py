"""`llmsim calibrate --from-aiconfigurator`: aiconfigurator-core's measured kernel tables ->
one llmsim kernel-table file for one model on one GPU under one serving engine.

For every tensor-parallel degree the model can be split by (1, 2, 4, 8), the converter works out
the per-rank shapes (simulator/execution/kernels/shapes.py) and keeps only the measurements the
step model will read for them: the GEMM sites at or around each N x K, the attention slices at
or around each rank's heads, the collectives for those rank counts. It asks the runtime's own
selection rules which ones those are, so file and model cannot disagree.

A mixture of experts gets its MoE layer (the measurements of its hidden size, expert width, top-k
and expert count, at every expert layout of up to a node's GPUs and every expert dtype measured),
the GEMMs of its attention projections, dense MLPs, shared experts and LM head, and with latent
attention its measured MLA modules (calibration/fitting/aiconfigurator_moe.py); its exchanges
stay on the roofline, so no collective tables are kept.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from calibration.fitting.aiconfigurator_frames import (
    GEMM_DTYPES,
    MS_TO_US,
    attention_candidates,
    attention_table,
    gemm_table_from_frame,
)
from calibration.fitting.aiconfigurator_moe import (
    mla_tables,
    moe_attention_tps,
    moe_model_gemms,
    moe_tables,
)
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
from simulator.execution.kernels.op_table import (
    FORMAT,
    AttentionTable,
    CollectiveCurve,
    CollectiveTable,
    ElementwiseModel,
    GemmTable,
    KernelTables,
    Source,
    format_numbers,
    version_key,
    write_kernel_tables,
)
from simulator.execution.kernels.shapes import rank_shapes, valid_tp_degrees
from simulator.spec import get_model

ELEMENT_BYTES = 2.0  # collective tables count 16-bit elements


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
        moe = moe_tables(system, backend, version, model, gpus, files, notes)
        mla = mla_tables(system, backend, version, model, tps, files, notes) if model.uses_mla else []
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

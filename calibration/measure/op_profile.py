"""`llmsim profile --ops`: the kernel tables of a catalog model, measured on this device with the
engine's own kernels, written in the kernel-table format (simulator/execution/kernels/op_table.py).

What is timed is what the backend runs for a step: GEMMs through `backend.layers.linear` (the
native small-matrix kernels and oneDNN on CPU, cuBLAS through torch on CUDA) at every N x K the
model's ranks multiply at TP 1/2/4/8, along an M axis of token counts, the weight rotated among
copies so each call reads it from memory as a step streaming every layer does; prefill and
decode attention through `backend.attention.paged_attention` over a paged KV cache, by batch x
sequence per rank's heads / KV heads / head dim; all-reduce and all-gather over torch.distributed
when several GPUs are visible (op_collectives.py); and the norm, rotary, cache-write and
activation ops, to which the element-wise constants are fitted (op_elementwise.py). Timing:
op_timing.py (CPU wall clock, or CUDA events with synchronisation), warm-up, medians of
interleaved repeats in random order.
"""

from __future__ import annotations

import itertools
import time
from datetime import date
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from backend import native
from backend.attention import StepBatch, paged_attention, prepare_step
from backend.device import dtype_name, resolve_device, resolve_dtype
from backend.kv_cache import PagedKVCache
from backend.layers import linear
from calibration.measure import op_collectives, peaks
from calibration.measure.op_elementwise import elementwise_cases, fit_elementwise
from calibration.measure.op_grid import OpPlan, Slice, model_ops, plan_for
from calibration.measure.op_timing import median_seconds, timer_for
from simulator.common.errors import ConfigError
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
    Source,
    format_numbers,
    write_kernel_tables,
)
from simulator.execution.kernels.shapes import rank_shapes
from simulator.spec import get_hardware, get_model, hardware_names

ENGINE = "llmsim"
BLOCK = 16
COLD_BYTES = {"cpu": 256 << 20, "cuda": 512 << 20}  # weight copies rotated per GEMM: more than the caches
MAX_COPIES = 16
TABLE_DTYPES = {"fp32": "fp32", "bf16": "bf16", "fp16": "bf16"}  # fp16 runs at bf16's speed (step_model)


def _version() -> str:
    try:
        return metadata.version("llmsim")
    except metadata.PackageNotFoundError:
        return "unknown"


# --- GEMMs ------------------------------------------------------------------------------------
def gemm_cases(gemms, ms, dtype, device):
    """One case per (site, M): y = linear(x[:M], W) with W cycling through cold copies."""
    top = max(ms)
    gen = torch.Generator().manual_seed(0)
    inputs = {k: torch.randn(top, k, generator=gen).to(dtype=dtype, device=device) for k in sorted({k for _, k in gemms})}
    cases = []
    for n, k in gemms:
        copies = max(1, min(MAX_COPIES, COLD_BYTES[device.type] // (n * k * torch.finfo(dtype).bits // 8)))
        weights = [(torch.randn(n, k, generator=gen) * 0.02).to(dtype=dtype, device=device) for _ in range(copies)]
        x, cycle = inputs[k], itertools.cycle(weights)
        cases += [((n, k, m), lambda m=m, x=x, cycle=cycle: linear(x[:m], next(cycle))) for m in ms]
    return cases


def _gemm_kernel(dtype: torch.dtype, device: torch.device) -> str:
    if device.type == "cpu" and dtype == torch.float32:
        native_part = f"native small-matrix kernel up to {native.MAX_ROWS} rows, " if native.available() else ""
        return f"backend.layers.linear: {native_part}oneDNN fp32 above"
    return f"backend.layers.linear: torch F.linear ({'cuBLAS' if device.type == 'cuda' else 'aten'})"


# --- attention --------------------------------------------------------------------------------
def _cells(batches, seqs, budget):
    return [(b, s) for b in batches for s in seqs if b * s <= budget]


def context_cases(s: Slice, plan: OpPlan, dtype, device):
    """Prefill attention of b sequences of s new tokens each, nothing cached (the table has no
    cached-prefix axis; the step model scales it for one)."""
    kv = PagedKVCache(1, 1, BLOCK, s.kv_heads, s.head_dim, dtype, device)  # nothing cached: never read
    cells = _cells(plan.context_batch, plan.context_seq, plan.context_tokens)
    most = max(b * seq for b, seq in cells)
    q = torch.randn(most, s.heads, s.head_dim).to(dtype=dtype, device=device)  # cells take prefixes
    k = torch.randn(most, s.kv_heads, s.head_dim).to(dtype=dtype, device=device)
    v = torch.randn_like(k)
    cases = []
    for b, seq in cells:
        step = prepare_step(StepBatch([[0] * seq] * b, [0] * b, [[0] * -(-seq // BLOCK)] * b), BLOCK, device)
        n = b * seq
        cases.append(((b, seq), lambda n=n, step=step: paged_attention(q[:n], k[:n], v[:n], step, kv, 0)))
    return cases


def decode_cases(s: Slice, plan: OpPlan, dtype, device):
    """Decode attention of b rows, each reading a KV length of `length` from the paged cache."""
    cells = _cells(plan.decode_batch, plan.decode_len, plan.decode_tokens)
    most = max(b * -(-length // BLOCK) for b, length in cells)
    kv = PagedKVCache(1, most, BLOCK, s.kv_heads, s.head_dim, dtype, device)  # shared by every cell
    q = torch.randn(max(b for b, _ in cells), s.heads, s.head_dim).to(dtype=dtype, device=device)
    cases = []
    for b, length in cells:
        per = -(-length // BLOCK)
        tables = [list(range(i * per, (i + 1) * per)) for i in range(b)]
        step = prepare_step(StepBatch([[0]] * b, [length - 1] * b, tables), BLOCK, device)
        cases.append(((b, length), lambda b=b, step=step: paged_attention(q[:b], None, None, step, kv, 0)))
    return cases


def _attention_table(slices, batches, seqs, measured: dict, kv_dtype: str, kernel: str) -> AttentionTable:
    out = []
    for s in slices:
        grid = np.array([[measured.get((s, b, q), np.nan) * 1e6 for q in seqs] for b in batches])
        out.append(AttentionSlice(heads=s.heads, kv_heads=s.kv_heads, head_dim=s.head_dim, kv_dtype=kv_dtype,
                                  kernel=kernel, us=format_numbers(grid.ravel())))  # fmt: skip
    return AttentionTable(batch=format_numbers(batches), seq=format_numbers(seqs), slices=out)


def _decode_kernel(dtype: torch.dtype, device: torch.device, head_dim: int) -> str:
    if device.type == "cpu" and dtype == torch.float32 and head_dim % native.HEAD_DIM_MULTIPLE == 0 \
            and native.available():  # fmt: skip
        return "backend.attention: native paged decode attention"
    return "backend.attention: blocks gathered, torch scaled_dot_product_attention with a length mask"


# --- the whole file ---------------------------------------------------------------------------
def _hardware(name: str | None, device: torch.device, dtype: torch.dtype) -> tuple[str, float, str]:
    """(hardware name, reference bandwidth the element-wise efficiency is a fraction of, its source)."""
    if name is None and device.type == "cuda":
        raise ConfigError(f"--ops on {torch.cuda.get_device_name(device)}: pass --hardware with its catalog name "
                          f"(one of {', '.join(hardware_names())}), the name scenarios use for it")  # fmt: skip
    if name is not None and name in hardware_names():
        return name, get_hardware(name).memory_bandwidth, f"the catalog's {name} memory bandwidth"
    if device.type == "cuda":
        raise ConfigError(f"--hardware: got {name!r}; allowed: {', '.join(hardware_names())}")
    measured = peaks.memory_read_bandwidth(device, dtype)
    return name or "cpu-host", measured, "this CPU's measured streaming read bandwidth (llmsim profile's)"


def profile_ops(
    model: str, out: str | Path, *, device: str = "auto", dtype: str = "fp32", hardware: str | None = None,
    quick: bool = False, threads: int | None = None, progress: bool = True, command: str = "",
) -> KernelTables:  # fmt: skip
    """Measure the model's kernel tables on `device` and write them to `out` (YAML)."""
    out = Path(out)
    if out.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"--out {out}: a kernel-table file must end in .yaml")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads: got {threads}; allowed: 1 or more")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        tables = _measure(model, device, dtype, hardware, quick, progress, command)
    finally:
        torch.set_num_threads(previous)
    write(tables, out)
    return tables


def _measure(model, device, dtype, hardware, quick, progress, command) -> KernelTables:
    started = time.perf_counter()
    spec = get_model(model)
    ops = model_ops(spec)
    dev, torch_dtype = resolve_device(device), resolve_dtype(dtype)
    table_dtype = TABLE_DTYPES[dtype_name(torch_dtype)]
    plan = plan_for(dev.type, quick)
    timer = timer_for(dev)
    hw_name, reference, reference_source = _hardware(hardware, dev, torch_dtype)
    notes = [f"torch {torch.__version__}" + (f", CUDA {torch.version.cuda}" if dev.type == "cuda" else "")
             + f", {torch.get_num_threads()} CPU threads, dtype {dtype_name(torch_dtype)}"]  # fmt: skip

    def timed(cases):
        seconds = median_seconds(timer, [fn for _, fn in cases], warmup=plan.warmup, repeats=plan.repeats,
                                 progress=progress)  # fmt: skip
        return dict(zip([key for key, _ in cases], seconds))

    gemm = timed(gemm_cases(ops.gemms, plan.gemm_m, torch_dtype, dev))
    sites = [GemmSite(n=n, k=k, us=format_numbers([gemm[(n, k, m)] * 1e6 for m in plan.gemm_m]))
             for n, k in ops.gemms]  # fmt: skip
    gemm_table = GemmTable(dtype=table_dtype, kernel=_gemm_kernel(torch_dtype, dev), m=format_numbers(plan.gemm_m),
                           n_max=max(n for n, _ in ops.gemms), k_max=max(k for _, k in ops.gemms), sites=sites)
    context, decode = {}, {}
    for s in ops.slices:
        context.update({(s, *key): t for key, t in timed(context_cases(s, plan, torch_dtype, dev)).items()})
        decode.update({(s, *key): t for key, t in timed(decode_cases(s, plan, torch_dtype, dev)).items()})
    context_table = _attention_table(ops.slices, plan.context_batch, plan.context_seq, context, table_dtype,
                                     "backend.attention: torch scaled_dot_product_attention per chunk, causal")
    decode_table = _attention_table(ops.slices, plan.decode_batch, plan.decode_len, decode, table_dtype,
                                    _decode_kernel(torch_dtype, dev, spec.head_dim))
    shapes = rank_shapes(spec, 1)
    kv_bytes = torch.finfo(torch_dtype).bits / 8
    ew_cases = elementwise_cases(shapes, plan.elementwise_m, torch_dtype, dev)
    ew_seconds = median_seconds(timer, [c.run for c in ew_cases], warmup=plan.warmup, repeats=plan.repeats,
                                progress=progress)  # fmt: skip
    bandwidth, floor, worst = fit_elementwise(ew_cases, ew_seconds, shapes, kv_bytes)
    elementwise = ElementwiseModel(
        bandwidth_efficiency=round(min(1.0, bandwidth / reference), 4), floor_us=round(floor * 1e6, 3),
        source=f"fitted to {len(ew_cases)} timings of the engine's {', '.join(sorted({c.op for c in ew_cases}))} at "
        f"{len(plan.elementwise_m)} token counts (largest error {worst:.0%}): {bandwidth / 1e9:.1f} GB/s against the "
        f"step model's byte counts, as a fraction of {reference / 1e9:.1f} GB/s, {reference_source}",
    )  # fmt: skip
    collectives = _collectives(ops.tensor_parallel, plan, dev, notes)
    device_name = peaks.device_name(dev)
    return KernelTables(
        format=FORMAT, model=spec.name, hardware=hw_name, engine=ENGINE, engine_version=_version(),
        tensor_parallel=list(ops.tensor_parallel),
        source=Source(package="llmsim", package_version=_version(), licence="Apache-2.0", system=device_name,
                      device=device_name, backend=ENGINE, backend_version=_version(),
                      files={"gemm": gemm_table.kernel, "context_attention": context_table.slices[0].kernel,
                             "generation_attention": decode_table.slices[0].kernel,
                             "elementwise": "backend ops: add_and_norm, rotary + cache write, silu_and_mul"},
                      converted_on=date.today().isoformat(), command=command,
                      notes=[*notes, (f"measured in {time.perf_counter() - started:.0f} s, {plan.repeats} repeats "
                                     f"after {plan.warmup} warm-up rounds; {'quick' if quick else 'full'} grid")]),
        gemm=[gemm_table], context_attention=context_table, generation_attention=decode_table,
        collectives=collectives, elementwise=elementwise,
    )  # fmt: skip


def _collectives(tensor_parallel, plan: OpPlan, device: torch.device, notes: list) -> CollectiveTable | None:
    ranks = op_collectives.rank_counts(tensor_parallel) if device.type == "cuda" else []
    wanted = [tp for tp in tensor_parallel if tp > 1]
    if not wanted:
        return None
    if not ranks:
        notes.append(f"collectives not measured ({'one device' if device.type == 'cuda' else 'a CPU'}: "
                     f"{op_collectives.visible_gpus()} GPU(s) visible); TP {', '.join(map(str, wanted))} "
                     "all-reduces and gathers use the roofline's ring formula")  # fmt: skip
        return None
    sizes = list(plan.collective_bytes)
    curves = []
    for r in ranks:
        measured = op_collectives.measure(r, sizes, plan.warmup, plan.repeats)
        for op in op_collectives.OPS:
            curves.append(CollectiveCurve(op=op, implementation="nccl", ranks=r, kernel=f"torch.distributed {op} (NCCL)",
                                          us=format_numbers([measured[(op, b)] * 1e6 for b in sizes])))  # fmt: skip
    notes.append("collectives are NCCL through torch.distributed: scenarios read them with execution.allreduce: nccl")
    return CollectiveTable(bytes=format_numbers(sizes), curves=curves)


def _header(tables: KernelTables) -> str:
    s = tables.source
    return (
        f"# {tables.model} on {tables.hardware} ({s.device}): kernel times measured with llmsim {s.package_version}'s\n"
        f"# own engine kernels by `llmsim profile --ops`, {s.converted_on}.\n"
        "# Times in microseconds; axes and tables are space-separated numbers (nan: not measured).\n"
        "# Format: simulator/execution/kernels/op_table.py; use it with execution: {kernel_tables: PATH}.\n"
    )


def write(tables: KernelTables, out: str | Path) -> Path:
    """Write the file with its provenance header; an existing file of another kind is kept."""
    return write_kernel_tables(tables, out, _header(tables))


def run_ops(args) -> int:
    """`llmsim profile --ops`: measure, write, and say what the file holds."""
    unused = [flag for flag, value in (("--quantization", args.quantization), ("--max-tokens", args.max_tokens),
                                       ("--max-batch", args.max_batch), ("--kv-gb", args.kv_gb),
                                       ("--repeats", args.repeats)) if value is not None]  # fmt: skip
    if unused:
        raise ConfigError(f"{', '.join(unused)}: not used with --ops (its grid is fixed per device; --quick shortens it)")
    command = (f"llmsim profile --ops --model {args.model} --device {args.device} --dtype {args.dtype}"
               f"{f' --hardware {args.hardware}' if args.hardware else ''}{' --quick' if args.quick else ''}"
               f"{f' --threads {args.threads}' if args.threads else ''} --out {args.out}")  # fmt: skip
    tables = profile_ops(args.model, args.out, device=args.device, dtype=args.dtype, hardware=args.hardware,
                         quick=args.quick, threads=args.threads, command=command)  # fmt: skip
    g, ew = tables.gemm[0], tables.elementwise
    kb = Path(args.out).stat().st_size / 1024
    print(f"kernel tables: {args.out} ({kb:.0f} KB) for {tables.model} on {tables.hardware} ({tables.source.device}), "
          f"tp {tables.tensor_parallel}")
    print(f"  gemm {g.dtype}: {len(g.sites)} N x K sites x {len(g.m.split())} M; attention: "
          f"{len(tables.context_attention.slices)} prefill and {len(tables.generation_attention.slices)} decode "
          f"slices; element-wise: {ew.bandwidth_efficiency:g} of the reference bandwidth, {ew.floor_us:g} us floor")
    for note in tables.source.notes:
        print(f"  note: {note}")
    print(f"use it from a scenario: execution: {{kernel_tables: {args.out}}} (hardware named {tables.hardware})")
    return 0

"""Accuracy of the kernel-table step model, and its speed next to the roofline.

    .venv/bin/python benchmarks/bench_kernel_tables.py accuracy [--systems h100-sxm,a100-80gb] [--every 3]
    .venv/bin/python benchmarks/bench_kernel_tables.py moe-accuracy [--systems h100-sxm,h200,b200] [--every 3]
    .venv/bin/python benchmarks/bench_kernel_tables.py steps
    .venv/bin/python benchmarks/bench_kernel_tables.py against-aiconfigurator
    .venv/bin/python benchmarks/bench_kernel_tables.py speed [--rounds 2]

accuracy (needs the aiconfigurator extra): leave-shapes-out error of every interpolation rule
the model uses, on aiconfigurator-core's full measured tables. Every k-th measured point of an
axis (an M of a GEMM, an N x K shape, a batch or a sequence length of an attention slice, a
heads slice, a message size) is held out, predicted from the rest with the runtime's own code,
and compared with its measurement; MAPE per kernel family and region.
moe-accuracy (needs the extra): the same for the MoE layer, along its tokens axis, on every curve
of aiconfigurator-core's vLLM MoE table (each shape x dtype x kernel x layout, balanced routing),
and DeepSeek-V3's MLA modules along batch and KV length (decode) or prompt length (prefill).
against-aiconfigurator (needs the extra): the same steps' kernel sums next to aiconfigurator's
own engine, which reads the same tables (differences are composition, not accuracy).
steps: decode and prefill step times of Llama-3-70B TP4 on H100 and Llama-3-8B on A100 from the
shipped tables next to the roofline's, with the weight-streaming bound.
speed: the Azure conversation trace (benchmarks/bench_simulator.py) with kernel tables and with
the roofline, alternating in one process; prints the wall-time ratio.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from simulator.execution.kernels.attention import SlicePricer, resolve_slice
from simulator.execution.kernels.gemm import GemmCurves, SpeedOfLight
from simulator.execution.kernels.interpolate import curve_on
from simulator.execution.kernels.op_table import GemmTable, parse_numbers

GEMM_REGIONS = [(1, 16, "M 1-16"), (17, 256, "M 17-256"), (257, 4096, "M 257-4096"), (4097, 1e9, "M >4096")]
SEQ_REGIONS = [(0, 512, "<=512"), (513, 4096, "513-4096"), (4097, 1e9, ">4096")]
BYTE_REGIONS = [(0, 2**20, "<=1 MB"), (2**20 + 1, 64 * 2**20, "1-64 MB"), (64 * 2**20 + 1, 1e18, ">64 MB")]


def region(value, regions) -> str:
    return next(name for lo, hi, name in regions if lo <= value <= hi)


class Errors:
    def __init__(self):
        self.by = defaultdict(list)

    def add(self, family: str, where: str, predicted, measured) -> None:
        predicted, measured = np.atleast_1d(predicted), np.atleast_1d(measured)
        ok = np.isfinite(measured) & (measured > 0) & np.isfinite(predicted)
        self.by[(family, where)].extend((predicted[ok] / measured[ok] - 1).tolist())

    def table(self) -> str:
        lines = [f"| {'family':<34} | {'region':<16} | {'points':>7} | {'MAPE':>6} | {'p90 |err|':>9} | {'bias':>6} |",
                 f"|{'-' * 36}|{'-' * 18}|{'-' * 9}:|{'-' * 7}:|{'-' * 10}:|{'-' * 7}:|"]
        for (family, where), errs in sorted(self.by.items()):
            e = np.array(errs)
            lines.append(f"| {family:<34} | {where:<16} | {len(e):>7} | {np.mean(np.abs(e)):>6.1%} | "
                         f"{np.quantile(np.abs(e), 0.9):>9.1%} | {np.median(e):>+6.1%} |")
        return "\n".join(lines)


# --- GEMM -----------------------------------------------------------------------------------
def gemm_along_m(table: GemmTable, errors: Errors, every: int) -> None:
    m = parse_numbers(table.m)
    for site in table.sites:
        us = parse_numbers(site.us)
        held = np.array([i % every == 1 and 0 < i < len(m) - 1 for i in range(len(m))])
        keep = ~held & np.isfinite(us)
        predicted, _ = curve_on(m[held], m[keep], us[keep])
        for mi, p, t in zip(m[held], predicted, us[held]):
            errors.add("GEMM, measured shape, along M", region(mi, GEMM_REGIONS), p, t)


def gemm_across_shapes(table: GemmTable, sol: SpeedOfLight, errors: Errors, every: int) -> None:
    """Hold out every k-th LLM-sized N x K shape; interpolate it from its neighbours."""
    m = parse_numbers(table.m)
    ns = sorted({s.n for s in table.sites})
    ks = sorted({s.k for s in table.sites})
    interior = [s for s in table.sites if ns[0] < s.n < ns[-1] and ks[0] < s.k < ks[-1] and s.n >= 512 and s.k >= 512]
    for i, site in enumerate(interior):
        if i % every:
            continue
        rest = table.model_copy(update={"sites": [s for s in table.sites if s is not site]})
        predicted, _ = GemmCurves(rest).times(site.n, site.k, m, sol)
        measured = parse_numbers(site.us) * 1e-6
        for mi, p, t in zip(m, predicted, measured):
            errors.add("GEMM, N x K between measured", region(mi, GEMM_REGIONS), p, t)


def gemm_column_split(table: GemmTable, errors: Errors) -> None:
    """N = 2 x the measured N priced as two column blocks, against N's own measurement."""
    m = parse_numbers(table.m)
    sites = {(s.n, s.k): parse_numbers(s.us) for s in table.sites}
    for (n, k), us in sites.items():
        half = sites.get((n // 2, k))
        if half is None or n < 4096 or k < 1024:
            continue
        for mi, p, t in zip(m, 2 * half, us):
            errors.add("GEMM, N split into column blocks", region(mi, GEMM_REGIONS), p, t)


# --- attention ------------------------------------------------------------------------------
def _measured_grid(table, s):
    batch, seq = parse_numbers(table.batch), parse_numbers(table.seq)
    return batch, seq, parse_numbers(s.us).reshape(len(batch), len(seq)) * 1e-6


def _predict(table, s, growth, b, seq_values):
    """Per-step seconds of a batch of b rows at each seq value, through the runtime pricer."""
    pricer = SlicePricer(table.model_copy(update={"slices": [s]}), s.heads, s.kv_heads, s.head_dim, s.kv_dtype,
                         growth)
    per_row, _, _ = pricer.knots(int(b))
    if growth == 1.0:  # decode: linear in L between knots
        return np.interp(seq_values, pricer.seq, per_row) * b
    return np.interp(seq_values, pricer.seq, np.sqrt(per_row)) ** 2 * b


def _drop(table, s, axis: str, index: int):
    """The table and slice with one batch (axis 'batch') or seq value held out."""
    batch, seq, grid = _measured_grid(table, s)
    if axis == "batch":
        batch, grid = np.delete(batch, index), np.delete(grid, index, axis=0)
    else:
        seq, grid = np.delete(seq, index), np.delete(grid, index, axis=1)
    from simulator.execution.kernels.op_table import format_numbers

    t = table.model_copy(update={"batch": format_numbers(batch), "seq": format_numbers(seq)})
    return t, s.model_copy(update={"us": format_numbers(grid.ravel() * 1e6)})


def attention_holdout(table, phase: str, errors: Errors, every: int, label: str = "") -> None:
    growth = 1.0 if phase == "decode" else 2.0
    label = label or f"{phase} attention"
    for s in table.slices:
        batch, seq, grid = _measured_grid(table, s)
        for j in range(1, len(seq) - 1):  # hold out a sequence length
            if j % every != 1:
                continue
            t, reduced = _drop(table, s, "seq", j)
            for i, b in enumerate(batch):
                if np.isfinite(grid[i, j]) and np.isfinite(grid[i, j + 1]):
                    p = _predict(t, reduced, growth, b, np.array([seq[j]]))[0]
                    errors.add(f"{label}, along seq", region(seq[j], SEQ_REGIONS), p, grid[i, j])
        for i in range(1, len(batch) - 1):  # hold out a batch size
            if i % every != 1:
                continue
            t, reduced = _drop(table, s, "batch", i)
            ok = np.isfinite(grid[i]) & np.isfinite(grid[i + 1])
            if ok.any():
                p = _predict(t, reduced, growth, batch[i], seq[ok])
                for sv, pv, mv in zip(seq[ok], p, grid[i][ok]):
                    errors.add(f"{label}, along batch", region(sv, SEQ_REGIONS), pv, mv)


def heads_holdout(table, phase: str, errors: Errors) -> None:
    """Each slice between two measured query-head counts (same KV heads) predicted from them,
    and each multi-head slice from one with fewer heads at a proportionally larger batch."""
    growth = 1.0 if phase == "decode" else 2.0
    for s in table.slices:
        others = table.model_copy(update={"slices": [o for o in table.slices if o is not s]})
        resolved = resolve_slice(others, s.heads, s.kv_heads, s.head_dim, s.kv_dtype)
        if resolved is None:
            continue
        parts, multiplier, _ = resolved
        kind = "heads between measured" if len(parts) == 2 else "heads -> batch transfer"
        pricer = SlicePricer(others, s.heads, s.kv_heads, s.head_dim, s.kv_dtype, growth)
        batch, seq, grid = _measured_grid(table, s)
        for i, b in enumerate(batch):
            if b * multiplier > batch[-1]:
                continue
            per_row, _, _ = pricer.knots(int(b))
            ok = np.isfinite(grid[i])
            for sv, pv, mv in zip(seq[ok], per_row[ok] * b, grid[i][ok]):
                errors.add(f"{phase} attention, {kind}", region(sv, SEQ_REGIONS), pv, mv)


# --- collectives ----------------------------------------------------------------------------
def collectives_holdout(table, errors: Errors, every: int) -> None:
    sizes = parse_numbers(table.bytes)
    for c in table.curves:
        us = parse_numbers(c.us)
        held = np.array([i % every == 1 and 0 < i < len(sizes) - 1 for i in range(len(sizes))]) & np.isfinite(us)
        keep = ~held & np.isfinite(us)
        predicted, _ = curve_on(sizes[held], sizes[keep], us[keep])
        for sz, p, t in zip(sizes[held], predicted, us[held]):
            errors.add(f"{c.op} {c.implementation}", region(sz, BYTE_REGIONS), p, t)


def accuracy(systems: list[str], every: int) -> None:
    from calibration.fitting.aiconfigurator import _collectives
    from calibration.fitting.aiconfigurator_frames import (
        attention_candidates,
        attention_table,
        gemm_table_from_frame,
    )
    from calibration.fitting.aiconfigurator_source import open_system, read_table
    from simulator.spec import get_hardware

    errors = Errors()
    for name in systems:
        system, hardware = open_system(name)
        hw = get_hardware(hardware)
        version = system.current_version("vllm")
        folder, _ = system.table_dir("gemm", "vllm", version, "gemm")
        frame = read_table(folder, "gemm")
        table = gemm_table_from_frame(frame, "bfloat16")
        sol = SpeedOfLight(hw.memory_bandwidth, hw.peak_flops("bf16"), 2.0)
        gemm_along_m(table, errors, every)
        gemm_across_shapes(table, sol, errors, every)
        gemm_column_split(table, errors)
        for phase, name_ in (("prefill", "context_attention"), ("decode", "generation_attention")):
            folder, _ = system.table_dir("attention", "vllm", version, name_)
            candidates = attention_candidates(read_table(folder, name_), "context" if phase == "prefill"
                                              else "generation", 128)
            att = attention_table([(s, g) for s, g in candidates if s.kv_dtype == "bf16"])
            attention_holdout(att, phase, errors, every)
            heads_holdout(att, phase, errors)
        coll = _collectives(system, "vllm", version, [2, 4, 8], {}, [])
        collectives_holdout(coll, errors, every)
        print(f"{name} (vllm {version}) done", flush=True)
    print(errors.table())


# --- MoE layers -----------------------------------------------------------------------------
TOKEN_REGIONS = [(1, 16, "tokens 1-16"), (17, 256, "tokens 17-256"), (257, 4096, "tokens 257-4096"),
                 (4097, 1e9, "tokens >4096")]


def moe_holdout(frame, errors: Errors, every: int, label: str) -> int:
    """Hold out every k-th interior token count of each measured curve; predict it with the
    runtime's MoE curve from the rest. Returns the number of curves."""
    from simulator.execution.kernels.moe import MoECurve
    from simulator.execution.kernels.op_table import MoELayout, MoETable, format_numbers

    frame = frame[frame["distribution"] == "balanced"]
    keys = ["moe_dtype", "kernel_source", "hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size",
            "moe_ep_size"]
    curves = 0
    for key, group in frame.groupby(keys):
        series = group.groupby("num_tokens")["latency"].min()
        tokens, ms = series.index.to_numpy(dtype=float), series.to_numpy()
        if len(tokens) < 4:
            continue
        held = np.array([i % every == 1 and 0 < i < len(tokens) - 1 for i in range(len(tokens))])
        layout = MoELayout(tp=int(key[6]), ep=int(key[7]), us=format_numbers(ms[~held] * 1000, 12))
        table = MoETable(dtype="x", hidden=int(key[2]), inter=int(key[3]), topk=int(key[4]), experts=int(key[5]),
                         distribution="balanced", tokens=format_numbers(tokens[~held]), layouts=[layout])
        predicted, _ = MoECurve(table, layout.tp, layout.ep).seconds_at(tokens[held])
        for t, p, m in zip(tokens[held], predicted, ms[held] * 1e-3):
            errors.add(label, region(t, TOKEN_REGIONS), p, m)
        curves += 1
    return curves


def moe_accuracy(systems: list[str], every: int) -> None:
    from calibration.fitting.aiconfigurator_moe import mla_tables_from_frame
    from calibration.fitting.aiconfigurator_source import open_system, read_table
    from simulator.spec import get_model

    errors = Errors()
    catalog = {(7168, 2048, 8, 256), (4096, 1536, 8, 128), (2048, 768, 8, 128), (2880, 2880, 4, 32),
               (2880, 2880, 4, 128), (4096, 14336, 2, 8), (5120, 8192, 1, 16)}  # llmsim's MoE models
    for name in systems:
        system, _ = open_system(name)
        version = system.current_version("vllm")
        folder, used = system.table_dir("moe", "vllm", version, "moe")
        frame = read_table(folder, "moe")
        shape = list(zip(frame["hidden_size"], frame["inter_size"], frame["topk"], frame["num_experts"]))
        mine = np.array([s in catalog for s in shape])
        n_all = moe_holdout(frame, errors, every, "MoE layer, along tokens (all shapes)")
        n_mine = moe_holdout(frame[mine], errors, every, "MoE layer, along tokens (catalog shapes)")
        print(f"{name} (vllm {used}): {n_all} curves, {n_mine} of the catalog's shapes", flush=True)
        for phase, rule, what in (("generation", "decode", "decode"), ("context", "prefill", "prefill")):
            found = system.table_dir("mla", "vllm", version, f"mla_{phase}_module")
            if found is None:
                continue
            # DeepSeek-V3's MLA modules, read like decode and prefill attention
            frame = read_table(found[0], f"mla_{phase}_module")
            for t in mla_tables_from_frame(frame, get_model("deepseek-v3"), [1, 2, 4, 8], [], phase):
                attention_holdout(t.table, rule, errors, every, label=f"MLA {what} module, {t.gemm_dtype} GEMMs")
    print(errors.table())


# --- step times -----------------------------------------------------------------------------
def steps() -> None:
    from simulator.execution import RooflineModel
    from simulator.execution.kernels.op_table import load_kernel_tables
    from simulator.execution.kernels.overhead import DEFAULTS, HostOverhead
    from simulator.execution.kernels.resolve import find_tables
    from simulator.execution.kernels.step_model import KernelTableModel
    from simulator.spec import get_hardware, get_model
    from simulator.spec.memory import streamed_weight_bytes_per_gpu

    bare = HostOverhead(step_s=0.0, per_sequence_s=0.0, launch_s=0.0)
    print("| deployment | step | kernel tables, ms | kernels only, ms | roofline, ms | weight-read bound, ms |")
    print("|---|---|---:|---:|---:|---:|")
    for model_name, hw_name, tp in (("llama-3-70b", "h100-sxm", 4), ("llama-3-70b", "h100-sxm", 8),
                                    ("llama-3-8b", "a100-80gb", 1)):
        model, hw = get_model(model_name), get_hardware(hw_name)
        path, _ = find_tables("vllm", None, hw_name, model_name)
        tables = load_kernel_tables(path)
        full = KernelTableModel(tables, model, hw, tp=tp, overhead=DEFAULTS["vllm"])
        kernels = KernelTableModel(tables, model, hw, tp=tp, overhead=bare)
        roof = RooflineModel(model, hw, tp=tp, weight_dtype="bf16", kv_dtype="bf16")
        bound = streamed_weight_bytes_per_gpu(model, "bf16", tp) / hw.memory_bandwidth
        name = f"{model_name} TP{tp} {hw_name} (vllm {tables.engine_version})"
        cases = [(f"decode b={b}, 1k context", np.ones(b), np.full(b, 1023)) for b in (1, 8, 32, 64)]
        cases += [(f"prefill {n} tokens", np.array([n]), np.array([0])) for n in (512, 2048)]
        for label, new, cached in cases:
            t_full, t_kern, t_roof = (x.step_time(new, cached) * 1e3 for x in (full, kernels, roof))
            check = bound * 1e3
            flag = "" if t_kern >= check else " (below the bound!)"
            print(f"| {name} | {label} | {t_full:.2f} | {t_kern:.2f} | {t_roof:.2f} | {check:.2f}{flag} |")


# --- composition next to aiconfigurator's own engine ----------------------------------------
def against_aiconfigurator() -> None:
    """Kernel sums of our composition next to aiconfigurator's engine on the same tables (not an
    accuracy check: both read the same measurements; differences are composition)."""
    import logging

    from aiconfigurator_core.sdk.engine import EngineHandle

    from simulator.execution.kernels.op_table import load_kernel_tables
    from simulator.execution.kernels.overhead import HostOverhead
    from simulator.execution.kernels.resolve import find_tables
    from simulator.execution.kernels.step_model import KernelTableModel
    from simulator.spec import get_hardware, get_model

    logging.disable(logging.WARNING)
    bare = HostOverhead(step_s=0.0, per_sequence_s=0.0, launch_s=0.0)
    print("| deployment | step | llmsim kernels, ms | aiconfigurator, ms | difference |")
    print("|---|---|---:|---:|---:|")
    for hf, model_name, hw_name, system, tp in (("meta-llama/Meta-Llama-3.1-8B", "llama-3-8b", "h100-sxm", "h100_sxm", 1),
                                                ("meta-llama/Meta-Llama-3.1-70B", "llama-3-70b", "h100-sxm", "h100_sxm", 4),
                                                ("meta-llama/Meta-Llama-3.1-8B", "llama-3-8b", "a100-80gb", "a100_sxm", 1)):
        path, _ = find_tables("vllm", None, hw_name, model_name)
        ours = KernelTableModel(load_kernel_tables(path), get_model(model_name), get_hardware(hw_name), tp=tp,
                                overhead=bare)
        theirs = EngineHandle.compile(hf, system, "vllm", tp_size=tp)
        for b in (1, 8, 32, 64):
            mine = ours.step_time(np.ones(b), np.full(b, 1023)) * 1e3
            aic = theirs.decode_step_latency(b, 1024, 2)
            print(f"| {model_name} TP{tp} {hw_name} | decode b={b}, 1k context | {mine:.2f} | {aic:.2f} | "
                  f"{mine / aic - 1:+.1%} |")
        for n in (512, 2048):
            mine = ours.step_time(np.array([n]), np.array([0])) * 1e3
            aic = theirs.predict_prefill_latency(1, n, 0)
            print(f"| {model_name} TP{tp} {hw_name} | prefill {n} | {mine:.2f} | {aic:.2f} | {mine / aic - 1:+.1%} |")


# --- speed ----------------------------------------------------------------------------------
def speed(rounds: int) -> None:
    from pathlib import Path

    from simulator.scenario import load_scenario, run

    scenario_path = Path(__file__).resolve().parent.parent / "scenarios" / "azure_conv_a100.yaml"
    variants = {
        "kernel tables": ["deployment.replicas=4"],
        "roofline": ["deployment.replicas=4", "execution.kernel_tables=false"],
    }
    times = defaultdict(list)
    for _ in range(rounds):
        for name, overrides in variants.items():
            scenario = load_scenario(scenario_path, overrides)
            start = time.perf_counter()
            results = run(scenario)
            times[name].append(time.perf_counter() - start)
            print(f"{name}: {times[name][-1]:.1f} s, {results.info['steps']:,} steps, "
                  f"sources {results.info['step_sources']}", flush=True)
    best = {name: min(t) for name, t in times.items()}
    print(f"best of {rounds}: kernel tables {best['kernel tables']:.1f} s, roofline {best['roofline']:.1f} s, "
          f"ratio {best['kernel tables'] / best['roofline']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("accuracy")
    p.add_argument("--systems", default="h100-sxm,a100-80gb")
    p.add_argument("--every", type=int, default=3, help="hold out every k-th point of an axis (default 3)")
    p = sub.add_parser("moe-accuracy")
    p.add_argument("--systems", default="h100-sxm,h200,b200")
    p.add_argument("--every", type=int, default=3, help="hold out every k-th token count (default 3)")
    sub.add_parser("steps")
    sub.add_parser("against-aiconfigurator")
    p = sub.add_parser("speed")
    p.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.command == "accuracy":
        accuracy(args.systems.split(","), args.every)
    elif args.command == "moe-accuracy":
        moe_accuracy(args.systems.split(","), args.every)
    elif args.command == "steps":
        steps()
    elif args.command == "against-aiconfigurator":
        against_aiconfigurator()
    else:
        speed(args.rounds)


if __name__ == "__main__":
    main()

"""Terminal tables for `llmsim sweep` and `llmsim plan` (rich)."""

from __future__ import annotations

import math
import sys

import pandas as pd
from rich.console import Console
from rich.table import Table

from simulator.execution.kernels.provenance import count_line
from simulator.studies.plan import PlanResult
from simulator.studies.sweep import SweepResult


def _f(value, fmt: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def _spread(mean, std) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return _f(mean) if std is None or math.isnan(std) or std == 0 else f"{mean:,.0f} ± {std:,.0f}"


def _console() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=160)  # files and pipes get whole rows


def print_sweep(result: SweepResult, console: Console | None = None) -> None:
    console = console or _console()
    table = Table(title=f"{result.name}: sweep (means over {int(result.points['seeds'].max())} seed(s); "
                  "± one standard deviation)", title_justify="left")
    for key in result.keys:
        table.add_column(key.split(".")[-1], justify="right")
    for col in ("TTFT p50", "TTFT p90", "TTFT p99", "TPOT p50", "TPOT p90", "TPOT p99", "attain.", "P(SLO met)"):
        table.add_column(col + (" ms" if col.startswith("T") else ""), justify="right")
    for _, row in result.points.iterrows():
        style = "red" if row["saturated"] else ("green" if row["slo_met"] else None)
        cells = [str(row[k]) for k in result.keys]
        cells += [_f(row["ttft_p50_ms"]), _spread(row["ttft_p90_ms"], row["ttft_p90_std_ms"]), _f(row["ttft_p99_ms"]),
                  _f(row["tpot_p50_ms"], ",.1f"), _spread(row["tpot_p90_ms"], row["tpot_p90_std_ms"]),
                  _f(row["tpot_p99_ms"], ",.1f"), _f(row["attainment_pct"], ".1f") + "%",
                  f"{row['p_slo_met']:.0%}" + (" SATURATED" if row["saturated"] else "")]
        table.add_row(*cells, style=style)
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}")
    print_step_models(result.step_models, console)
    if result.rule:
        console.print(f"SLO rule: {result.rule}; a point meets it when every seed does.")
    for res in result.max_rate:
        others = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in res.items() if "." in k)
        bracket = res["bracket"]
        upper = "?" if bracket[1] is None else f"{bracket[1]:.4g}"
        line = f"highest rate meeting the SLOs{' (' + others + ')' if others else ''}: [bold]{res['max_rate']:.4g}[/] " \
               f"req/s (bracket {bracket[0]:.4g}-{upper})"
        console.print(line + (f" — {res['note']}" if res.get("note") else ""))


def print_step_models(models: dict[str, dict[str, int]], console: Console) -> None:
    """One line per step-time source: where the numbers came from and how each step was priced."""
    for model, counts in sorted(models.items()):
        console.print(f"step times: {model}; {count_line(counts)}", highlight=False, markup=False)


def print_plan(result: PlanResult, console: Console | None = None, top: int = 15) -> None:
    console = console or _console()
    c = result.candidates
    counts = c["status"].value_counts().to_dict()
    console.rule(f"[bold]{result.name}: plan")
    console.print(f"target: {result.target}; SLOs: {result.rule}; seeds: {result.seeds}")
    console.print(f"candidates: {len(c)} (" + ", ".join(f"{counts.get(s, 0)} {s}" for s in
                                                     ("met", "missed", "pruned", "rejected"))
                  + f"); {result.simulations} simulations run")
    for note in result.notes:
        console.print(f"note: {note}")
    print_step_models(result.step_models, console)
    sim = c[c["status"].isin(["met", "missed"])]
    sim = sim.assign(_miss=sim["status"] != "met").sort_values(["_miss", "usd_per_hour", "ttft_p90_ms"])
    table = Table(title=f"simulated candidates: meeting the SLOs cheapest first, then misses "
                  f"(first {min(top, len(sim))} of {len(sim)}; candidates.csv has all)",
                  title_justify="left")
    for col in ("GPU", "TP", "dtype", "seqs", "chunk", "replicas", "$/h", "$/1M out", "TTFT p90 ms",
                "TPOT p90 ms", "attain.", "P(met)", "headroom", "status"):
        table.add_column(col, justify="left" if col in ("GPU", "dtype", "status") else "right")
    for idx, row in sim.head(top).iterrows():
        headroom = row.get("headroom")
        upper = row.get("headroom_upper")
        head = "-" if headroom is None or pd.isna(headroom) else (
            f">= {headroom:.2f}x" if pd.isna(upper) else f"{headroom:.2f}-{upper:.2f}x")
        style = "bold green" if idx == result.winner else ("green" if row["status"] == "met" else "dim")
        table.add_row(
            row["hardware"], str(row["tensor_parallel"]), row["weight_dtype"], str(row["max_num_seqs"]),
            str(row["chunk_size"]), str(row["replicas"]), _f(row["usd_per_hour"], ",.2f"),
            _f(row["usd_per_1m_output_tokens"], ",.3f"), _spread(row["ttft_p90_ms"], row["ttft_p90_std_ms"]),
            _spread(row["tpot_p90_ms"], row["tpot_p90_std_ms"]), _f(row["attainment_pct"], ".1f") + "%",
            f"{row['p_slo_met']:.0%}", head, row["status"] + (f" ({row['stage']})" if row["stage"] == "screen" else ""),
            style=style,
        )
    console.print(table)
    rejected = c[c["status"] == "rejected"].drop_duplicates(subset=["hardware", "tensor_parallel", "weight_dtype", "reason"])
    if len(rejected):
        console.print("[bold]rejected before simulation:")
        groups = c[["hardware", "tensor_parallel", "weight_dtype"]].drop_duplicates()
        for reason, rows in rejected.groupby("reason", sort=False):
            labels = rows[["hardware", "tensor_parallel", "weight_dtype"]].drop_duplicates()
            if len(labels) == len(groups) and len(groups) > 1:
                which = f"all {len(groups)} GPU/TP/dtype groups"
            else:
                which = ", ".join(f"{r.hardware} tp={r.tensor_parallel} {r.weight_dtype}" for r in labels.itertuples())
            console.print(f"  {reason}: {which}")
    if result.feasible:
        w = c.loc[result.winner]
        console.print(
            f"[bold green]answer: {int(w['replicas'])} x {w['hardware']} (tp={int(w['tensor_parallel'])}, "
            f"{w['weight_dtype']}, max_num_seqs={int(w['max_num_seqs'])}, chunk={int(w['chunk_size'])}) "
            f"= {int(w['gpus'])} GPUs, ${w['usd_per_hour']:,.2f}/h; p90 TTFT {w['ttft_p90_ms']:,.0f} ms, "
            f"p90 TPOT {w['tpot_p90_ms']:,.1f} ms, SLOs met in {w['p_slo_met']:.0%} of seeds"
        )
    elif result.closest is not None:
        w = c.loc[result.closest]
        console.print("[bold red]no candidate meets every SLO.")
        console.print(
            f"closest: {int(w['replicas'])} x {w['hardware']} (tp={int(w['tensor_parallel'])}, {w['weight_dtype']}), "
            f"${w['usd_per_hour']:,.2f}/h, which misses: {w['reason']}"
        )
    else:
        console.print("[bold red]no candidate could be simulated: every one was rejected (see above).")

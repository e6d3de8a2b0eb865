"""Terminal tables for `llmsim sweep` and `llmsim plan` (rich)."""

from __future__ import annotations

import math

import pandas as pd
from rich.console import Console
from rich.table import Table

from simulator.common.console import report_console
from simulator.execution.kernels.provenance import count_line
from simulator.scenario.plan_schema import layout_label
from simulator.studies.plan_result import PlanResult
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
    return report_console(160)


def print_sweep(result: SweepResult, console: Console | None = None) -> None:
    console = console or _console()
    seeds = int(result.points["seeds"].max())
    table = Table(title=f"{result.name}: sweep (means over {seeds} seed(s); latencies in ms at the SLOs' "
                  f"percentiles, [95% interval over seeds])", title_justify="left")
    for key in result.keys:
        table.add_column(key.split(".")[-1], justify="right")
    shown = result.decisive or [{"key": f"{m}_p{p}", "metric": m, "percentile": p}
                                for m in ("ttft", "tpot") for p in (50, 90, 99)]
    for d in shown:
        table.add_column(f"{d['metric'].upper()} p{d['percentile']}", justify="right")
    for col in ("attain.", "P(SLO met)", "window", "busy", "batch occ."):
        table.add_column(col, justify="left" if col == "window" else "right")
    for _, row in result.points.iterrows():
        style = "red" if row["saturated"] else ("green" if row["slo_met"] else None)
        cells = [str(row[k]) for k in result.keys]
        cells += [_ci(row, d["key"], _digits(d["metric"])) for d in shown]
        cells += [_f(row["attainment_pct"], ".1f") + "%", f"{row['p_slo_met']:.0%}" + (" SATURATED" if row["saturated"]
                  else ""), _window(row), _f(row.get("gpu_busy"), ".0%"), _f(row.get("batch_occupancy"), ".0%")]
        table.add_row(*cells, style=style)
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    print_step_models(result.step_models, console)
    if result.rule:
        console.print(f"SLO rule: {result.rule}; a point meets it when every seed does.", highlight=False)
    unsteady = result.points[~result.points["steady"].astype(bool) & ~result.points["saturated"].astype(bool)]
    for _, row in unsteady.iterrows():
        where = ", ".join(f"{k.split('.')[-1]}={row[k]}" for k in result.keys)
        console.print(f"[yellow]not steady at {where}: {row['steady_reason']}", highlight=False)
    for res in result.max_rate:
        others = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in res.items() if "." in k)
        bracket = res["bracket"]
        upper = "?" if bracket[1] is None else f"{bracket[1]:.4g}"
        line = f"highest rate meeting the SLOs{' (' + others + ')' if others else ''}: [bold]{res['max_rate']:.4g}[/] " \
               f"req/s (bracket {bracket[0]:.4g}-{upper}): the sustainable rate, the capacity that busy and " \
               "batch occupancy only hint at"
        console.print(line + (f" — {res['note']}" if res.get("note") else ""))


def print_step_models(models: dict[str, dict[str, int]], console: Console) -> None:
    """One line per step-time source: where the numbers came from and how each step was priced."""
    for model, counts in sorted(models.items()):
        console.print(f"step times: {model}; {count_line(counts)}", highlight=False, markup=False)


def _ci(row, key: str, digits: str = ",.0f") -> str:
    """A decisive percentile with its interval: 412 [380-440]."""
    value = row.get(f"{key}_ms")
    if value is None or pd.isna(value):
        return "-"
    low, high = row.get(f"{key}_ci_low_ms"), row.get(f"{key}_ci_high_ms")
    text = format(value, digits)
    if low is not None and high is not None and not pd.isna(low) and not pd.isna(high):
        text += f" [{format(low, digits)}-{format(high, digits)}]"
    return text


def _digits(metric: str) -> str:
    return ",.1f" if metric in ("tpot", "itl") else ",.0f"


def _headroom(row) -> str:
    headroom, upper = row.get("headroom"), row.get("headroom_upper")
    if headroom is None or pd.isna(headroom):
        return "-"
    return f">= {headroom:.2f}x" if upper is None or pd.isna(upper) else f"{headroom:.2f}-{upper:.2f}x"


def _window(row) -> str:
    window = row.get("window_s")
    if window is None or pd.isna(window):
        return "-"
    mark = "" if row.get("steady") else " (not steady)"
    return f"{row.get('warmup_s', 0):.0f}+{window:.0f} s{mark}"


def print_plan(result: PlanResult, console: Console | None = None, top: int = 15) -> None:
    console = console or _console()
    c = result.candidates
    counts = c["status"].value_counts().to_dict()
    console.rule(f"[bold]{result.name}: plan")
    console.print(f"target: {result.target}; SLOs: {result.rule}; seeds: {result.seeds}", highlight=False)
    console.print(f"candidates: {len(c)} (" + ", ".join(f"{counts.get(s, 0)} {s}" for s in
                                                     ("met", "missed", "pruned", "rejected"))
                  + f"); {result.simulations} simulations run", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    print_step_models(result.step_models, console)
    decisive = result.decisive
    sim = c[c["status"].isin(["met", "missed"])]
    tie = f"{decisive[0]['key']}_ms" if decisive else "ttft_p90_ms"
    sim = sim.assign(_miss=sim["status"] != "met").sort_values(["_miss", "usd_per_hour", tie])
    table = Table(title=f"simulated candidates: meeting the SLOs cheapest first, then misses "
                  f"(first {min(top, len(sim))} of {len(sim)}; candidates.csv has all). Latencies at the "
                  "SLOs' percentiles, ms, [95% interval]", title_justify="left")
    headroom_label = "headroom" + (" (n+1, 1 seed)" if "n+1" in result.headroom_basis else " (1 seed)")
    columns = ["GPU", "layout", "dtype", "seqs", "replicas", "$/h", "$/month", "$/1M out",
               *(f"{d['metric'].upper()} p{d['percentile']}" for d in decisive), "attain.", "P(met)",
               "window", "batch occ.", headroom_label, "status"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("GPU", "dtype", "status", "window") else "right")
    for idx, row in sim.head(top).iterrows():
        style = "bold green" if idx == result.winner else ("green" if row["status"] == "met" else "dim")
        table.add_row(
            row["hardware"], layout_label(row), row["weight_dtype"], str(row["max_num_seqs"]),
            str(row["replicas"]), _f(row["usd_per_hour"], ",.2f"), _f(row.get("usd_per_month"), ",.0f"),
            _f(row["usd_per_1m_output_tokens"], ",.3f"),
            *(_ci(row, d["key"], _digits(d["metric"])) for d in decisive),
            _f(row["attainment_pct"], ".1f") + "%", _f(row["p_slo_met"], ".0%"), _window(row),
            _f(row.get("batch_occupancy"), ".0%"), _headroom(row),
            row["status"] + (f" ({row['stage']})" if row["stage"] in ("screen", "long") else ""),
            style=style,
        )
    console.print(table)
    console.print(f"headroom: {result.headroom_basis}", highlight=False)
    _print_rejected(result, console)
    _print_answer(result, console)


def _print_rejected(result: PlanResult, console: Console) -> None:
    if not result.rejected_groups:
        return
    kept = result.groups - len(result.rejected_groups)
    console.print(f"[bold]pre-checks: {len(result.rejected_groups)} of {result.groups} GPU/TP/dtype groups rejected "
                  f"before simulation, {kept} simulated:")
    by_reason: dict[str, list[str]] = {}
    for label, reason in result.rejected_groups.items():
        by_reason.setdefault(reason, []).append(label)
    for reason, labels in by_reason.items():
        console.print(f"  {', '.join(labels)}: {reason}", highlight=False, markup=False)


def _print_answer(result: PlanResult, console: Console) -> None:
    c = result.candidates
    if result.feasible:
        w = c.loc[result.winner]
        stats = ", ".join(f"{d['metric'].upper()} p{d['percentile']} {_ci(w, d['key'], _digits(d['metric']))} ms "
                          f"(limit {d['limit_ms']:g})" for d in result.decisive)
        console.print(
            f"[bold green]answer: {int(w['replicas'])} x {w['hardware']} ({layout_label(w)}, "
            f"{w['weight_dtype']}, max_num_seqs={int(w['max_num_seqs'])}) = {int(w['gpus'])} GPUs, "
            f"${w['usd_per_hour']:,.2f}/h, ${w['usd_per_month']:,.0f}/month, "
            f"${_f(w.get('usd_per_1m_output_tokens'), ',.3f')} per 1M output tokens "
            f"(${_f(w.get('usd_per_1m_total_tokens'), ',.4f')} per 1M prompt + output tokens)", highlight=False)
        console.print(f"  {stats}; SLOs met in {w['p_slo_met']:.0%} of {int(w['seeds_run'])} seed(s) "
                      f"(intervals: {w.get('ci_basis') or '-'})", highlight=False)
        if not pd.isna(w.get("window_s")):
            console.print(f"  window: {w['warmup_s']:.0f} s warm-up discarded, {w['window_s']:.0f} s measured; "
                          f"steady state: {'yes' if w['steady'] else 'NO'} ({w['steady_reason']})",
                          highlight=False)
        if "long_window_s" in c and w.get("long_window_s") is not None and not pd.isna(w.get("long_window_s")):
            long = ", ".join(f"{d['metric'].upper()} p{d['percentile']} {w['long_' + d['key'] + '_ms']:,.1f} ms"
                             for d in result.decisive)
            console.print(f"  holds over a {result.confirm_factor:g}x longer window ({w['long_window_s']:.0f} s, "
                          f"first seed): {long}; steady: {'yes' if w['long_steady'] else 'no'}", highlight=False)
        console.print(f"  utilisation: busy {_f(w.get('gpu_busy'), '.0%')}, batch occupancy "
                      f"{_f(w.get('batch_occupancy'), '.0%')} of max_num_seqs, token budget "
                      f"{_f(w.get('token_budget_use'), '.0%')}, KV {_f(w.get('kv_mean'), '.0%')} mean", highlight=False)
    elif result.closest is not None:
        w = c.loc[result.closest]
        console.print("[bold red]no candidate meets every SLO.")
        console.print(
            f"closest: {int(w['replicas'])} x {w['hardware']} ({layout_label(w)}, {w['weight_dtype']}), "
            f"${w['usd_per_hour']:,.2f}/h, which misses: {w['reason']}", highlight=False)
        if result.rejected_groups:
            console.print("groups rejected by the physics pre-check cannot be fixed by more replicas; the others "
                          "might with more than plan.search.replicas.max", highlight=False)
    else:
        console.print("[bold red]no candidate could be simulated: every group was rejected by the pre-checks (above).")

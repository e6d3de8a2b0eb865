"""How a comparison is shown: the terminal table (rich) and its plots (CDF overlays, differences)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from rich.console import Console
from rich.table import Table

from simulator.common.files import result_files
from simulator.metrics.plots import overlay_cdfs, save_figure
from simulator.studies.compare import CONFIDENCE, METRIC_BY_KEY, METRICS, Comparison


def _num(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:,.1f}"
    if magnitude >= 1:
        return f"{value:,.2f}"
    return f"{value:.{digits}g}"


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "") + _num(value)


def _difference(row) -> str:
    if math.isnan(row["diff"]):
        return "-"
    text = _signed(row["diff"])
    if not math.isnan(row["ci_low"]):
        text += f" [{_signed(row['ci_low'])}, {_signed(row['ci_high'])}]"
    if not math.isnan(row["rel_diff_pct"]):
        text += f" ({row['rel_diff_pct']:+.1f}%)"
    return text


_VERDICT_STYLE = {"better": "green", "worse": "red"}


def comparison_table(comparison: Comparison) -> Table:
    table = comparison.table
    reps = len(comparison.seeds)
    title = (
        f"{comparison.name}: {len(comparison.names)} variants, {reps} paired replication(s) "
        f"(seeds {comparison.seeds[0]}-{comparison.seeds[-1]}); means, and differences from "
        f"{comparison.baseline!r} with {CONFIDENCE:.0%} confidence intervals"
    )
    out = Table(title=title, title_justify="left")
    out.add_column("metric")
    out.add_column(comparison.baseline, justify="right")
    for name in comparison.names[1:]:
        out.add_column(name, justify="right")
        out.add_column(f"{name} - {comparison.baseline}", justify="right")
    by = table.set_index(["metric", "variant"])
    for metric in METRICS:
        cells = [f"{metric.label} ({metric.unit})", _num(by.loc[(metric.key, comparison.baseline), "mean"])]
        for name in comparison.names[1:]:
            row = by.loc[(metric.key, name)]
            style = _VERDICT_STYLE.get(row["verdict"])
            cells.append(_num(row["mean"]))
            diff = _difference(row)
            cells.append(f"[{style}]{diff}[/]" if style else diff)
        out.add_row(*cells)
    return out


def print_comparison(comparison: Comparison, console: Console | None = None) -> None:
    console = console or (Console() if sys.stdout.isatty() else Console(width=200))
    console.print(comparison_table(comparison))
    console.print(
        "[green]green[/]: significantly better than the baseline, [red]red[/]: significantly worse "
        f"(the {CONFIDENCE:.0%} interval of the paired difference excludes 0); uncoloured: no significant difference."
    )
    if len(comparison.seeds) < 2:
        console.print("note: one replication gives no confidence interval; use --replications 5 or more.")
    if not comparison.common_random_numbers:
        console.print("[yellow]note: the variants did not serve identical requests (a variant changes the "
                      "workload or the context length), so differences include the change of workload.")
    for name, count in comparison.saturated_runs().items():
        if count:
            console.print(f"[bold red]{name} saturated in {count} of {len(comparison.seeds)} replication(s): "
                          "its latencies grow with the run length and are not meaningful.")


DIFFERENCE_METRICS = ("ttft_p90_ms", "tpot_p90_ms", "e2e_p90_ms", "throughput_rps", "goodput_rps",
                      "slo_attainment_pct", "usd_per_1m_output_tokens")


def differences_figure(comparison: Comparison, metrics: list[str] | None = None) -> Figure:
    """Horizontal bars: each variant's mean paired difference from the baseline, relative to the
    baseline's mean (%), with its confidence interval; green when significantly better, red when
    significantly worse, grey otherwise. Differences spanning more than 200% get a symmetric log
    axis, so that small ones stay visible next to large ones."""
    keys = list(metrics or DIFFERENCE_METRICS)
    others = comparison.names[1:]
    table = comparison.table.set_index(["metric", "variant"])
    fig = Figure(figsize=(8, max(3.0, 0.35 * len(keys) * max(len(others), 1) + 1.5)))
    ax = fig.add_subplot()
    height = 0.8 / max(len(others), 1)
    colors = {"better": "tab:green", "worse": "tab:red"}
    hatches = ["", "//", "..", "xx", "\\\\", "--"]
    largest = 0.0
    handles = []
    for j, name in enumerate(others):
        y = np.arange(len(keys)) + (j - (len(others) - 1) / 2) * height
        rows = [table.loc[(k, name)] for k in keys]
        value = np.array([r["rel_diff_pct"] for r in rows], dtype=float)
        low = np.array([r["rel_ci_low_pct"] for r in rows], dtype=float)
        high = np.array([r["rel_ci_high_pct"] for r in rows], dtype=float)
        err = np.vstack([np.nan_to_num(value - low), np.nan_to_num(high - value)])
        hatch = hatches[j % len(hatches)]
        ax.barh(y, np.nan_to_num(value), height=height * 0.9, xerr=err, capsize=3,
                color=[colors.get(r["verdict"], "0.75") for r in rows], hatch=hatch,
                edgecolor="black", linewidth=0.5)
        handles.append(Patch(facecolor="white", edgecolor="black", hatch=hatch, label=name))
        spread = np.abs(np.concatenate([value, low, high]))
        largest = max(largest, float(np.max(spread[np.isfinite(spread)], initial=0.0)))
    if largest > 200:
        ax.set_xscale("symlog", linthresh=10)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(np.arange(len(keys)))
    ax.set_yticklabels([f"{METRIC_BY_KEY[k].label}\n({'higher' if METRIC_BY_KEY[k].higher_is_better else 'lower'}"
                        " is better)" for k in keys], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"difference from {comparison.baseline} (% of its mean), {CONFIDENCE:.0%} CI")
    ax.set_title(f"Paired differences over {len(comparison.seeds)} replication(s): "
                 "green better, red worse, grey not significant", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if len(others) > 1:
        ax.legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_comparison(comparison: Comparison, out_dir: Path) -> list[Path]:
    """ttft_cdf.png, tpot_cdf.png, e2e_cdf.png (first replication, one line per variant) and
    differences.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {name: comparison.requests[name] for name in comparison.names if name in comparison.requests}
    seed = comparison.seeds[0]
    paths = [
        overlay_cdfs(frames, metric, out_dir / f"{metric}_cdf.png", title=f"{label}, seed {seed}")
        for metric, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "E2E latency"))
    ]
    paths.append(save_figure(differences_figure(comparison), out_dir / "differences.png"))
    return paths


def save_comparison(comparison: Comparison, out_dir: str | Path, *, force: bool = False) -> Path:
    """comparison.csv, comparison.json, runs.csv and plots/, all written into place at once."""
    out = Path(out_dir)
    with result_files(out, force=force) as tmp:
        comparison.table.to_csv(tmp / "comparison.csv", index=False, float_format="%.6g")
        text = json.dumps(comparison.to_dict(), indent=2, allow_nan=False, default=_json_default)
        (tmp / "comparison.json").write_text(text + "\n")
        comparison.runs.drop(columns=["workload"]).to_csv(tmp / "runs.csv", index=False, float_format="%.6g")
        plot_comparison(comparison, tmp / "plots")
    return out


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

"""How a comparison is shown: the terminal table (rich) and its plots (CDF overlays, differences)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from rich.console import Console
from rich.table import Table

from simulator.common.console import report_console
from simulator.common.files import result_files
from simulator.metrics.palette import BETTER, NEUTRAL, WORSE, colours_for
from simulator.metrics.plots import overlay_cdfs, save_figure
from simulator.metrics.tables import write_table
from simulator.studies.compare import CONFIDENCE, METRIC_BY_KEY, METRICS, Comparison


def sig(value: float | None, digits: int = 3) -> str:
    """`digits` significant figures in fixed notation with thousands separators, never
    scientific: 0.0383, 3.83, 383, 38,300."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    rounded = round(value, digits - 1 - magnitude)
    decimals = max(0, digits - 1 - magnitude)
    return f"{rounded:,.{decimals}f}"


def _signed(value: float) -> str:
    return ("+" if value > 0 else "") + sig(value) if value else "0"


def _difference(row) -> str:
    """+12.3 [+5.10, +19.6] ms (+4.20% [+1.70, +6.80]), p=0.012: the difference, its interval,
    the relative difference with its own interval, and the Holm-adjusted p-value."""
    if math.isnan(row["diff"]):
        return "-"
    unit = f" {row['unit']}" if row["unit"] in ("ms", "%") else ""
    text = _signed(row["diff"])
    if not math.isnan(row["ci_low"]):
        text += f" [{_signed(row['ci_low'])}, {_signed(row['ci_high'])}]"
    text += unit
    if not math.isnan(row["rel_diff_pct"]):
        text += f" ({_signed(row['rel_diff_pct'])}%"
        if not math.isnan(row["rel_ci_low_pct"]):
            text += f" [{_signed(row['rel_ci_low_pct'])}, {_signed(row['rel_ci_high_pct'])}]"
        text += ")"
    if not math.isnan(row["p_holm"]):
        text += f", p={sig(row['p_holm'], 2)}"
    return text


_VERDICT_STYLE = {"better": "bold blue", "worse": "bold #D55E00"}
_VERDICT_MARK = {"better": "▲ ", "worse": "▼ "}


def comparison_table(comparison: Comparison) -> Table:
    table = comparison.table
    reps = len(comparison.seeds)
    title = (
        f"{comparison.name}: {len(comparison.names)} variants, {reps} paired replication(s) "
        f"(seeds {comparison.seeds[0]}-{comparison.seeds[-1]}); means, and differences from "
        f"{comparison.baseline!r} with {CONFIDENCE:.0%} paired-bootstrap intervals; values to 3 significant figures"
    )
    out = Table(title=title, title_justify="left")
    out.add_column("metric")
    out.add_column(comparison.baseline, justify="right")
    for name in comparison.names[1:]:
        out.add_column(name, justify="right")
        out.add_column(f"{name} - {comparison.baseline}", justify="right")
    by = table.set_index(["metric", "variant"])
    for metric in METRICS:
        cells = [f"{metric.label} ({metric.unit})", sig(by.loc[(metric.key, comparison.baseline), "mean"])]
        for name in comparison.names[1:]:
            row = by.loc[(metric.key, name)]
            style = _VERDICT_STYLE.get(row["verdict"])
            cells.append(sig(row["mean"]))
            diff = _VERDICT_MARK.get(row["verdict"], "") + _difference(row)
            cells.append(f"[{style}]{diff}[/]" if style else diff)
        out.add_row(*cells)
    return out


def print_comparison(comparison: Comparison, console: Console | None = None) -> None:
    console = console or report_console(200)
    console.print(comparison_table(comparison))
    console.print(
        "[bold blue]▲ blue[/]: significantly better than the baseline, [bold #D55E00]▼ vermillion[/]: significantly "
        f"worse (paired t-test, p Holm-adjusted across the {len(METRICS)} metrics of each variant, < 0.05); "
        "unmarked: no significant difference. Relative differences are ratios of means - 1, their intervals "
        "bootstrapped with the baseline's own spread.", highlight=False
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
    baseline's mean (%), with its bootstrap interval; blue when significantly better, vermillion
    when significantly worse, grey otherwise (Okabe-Ito, colour-blind safe, with ▲/▼ marks). Differences spanning more than 200% get a symmetric log
    axis, so that small ones stay visible next to large ones."""
    keys = list(metrics or DIFFERENCE_METRICS)
    others = comparison.names[1:]
    table = comparison.table.set_index(["metric", "variant"])
    fig = Figure(figsize=(8, max(3.0, 0.35 * len(keys) * max(len(others), 1) + 1.5)))
    ax = fig.add_subplot()
    height = 0.8 / max(len(others), 1)
    colors = {"better": BETTER, "worse": WORSE}
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
                color=[colors.get(r["verdict"], NEUTRAL) for r in rows], hatch=hatch,
                edgecolor="black", linewidth=0.5)
        for yy, v, r in zip(y, value, rows):
            if r["verdict"] in ("better", "worse"):
                ax.annotate("▲" if r["verdict"] == "better" else "▼", (np.nan_to_num(v), yy), fontsize=8,
                            ha="left" if v >= 0 else "right", va="center", xytext=(4 if v >= 0 else -4, 0),
                            textcoords="offset points")
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
    ax.set_xlabel(f"difference from {comparison.baseline} (% of its mean), {CONFIDENCE:.0%} bootstrap interval")
    ax.set_title(f"Paired differences over {len(comparison.seeds)} replication(s): blue ▲ better, "
                 "vermillion ▼ worse (Holm-adjusted p < 0.05), grey not significant", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    if len(others) > 1:
        ax.legend(handles=handles, fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_comparison(comparison: Comparison, out_dir: Path) -> list[Path]:
    """ttft_cdf.png, tpot_cdf.png, e2e_cdf.png (requests of every replication pooled, one line per
    variant in its fixed colour and dash, SLO limits dashed) and differences.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {name: comparison.requests[name] for name in comparison.names if name in comparison.requests}
    colours = colours_for(comparison.names)
    reps = len(comparison.seeds)
    paths = []
    for metric, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "E2E latency")):
        limits = [getattr(slo, f"{metric}_ms") for slo in comparison.slos.values() if slo is not None]
        limit = min((v for v in limits if v is not None), default=None)
        paths.append(overlay_cdfs(frames, metric, out_dir / f"{metric}_cdf.png", colours=colours, slo_ms=limit,
                                  title=f"{label}, {reps} replication(s) pooled (seeds {comparison.seeds[0]}-"
                                  f"{comparison.seeds[-1]})"))
    paths.append(save_figure(differences_figure(comparison), out_dir / "differences.png"))
    return paths


def save_comparison(comparison: Comparison, out_dir: str | Path, *, force: bool = False,
                    formats: tuple[str, ...] = ("csv",)) -> Path:
    """comparison.csv, comparison.json, runs.csv and plots/, all written into place at once."""
    out = Path(out_dir)
    with result_files(out, force=force) as tmp:
        write_table(comparison.table, tmp / "comparison", formats)
        text = json.dumps(comparison.to_dict(), indent=2, allow_nan=False, default=_json_default)
        (tmp / "comparison.json").write_text(text + "\n")
        write_table(comparison.runs.drop(columns=["workload"]), tmp / "runs", formats)
        plot_comparison(comparison, tmp / "plots")
    return out


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

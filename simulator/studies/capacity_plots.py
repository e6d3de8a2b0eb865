"""Plots for capacity planning: load-latency curves (sweep) and cost against latency (plan).
PNG only, built without pyplot like `simulator.metrics.plots`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from simulator.metrics.plots import save_figure

_STYLES = {50: ":", 90: "-", 99: "--"}


def load_latency(points: pd.DataFrame, x: str, out: Path, *, group: list[str] | None = None,
                 slo_ms: dict[str, float] | None = None, max_rate: float | None = None) -> Path:
    """p50/p90/p99 TTFT and TPOT against the swept value `x`, one colour per combination of the
    other swept keys; saturated points are crossed out in red, SLO limits dashed."""
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    groups = points.groupby(group, sort=False) if group else [((), points)]
    colours = [f"C{i}" for i in range(10)]
    for ax, metric in zip(axes, ("ttft", "tpot")):
        for i, (key, rows) in enumerate(groups):
            rows = rows.sort_values(x)
            label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(group or [], np.atleast_1d(key)))
            for p, style in _STYLES.items():
                ax.plot(rows[x], rows[f"{metric}_p{p}_ms"], style, marker="o", markersize=3,
                        color=colours[i % 10], label=f"p{p} {label}".strip())
            sat = rows[rows["saturated"]]
            if len(sat):
                ax.scatter(sat[x], sat[f"{metric}_p90_ms"], marker="x", s=60, color="tab:red", zorder=5,
                           label="saturated" if i == 0 else None)
        limit = (slo_ms or {}).get(metric)
        if limit:
            ax.axhline(limit, color="tab:red", linestyle="--", linewidth=1, label=f"SLO {limit:g} ms")
        if max_rate is not None:
            ax.axvline(max_rate, color="black", linestyle="-.", linewidth=1, label=f"max rate {max_rate:.3g}")
        ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(f"{metric.upper()} (ms)")
        ax.set_title(f"{metric.upper()} against {x.split('.')[-1]}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out)


def pareto(candidates: pd.DataFrame, out: Path, *, winner: int | None = None) -> Path:
    """$/hour against p90 TTFT and p90 TPOT for every simulated candidate; those meeting the
    SLOs in colour, the Pareto front (cheapest for a latency) as a line, the answer starred."""
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    sim = candidates[candidates["status"].isin(["met", "missed"])]
    for ax, metric in zip(axes, ("ttft_p90_ms", "tpot_p90_ms")):
        ok, bad = sim[sim["status"] == "met"], sim[sim["status"] == "missed"]
        ax.scatter(bad[metric], bad["usd_per_hour"], color="0.7", s=18, label="misses the SLOs")
        for i, (hw, rows) in enumerate(ok.groupby("hardware", sort=True)):
            ax.scatter(rows[metric], rows["usd_per_hour"], s=28, color=f"C{i % 10}", label=f"meets: {hw}")
        front = _front(ok, metric)
        if len(front):
            ax.step(front[metric], front["usd_per_hour"], where="post", color="black", linewidth=1,
                    label="Pareto front")
        if winner is not None and winner in candidates.index:
            w = candidates.loc[winner]
            ax.scatter([w[metric]], [w["usd_per_hour"]], marker="*", s=260, color="gold", edgecolor="black",
                       zorder=6, label="cheapest meeting SLOs")
        ax.set_xscale("log")
        ax.set_xlabel(f"p90 {metric.split('_')[0].upper()} (ms)")
        ax.set_ylabel("$ / hour")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("Cost against latency of every simulated candidate")
    fig.tight_layout()
    return save_figure(fig, out)


def _front(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = rows.dropna(subset=[metric]).sort_values([metric, "usd_per_hour"])
    keep, best = [], np.inf
    for idx, cost in zip(rows.index, rows["usd_per_hour"]):
        if cost < best:
            keep.append(idx)
            best = cost
    return rows.loc[keep]

"""Plots for capacity planning: load-latency curves (sweep) and cost against latency (plan).
PNG only, built without pyplot like `simulator.metrics.plots`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from simulator.metrics.palette import CYCLE, NEUTRAL, SLO, WORSE, colour_of
from simulator.metrics.plots import save_figure

_STYLES = {50: ":", 90: "-", 99: "--"}
_AXIS_LABELS = {
    "workload.arrival.rate": "arrival rate (requests/s)",
    "deployment.replicas": "replicas",
    "deployment.tensor_parallel": "tensor-parallel degree",
    "scheduler.max_num_seqs": "max_num_seqs (sequences per step)",
    "scheduler.max_num_batched_tokens": "max_num_batched_tokens (tokens per step)",
    "scheduler.chunk_size": "chunk size (tokens)",
    "workload.arrival.cv": "inter-arrival coefficient of variation",
}


def axis_label(key: str) -> str:
    """A swept field as an axis label with its unit (the field name when it has none listed)."""
    return _AXIS_LABELS.get(key, key.split(".")[-1].replace("_", " "))


def load_latency(points: pd.DataFrame, x: str, out: Path, *, group: list[str] | None = None,
                 slo_ms: dict[str, float] | None = None, max_rate: float | None = None) -> Path:
    """p50/p90/p99 TTFT and TPOT against the swept value `x`, one colour per combination of the
    other swept keys (Okabe-Ito colours). Saturated points have no steady latency: they are left
    out of the lines and marked with a cross at the top of the axis; SLO limits dashed."""
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    groups = points.groupby(group, sort=False) if group else [((), points)]
    colours = CYCLE
    for ax, metric in zip(axes, ("ttft", "tpot")):
        for i, (key, rows) in enumerate(groups):
            rows = rows.sort_values(x)
            label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in zip(group or [], np.atleast_1d(key)))
            steady = ~rows["saturated"].astype(bool)
            for p, style in _STYLES.items():
                ax.plot(rows[x], rows[f"{metric}_p{p}_ms"].where(steady), style, marker="o", markersize=3,
                        color=colours[i % len(colours)], label=f"p{p} {label}".strip())
            sat = rows[~steady]
            if len(sat):
                finite = pd.to_numeric(points.loc[~points["saturated"].astype(bool), f"{metric}_p99_ms"],
                                       errors="coerce").dropna()
                top = max([*finite.tolist(), (slo_ms or {}).get(metric) or 0, 1.0]) * 1.5
                ax.scatter(sat[x], np.full(len(sat), top), marker="x", s=60, color=WORSE, zorder=5,
                           label="saturated (no steady latency)" if i == 0 else None)
        limit = (slo_ms or {}).get(metric)
        if limit:
            ax.axhline(limit, color=SLO, linestyle="--", linewidth=1, label=f"SLO {limit:g} ms")
        if max_rate is not None:
            ax.axvline(max_rate, color="black", linestyle="-.", linewidth=1, label=f"max rate {max_rate:.3g}")
        ax.set_yscale("log")
        ax.set_xlabel(axis_label(x))
        ax.set_ylabel(f"{metric.upper()} (ms, log scale)")
        ax.set_title(f"{metric.upper()} against {x.split('.')[-1]}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, out)


def _decisive_axes(candidates: pd.DataFrame, decisive: list[dict] | None) -> list[dict]:
    """The percentiles the SLOs use (p90 TTFT and TPOT when there are none)."""
    wanted = [d for d in decisive or [] if f"{d['key']}_ms" in candidates]
    return wanted or [{"key": "ttft_p90", "metric": "ttft", "percentile": 90, "limit_ms": None},
                      {"key": "tpot_p90", "metric": "tpot", "percentile": 90, "limit_ms": None}]


def pareto(candidates: pd.DataFrame, out: Path, *, winner: int | None = None,
           decisive: list[dict] | None = None) -> Path:
    """$/hour against each decisive percentile (the SLOs' own, with their limits as lines) for
    every simulated candidate: those meeting the SLOs in a fixed colour per GPU type
    (Okabe-Ito), misses in grey, saturated ones as crosses on the right edge instead of at their
    meaningless latencies; the Pareto front (cheapest for a latency) as a line, the answer starred."""
    axes_spec = _decisive_axes(candidates, decisive)
    fig = Figure(figsize=(5.5 * len(axes_spec), 4.5))
    axes = np.atleast_1d(fig.subplots(1, len(axes_spec)))
    sim = candidates[candidates["status"].isin(["met", "missed"])]
    saturated = sim["saturated"].fillna(False).astype(bool) if "saturated" in sim else pd.Series(False, sim.index)
    for ax, d in zip(axes, axes_spec):
        metric = f"{d['key']}_ms"
        shown = sim[~saturated]
        ok, bad = shown[shown["status"] == "met"], shown[shown["status"] == "missed"]
        ax.scatter(bad[metric], bad["usd_per_hour"], color=NEUTRAL, s=18, label="misses the SLOs")
        for hw, rows in ok.groupby("hardware", sort=True):
            ax.scatter(rows[metric], rows["usd_per_hour"], s=28, color=colour_of(str(hw)), label=f"meets: {hw}")
        front = _front(ok, metric)
        if len(front):
            ax.step(front[metric], front["usd_per_hour"], where="post", color="black", linewidth=1,
                    label="Pareto front")
        limit = d.get("limit_ms")
        if limit:
            ax.axvline(limit, color=SLO, linestyle="--", linewidth=1, label=f"SLO {limit:g} ms")
        sat = sim[saturated]
        if len(sat):
            finite = pd.to_numeric(shown[metric], errors="coerce").dropna()
            edge = max([*finite.tolist(), limit or 0, 1.0]) * 1.5
            ax.scatter(np.full(len(sat), edge), sat["usd_per_hour"], marker="x", color=WORSE, s=40,
                       label="saturated (no steady latency)")
        if winner is not None and winner in candidates.index:
            w = candidates.loc[winner]
            ax.scatter([w[metric]], [w["usd_per_hour"]], marker="*", s=260, color="#F0E442", edgecolor="black",
                       zorder=6, label="answer: cheapest meeting the SLOs")
        ax.set_xscale("log")
        ax.set_xlabel(f"p{d['percentile']} {d['metric'].upper()} (ms, log scale)")
        ax.set_ylabel("cost ($ per hour)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle("Cost against the SLOs' percentiles of every simulated candidate")
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

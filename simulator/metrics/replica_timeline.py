"""Replicas over time of an autoscaled run: the timeline table, the arrival rate beside it, and
what the run writes (replicas.csv, plots/replicas.png)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from simulator.metrics.palette import CYCLE
from simulator.metrics.plots import save_figure


def timeline_frame(report: dict) -> pd.DataFrame:
    """Replicas over time (time, serving, provisioned, desired, signal), one row per change."""
    return pd.DataFrame(report["timeline"], columns=["time", "serving", "provisioned", "desired", "signal"])


def arrival_rate(arrivals: np.ndarray, bins: int = 60) -> pd.DataFrame:
    """Arrivals per second in equal bins (time = bin centre), for plotting against replicas."""
    if len(arrivals) < 2:
        return pd.DataFrame(columns=["time", "rate"])
    counts, edges = np.histogram(arrivals, bins=bins)
    return pd.DataFrame({"time": (edges[:-1] + edges[1:]) / 2, "rate": counts / np.diff(edges)})


def save_outputs(report: dict, out_dir, arrivals: np.ndarray | None = None) -> None:
    """replicas.csv and plots/replicas.png of an autoscaled run."""
    frame = timeline_frame(report)
    frame.to_csv(Path(out_dir) / "replicas.csv", index=False, float_format="%.6f")
    rate = arrival_rate(arrivals) if arrivals is not None else None
    replicas_over_time({"autoscaled": frame}, Path(out_dir) / "plots" / "replicas.png", rate=rate)


def replicas_over_time(timelines: dict[str, pd.DataFrame], out: Path, *, rate: pd.DataFrame | None = None) -> Path:
    """Serving and provisioned replicas over time for one or more runs, with the arrival rate."""
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    for i, (name, frame) in enumerate(timelines.items()):
        ax.step(frame["time"], frame["provisioned"], where="post", color=CYCLE[i % len(CYCLE)],
                label=f"{name}: provisioned")
        ax.step(frame["time"], frame["serving"], where="post", color=CYCLE[i % len(CYCLE)], linestyle=":",
                label=f"{name}: serving")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("replicas")
    ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    if rate is not None and len(rate):
        twin = ax.twinx()
        twin.plot(rate["time"], rate["rate"], color="0.5", alpha=0.6, label="arrivals (req/s)")
        twin.set_ylabel("arrivals (req/s)")
        twin.set_ylim(bottom=0)
        h2, l2 = twin.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="upper left")
    ax.set_title("Replicas over time")
    fig.tight_layout()
    return save_figure(fig, out)

"""Plots of one run (latency CDFs, TPOT histogram, queue and KV cache, throughput over time) and
CDF overlays comparing runs. PNG files only; figures are built without pyplot, so no display or
global backend is involved.

Inputs are the frames written as results: `requests_frame` rows (times in seconds) and the
timeseries (time, waiting, running, kv_usage as a fraction, busy; optionally replica).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from simulator.common.files import write_bytes_atomic
from simulator.metrics.palette import SLO as SLO_COLOUR
from simulator.metrics.palette import colour_of
from simulator.metrics.records import STATUS_OK
from simulator.metrics.saturation import bin_means, sum_over_replicas, waiting_from_records
from simulator.metrics.slo import SLO

# column -> (label, factor from seconds, unit)
METRIC_UNITS = {
    "ttft": ("TTFT", 1000.0, "ms"),
    "tpot": ("TPOT", 1000.0, "ms"),
    "itl_mean": ("mean ITL per request", 1000.0, "ms"),
    "itl_max": ("max ITL per request", 1000.0, "ms"),
    "e2e": ("E2E latency", 1.0, "s"),
}
_SLO_FIELD = {"ttft": "ttft_ms", "tpot": "tpot_ms", "e2e": "e2e_ms"}
_DPI = 110
_MAX_STEP_POINTS = 5000  # longer timeseries are drawn as bin means


def save_figure(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    return write_bytes_atomic(path, buffer.getvalue())


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _completed(requests_df: pd.DataFrame) -> pd.DataFrame:
    if requests_df is None or requests_df.empty:
        return pd.DataFrame(columns=list(METRIC_UNITS) + ["class", "first_token", "finish", "output_tokens"])
    return requests_df[requests_df["status"] == STATUS_OK]


def _cdf(ax: Axes, values: np.ndarray, label: str, **style) -> bool:
    values = np.sort(values[~np.isnan(values)])
    if values.size == 0:
        return False
    fraction = np.arange(1, values.size + 1) / values.size
    ax.step(np.concatenate([[values[0]], values]), np.concatenate([[0.0], fraction]), where="post",
            label=f"{label} (n={values.size:,})", **style)
    return True


def _metric_cdf(
    done: pd.DataFrame, metric: str, path: Path, slos: dict[str, SLO] | None, title: str | None
) -> Path:
    label, factor, unit = METRIC_UNITS[metric]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    drawn = False
    classes = sorted(done["class"].unique()) if len(done) else []
    if len(classes) > 1:
        for name in classes:
            drawn |= _cdf(ax, done.loc[done["class"] == name, metric].to_numpy(float) * factor, str(name))
    drawn |= _cdf(ax, done[metric].to_numpy(float) * factor, "all", color="black", linewidth=1.8)
    field = _SLO_FIELD.get(metric)
    for name, slo in (slos or {}).items() if field else ():
        limit_ms = getattr(slo, field)
        if limit_ms is not None and drawn:
            ax.axvline(limit_ms * factor / 1000, linestyle="--", color=SLO_COLOUR, linewidth=1)
            ax.annotate(f"SLO {name}", (limit_ms * factor / 1000, 0.02), rotation=90, color=SLO_COLOUR,
                        fontsize=8, ha="right", va="bottom")
    if drawn:
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    else:
        _empty(ax, "no completed requests")
    ax.set_xlabel(f"{label} ({unit})")
    ax.set_ylabel("fraction of completed requests")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or f"{label} distribution")
    fig.tight_layout()
    return save_figure(fig, path)


def histogram_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Equal bins over the values' range; a range too narrow to split (one value, or values equal
    up to float noise) gets a small window around them instead of numpy's "too many bins"."""
    lo, hi = float(np.min(values)), float(np.max(values))
    if hi - lo <= max(abs(hi), 1.0) * 1e-9:
        centre = (lo + hi) / 2
        half = max(abs(centre) * 0.01, 1e-3)
        lo, hi = centre - half, centre + half
    return np.linspace(lo, hi, bins + 1)


def _tpot_hist(done: pd.DataFrame, path: Path) -> Path:
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    tpot_ms = done["tpot"].to_numpy(float) * 1000
    tpot_ms = tpot_ms[~np.isnan(tpot_ms)]
    if tpot_ms.size:
        bins = histogram_edges(tpot_ms, min(60, max(10, tpot_ms.size // 20)))
        ax.hist(tpot_ms, bins=bins, color="#0072B2", alpha=0.8)
        ax.axvline(np.median(tpot_ms), color="black", linestyle="--", linewidth=1,
                   label=f"p50 {np.median(tpot_ms):.1f} ms")
        ax.legend(fontsize=8)
    else:
        _empty(ax, "no completed request with more than one output token")
    ax.set_xlabel("TPOT (ms)")
    ax.set_ylabel("requests")
    ax.set_title("Time per output token")
    fig.tight_layout()
    return save_figure(fig, path)


def _as_steps(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """A step function, thinned to bin means when it has too many points to draw."""
    if t.size <= _MAX_STEP_POINTS:
        return t, v, True
    edges = np.linspace(t[0], t[-1], 2001)
    return (edges[:-1] + edges[1:]) / 2, bin_means(t, v, edges), False


def _shade_unmeasured(ax: Axes, window: tuple[float, float] | None) -> None:
    """Grey out the warm-up and cool-down around a measurement window."""
    if window is None:
        return
    lo, hi = ax.get_xlim()
    ax.axvspan(lo, window[0], color="0.85", alpha=0.5, zorder=0, label="warm-up (not measured)")
    if hi > window[1]:
        ax.axvspan(window[1], hi, color="0.92", alpha=0.5, zorder=0, label="cool-down (not measured)")
    ax.set_xlim(lo, hi)


def _queue_kv(requests_df: pd.DataFrame, timeseries_df: pd.DataFrame | None, path: Path,
              window: tuple[float, float] | None = None) -> Path:
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    has_ts = timeseries_df is not None and not timeseries_df.empty and "waiting" in timeseries_df
    if has_ts:
        source, label = timeseries_df, "waiting requests"
    elif requests_df is not None and not requests_df.empty:
        source, label = waiting_from_records(requests_df), "requests waiting for first token"
    else:
        source, label = None, ""
    if source is not None and not source.empty:
        t, v, steps = _as_steps(*sum_over_replicas(source, "waiting"))
        ax.plot(t, v, drawstyle="steps-post" if steps else "default", color="#0072B2", label=label)
        if has_ts and "running" in timeseries_df:
            t, v, steps = _as_steps(*sum_over_replicas(timeseries_df, "running"))
            ax.plot(t, v, drawstyle="steps-post" if steps else "default", color="#009E73",
                    label="running requests", alpha=0.7)
        _shade_unmeasured(ax, window)
    else:
        _empty(ax, "no queue data")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("requests (all replicas)")
    handles, labels = ax.get_legend_handles_labels()
    title = "Queue and KV cache over time"
    if has_ts and "kv_usage" in timeseries_df:
        kv_ax = ax.twinx()
        replicas = timeseries_df["replica"].nunique(dropna=False) if "replica" in timeseries_df else 1
        t, v = sum_over_replicas(timeseries_df, "kv_usage")
        t, v, steps = _as_steps(t, v / max(replicas, 1) * 100)
        kv_ax.plot(t, v, drawstyle="steps-post" if steps else "default", color="#E69F00",
                   label="KV cache used (mean over replicas)")
        kv_ax.set_ylabel("KV cache used (%)")
        peak = float(np.nanmax(v)) if v.size else 0.0
        kv_ax.set_ylim(0, min(105.0, max(5.0, peak * 1.25)))  # low usage stays readable
        kv_handles, kv_labels = kv_ax.get_legend_handles_labels()
        handles, labels = handles + kv_handles, labels + kv_labels
    else:
        title = "Queue over time (no KV cache series: the server reported none)"
    if handles:
        ax.legend(handles, labels, loc="upper left", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def output_token_rate(done: pd.DataFrame, edges: np.ndarray) -> np.ndarray:
    """Output tokens/s in each bin between `edges`: each request's first token counts at its
    first_token time, the others spread evenly until its finish (token times are not kept in the
    requests table)."""
    first = done["first_token"].to_numpy(float)
    finish = done["finish"].to_numpy(float)
    rest = done["output_tokens"].to_numpy(float) - 1
    width = np.diff(edges)
    rate = np.histogram(first, bins=edges)[0] / width
    spread = (rest > 0) & (finish > first)
    if spread.any():
        per_second = rest[spread] / (finish[spread] - first[spread])
        t = np.concatenate([first[spread], finish[spread]])
        delta = np.concatenate([per_second, -per_second])
        order = np.argsort(t, kind="stable")
        rate = rate + bin_means(t[order], np.cumsum(delta[order]), edges)
    return rate


def _throughput(done: pd.DataFrame, path: Path, bins: int = 100) -> Path:
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    title = "Output token throughput"
    if len(done):
        start, end = float(done["first_token"].min()), float(done["finish"].max())
        if end <= start:
            end = start + 1.0
        edges = np.linspace(start, end, bins + 1)
        rate = output_token_rate(done, edges)
        ax.stairs(rate, edges, fill=True, alpha=0.6, color="#CC79A7")
        overall = done["output_tokens"].sum() / (end - start)
        ax.axhline(overall, color="black", linestyle="--", linewidth=1, label=f"mean {overall:,.0f} tok/s")
        ax.legend(fontsize=8)
        title += f" ({(end - start) / bins:.3g} s bins)"
    else:
        _empty(ax, "no completed requests")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("output tokens/s")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_results(
    requests_df: pd.DataFrame,
    timeseries_df: pd.DataFrame | None,
    out_dir: str | os.PathLike[str],
    *,
    slos: dict[str, SLO] | None = None,
    window: tuple[float, float] | None = None,
) -> list[Path]:
    """Write ttft_cdf.png, e2e_cdf.png, tpot_hist.png, queue_kv.png and throughput.png into
    `out_dir` and return their paths. Latency plots cover completed requests (one line per class
    when there are several, SLO limits dashed). Without a timeseries, the queue plot shows the
    requests waiting for their first token; `window` greys out the unmeasured warm-up and
    cool-down there. Empty inputs give plots that say so."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = _completed(requests_df)
    return [
        _metric_cdf(done, "ttft", out / "ttft_cdf.png", slos, "Time to first token"),
        _metric_cdf(done, "e2e", out / "e2e_cdf.png", slos, "End-to-end latency"),
        _tpot_hist(done, out / "tpot_hist.png"),
        _queue_kv(requests_df, timeseries_df, out / "queue_kv.png", window),
        _throughput(done, out / "throughput.png"),
    ]


def overlay_cdfs(
    frames: dict[str, pd.DataFrame],
    metric: str,
    out_path: str | os.PathLike[str],
    *,
    title: str | None = None,
    colours: dict[str, str] | None = None,
    slo_ms: float | None = None,
) -> Path:
    """One CDF of `metric` (a requests-table column: ttft, tpot, e2e, itl_mean, itl_max) per run,
    on shared axes: simulated vs measured, or one line per policy. Completed requests only. Each
    run keeps its colour (`colours`, else a fixed one per name; Okabe-Ito) and gets its own dash,
    so lines lying on top of each other stay visible; `slo_ms` draws the limit."""
    if metric not in METRIC_UNITS:
        raise ValueError(f"metric {metric!r} is not one of {sorted(METRIC_UNITS)}")
    label, factor, unit = METRIC_UNITS[metric]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    drawn = False
    dashes = ["-", "--", "-.", ":"]
    for i, (name, frame) in enumerate(frames.items()):
        done = _completed(frame)
        colour = (colours or {}).get(name) or colour_of(name)
        drawn |= _cdf(ax, done[metric].to_numpy(float) * factor, name, color=colour,
                      linestyle=dashes[i % len(dashes)], linewidth=1.6 if i == 0 else 1.3)
    if slo_ms is not None and drawn:
        ax.axvline(slo_ms * factor / 1000, linestyle="--", color=SLO_COLOUR, linewidth=1)
        ax.annotate(f"SLO {slo_ms * factor / 1000:g} {unit}", (slo_ms * factor / 1000, 0.02), rotation=90,
                    color=SLO_COLOUR, fontsize=8, ha="right", va="bottom")
    if drawn:
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    else:
        _empty(ax, "no completed requests")
    ax.set_xlabel(f"{label} ({unit})")
    ax.set_ylabel("fraction of completed requests")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or f"{label}: " + " vs ".join(frames))
    fig.tight_layout()
    return save_figure(fig, Path(out_path))

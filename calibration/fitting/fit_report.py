"""How good a fit is, for people: the terminal table of fit errors and the residual plot."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from calibration.measure.measurements import REGIONS
from simulator.common.console import report_console

COLORS = {"prefill": "tab:blue", "decode": "tab:orange", "mixed": "tab:green"}


def residual_plot(m, result, path: str | Path, title: str = "") -> Path:
    """Predicted vs measured step time, and each point's held-out error against its duration."""
    times_ms = m.times * 1000
    fig = Figure(figsize=(11, 4.5))
    left, right = fig.subplots(1, 2)
    for region in REGIONS:
        keep = m.regions == region
        if not keep.any():
            continue
        left.scatter(times_ms[keep], result.held_out[keep] * 1000, s=14, c=COLORS[region], label=region)
        error = (result.held_out[keep] / m.times[keep] - 1) * 100
        right.scatter(times_ms[keep], error, s=14, c=COLORS[region], label=region)
    lo, hi = times_ms.min() * 0.8, times_ms.max() * 1.25
    left.plot([lo, hi], [lo, hi], color="gray", lw=1)
    left.set(xscale="log", yscale="log", xlabel="measured step (ms)", ylabel="held-out prediction (ms)")
    right.axhspan(-5, 5, color="gray", alpha=0.15, label="±5%")
    right.axvline(5, color="gray", lw=1, ls=":")
    right.axhline(0, color="gray", lw=1)
    right.set(xscale="log", xlabel="measured step (ms)", ylabel="held-out error (%)")
    right.legend(loc="best", fontsize=8)
    fig.suptitle(title or "step-time fit: held-out predictions")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1f}%"


def print_fit(cal, console: Console | None = None) -> None:
    """Fit errors per region and the achieved bandwidth and compute."""
    console = console or report_console()
    err = cal.fitted.fit_error
    table = Table(
        title=f"{cal.model} on {cal.device or cal.hardware} ({cal.dtype}): {err['folds']}-fold held-out error"
    )
    for column in ("region", "points", "MAPE", "MAPE > 5 ms", "in-sample MAPE"):
        table.add_column(column, justify="right" if column != "region" else "left")
    for region in (*REGIONS, "all"):
        points = sum(err["points"].values()) if region == "all" else err["points"].get(region, 0)
        table.add_row(
            region,
            str(points),
            _pct(err["heldout_mape_percent"][region]),
            _pct(err["heldout_mape_over_5ms_percent"][region]),
            _pct(err["in_sample_mape_percent"][region]),
        )
    console.print(table)
    from calibration.fitting.transfer import effective_rates

    c, r = cal.fitted.coefficients, cal.fitted.measured_range
    rates = effective_rates(c, cal.fitted.work)
    peaks = cal.source.get("measured_peaks", {})
    bw, flops = peaks.get("memory_bandwidth"), peaks.get("matmul_flops")
    bw_note = f" ({rates['weight_bandwidth'] / bw:.0%} of the measured {bw / 1e9:.1f} GB/s)" if bw else ""
    fl_note = (
        f" ({rates['linear_flops'] / flops:.0%} of the measured {flops / 1e9:.0f} GFLOP/s)" if flops else ""
    )
    console.print(
        f"achieved: weights streamed at {rates['weight_bandwidth'] / 1e9:.1f} GB/s{bw_note}; per-token work at "
        f"{rates['linear_flops'] / 1e9:.0f} GFLOP/s{fl_note}; overhead {c.overhead_s * 1000:.2f} ms per step "
        f"+ {c.overhead_per_sequence_s * 1e6:.0f} us per sequence"
    )
    console.print(
        f"measured range: up to {r.max_batched_tokens} tokens and {r.max_num_seqs} sequences per step, "
        f"contexts up to {r.max_context}, {r.max_kv_tokens} KV tokens per step"
    )
    spill = err.get("spill_term")
    if spill:
        held = f"held-out MAPE {spill['heldout_mape_percent_with']}% with it, {spill['heldout_mape_percent_without']}% without"
        if spill["used"]:
            console.print(
                f"decode attention spill: +{c.decode_spill_s_per_token * 1e9:.0f} ns per padded KV slot past "
                f"{c.attention_cache_tokens:,.0f} slots per step ({held})"
            )
        else:
            console.print(f"decode attention spill term: not used ({held})")
    verdict = "met" if err["target_met"] else "NOT met"
    console.print(f"target ({err['target']}): {verdict}")

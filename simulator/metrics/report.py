"""Readable results: the terminal table of a run and summary.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from simulator.common.console import report_console
from simulator.common.files import write_text_atomic
from simulator.metrics.summary import Summary


def summary_to_json(summary: Summary, path: str | os.PathLike[str]) -> Path:
    """Write `summary.to_dict()` as strict JSON (missing values are null, never NaN)."""
    text = json.dumps(summary.to_dict(), indent=2, allow_nan=False)
    return write_text_atomic(path, text + "\n")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f}"


def _num(value: float | None, fmt: str = ",.2f") -> str:
    return "-" if value is None else format(value, fmt)


def _pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:.1f}%"


def saturation_banner(summary: Summary) -> Panel:
    """The red warning shown above the numbers of a saturated run."""
    text = Text()
    text.append("SATURATED: this deployment cannot keep up with this load.\n", style="bold")
    text.append(f"{summary.saturation_reason}.\n" if summary.saturation_reason else "")
    text.append(
        "The queue keeps growing, so the latencies below depend on how long the run lasted and "
        "are not meaningful.\nAdd replicas, use faster hardware, or lower the request rate."
    )
    return Panel(text, title="saturated", border_style="bold red", style="red")


def summary_tables(summary: Summary) -> list[Table]:
    """Latency, throughput/cost and per-class SLO tables, ready to print."""
    latency = Table(title="Latency (ms)", title_justify="left")
    latency.add_column("metric")
    for column in ("mean", "p50", "p90", "p95", "p99", "samples"):
        latency.add_column(column, justify="right")
    names = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2e": "E2E"}
    for key, label in names.items():
        stats = summary.latency[key]
        latency.add_row(
            label,
            _ms(stats.mean),
            _ms(stats.p50),
            _ms(stats.p90),
            _ms(stats.p95),
            _ms(stats.p99),
            f"{stats.count:,}",
        )

    overall = Table(title="Throughput and cost", title_justify="left", show_header=False)
    overall.add_column("quantity")
    overall.add_column("value", justify="right")
    overall.add_row(
        "requests",
        f"{summary.total:,} arrived, {summary.completed:,} completed, {summary.rejected:,} rejected, "
        f"{summary.unfinished:,} unfinished, {summary.errors:,} errors",
    )
    overall.add_row("duration", f"{summary.duration:,.1f} s")
    overall.add_row("request throughput", f"{_num(summary.request_throughput)} req/s")
    overall.add_row("output tokens", f"{_num(summary.output_throughput, ',.1f')} tok/s")
    overall.add_row("total tokens", f"{_num(summary.total_token_throughput, ',.1f')} tok/s")
    overall.add_row("goodput", f"{_num(summary.goodput)} req/s")
    overall.add_row("SLO attainment", _pct(summary.slo_attainment))
    if summary.gpu_busy_fraction is not None:
        overall.add_row("GPU busy (a step running)", _pct(summary.gpu_busy_fraction))
    if summary.kv_usage_mean is not None:
        overall.add_row("KV cache used (mean)", _pct(summary.kv_usage_mean))
    if summary.cost_per_hour:
        overall.add_row("cost", f"${summary.cost_per_hour:,.2f}/h, ${summary.cost_total:,.4f} this run")
        overall.add_row("cost per 1M output tokens", f"${_num(summary.cost_per_million_output_tokens, ',.4f')}")
        overall.add_row("cost per 1M total tokens", f"${_num(summary.cost_per_million_total_tokens, ',.4f')}")

    classes = Table(title="SLOs per class", title_justify="left")
    for column in ("class", "SLO (ms)", "arrived", "completed", "good", "goodput req/s", "attainment"):
        classes.add_column(column, justify="left" if column in ("class", "SLO (ms)") else "right")
    for name, cls in summary.classes.items():
        slo = cls.slo.model_dump(exclude_none=True) if cls.slo else {}
        slo_text = ", ".join(f"{k.removesuffix('_ms')}<={v:g}" for k, v in slo.items()) or "none"
        classes.add_row(
            name,
            slo_text,
            f"{cls.total:,}",
            f"{cls.completed:,}",
            f"{cls.good:,}",
            _num(cls.goodput),
            _pct(cls.slo_attainment),
        )
    return [latency, overall, classes]


def print_summary(summary: Summary, console: Console | None = None, title: str = "llmsim results") -> None:
    """Print a run's summary: a red saturation banner when it applies, then the tables."""
    console = console or report_console(120)
    console.rule(f"[bold]{title}")
    if summary.saturated:
        console.print(saturation_banner(summary))
    console.print(Group(*summary_tables(summary)))
    if summary.saturated:
        console.print("[bold red]Saturated: the latencies above are not meaningful at this load.")


def request_changes(info: dict) -> list[str]:
    """Lines telling how many requests llmsim clipped or rejected, and why (empty when none)."""
    lines = []
    prompts, outputs = info.get("clipped_prompts", 0), info.get("clipped_outputs", 0)
    if prompts or outputs:
        lines.append(f"clipped: {prompts:,} prompts and {outputs:,} outputs shortened to fit the context "
                     "(prompt + output <= max_model_len; requests.csv column reason)")
    for kind, count in (info.get("rejected") or {}).items():
        lines.append(f"rejected: {count:,} requests {kind}, never served (requests.csv column reason)")
    if lines:
        lines.append("  (--strict, or run.strict: true, makes these errors)")
    return lines


def measurement_lines(info: dict) -> list[str]:
    """The measurement window, the steady-state verdict and the utilisation of a run, in words."""
    lines = []
    window, state, use = info.get("window"), info.get("steady_state"), info.get("utilisation")
    if window:
        grown = f", lengthened {window['extensions']}x by the stopping rule" if window.get("extensions") else ""
        lines.append(f"window: {window['warmup_s']:,.0f} s warm-up discarded, {window['measure_s']:,.0f} s measured "
                     f"({window['measured_requests']:,} requests), {window['cooldown_s']:,.0f} s cool-down{grown}")
    if state:
        intervals = ", ".join(f"{k.replace('_', ' ')} {v[0]:,.1f} ms [{v[1]:,.1f}-{v[2]:,.1f}]"
                              for k, v in state.get("intervals", {}).items())
        verdict = "yes" if state["steady"] else "NO"
        lines.append(f"steady state: {verdict} ({state['reason']})" + (f"; 95% intervals {intervals}" if intervals
                                                                        else ""))
    if use and use.get("busy") is not None:
        parts = [f"GPU busy {_pct(use['busy'])} (a step was running)"]
        if use.get("batch_occupancy") is not None:
            parts.append(f"batch occupancy {_pct(use['batch_occupancy'])} of max_num_seqs={use['max_num_seqs']}")
        if use.get("token_budget_use") is not None:
            parts.append(f"token budget {_pct(use['token_budget_use'])} of {use['max_num_batched_tokens']:,} "
                         "tokens per step")
        if use.get("kv_mean") is not None:
            parts.append(f"KV {_pct(use['kv_mean'])} mean, {_pct(use['kv_peak'])} peak")
        lines.append("utilisation: " + ", ".join(parts) + " (capacity: `llmsim sweep ... --max-rate`)")
    return lines

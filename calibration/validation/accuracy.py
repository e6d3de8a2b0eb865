"""How far a simulated run is from a measured one: an error table, pass/fail against tolerances.

Both runs are `Results` summarised by the same code (`simulator.metrics.summarize`), so every
number compared has one definition. The relative error of a statistic is simulated / measured - 1.
A statistic passes when its relative error is within the tolerance of its kind (mean, p50, p90,
p99, throughput) or, for latencies, when the absolute difference is within `abs_ms`: a 0.3 ms
miss on a 2 ms TTFT is timer noise, not a modelling error.

Both runs serve the same requests, so each simulated request can also be set against its measured
twin: the "paired p50" row is the median over requests of simulated / measured - 1. It is reported,
not checked. A quantile of a few dozen requests moves with whichever request lands on it, while
the paired median shows the systematic error of the model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from simulator.common.console import report_console
from simulator.common.errors import ConfigError
from simulator.metrics.plots import overlay_cdfs
from simulator.metrics.results import Results

LATENCIES = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2e": "E2E"}
PER_REQUEST = {"ttft": "ttft", "tpot": "tpot", "itl": "itl_mean", "e2e": "e2e"}  # requests.csv columns
PAIRED = "paired p50"
STATS = ("mean", "p50", "p90", "p99")
THROUGHPUTS = {"output_tokens_per_s": "output tok/s", "requests_per_s": "requests/s"}


@dataclass(frozen=True)
class Tolerances:
    """Largest |relative error| accepted per statistic; None reports without checking."""

    mean: float | None = 0.10
    p50: float | None = 0.10
    p90: float | None = 0.15
    p99: float | None = None  # the tail of a few hundred requests is a handful of samples
    throughput: float | None = 0.05
    abs_ms: float = 0.5

    @classmethod
    def parse(cls, items: list[str], base: Tolerances | None = None) -> Tolerances:
        """`KIND=VALUE` overrides, e.g. ["p50=0.05", "p99=none"] (fractions, not percent)."""
        values = asdict(base or cls())
        for item in items:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in values:
                raise ConfigError(
                    f"--tolerance {item!r}: expected KIND=VALUE with KIND one of {', '.join(values)}"
                )
            if raw.strip().lower() in ("none", "off") and key != "abs_ms":
                values[key] = None
                continue
            try:
                value = float(raw)
            except ValueError:
                value = -1.0
            if not value >= 0:
                raise ConfigError(f"--tolerance {item!r}: VALUE must be a number >= 0 (or none)")
            values[key] = value
        return cls(**values)

    def for_stat(self, stat: str) -> float | None:
        return getattr(self, stat) if stat in {f.name for f in fields(self)} else None


@dataclass
class Comparison:
    table: pd.DataFrame  # one row per statistic
    passed: bool
    tolerances: Tolerances

    @property
    def failures(self) -> pd.DataFrame:
        return self.table[self.table["ok"].map(lambda ok: ok is False)]  # None: not checked


def compare(measured: Results, simulated: Results, tolerances: Tolerances = Tolerances()) -> Comparison:
    """The error table of `simulated` against `measured`. Latencies in ms, throughputs per second."""
    m, s = measured.summary.to_dict(), simulated.summary.to_dict()
    rows = []
    for metric, label in LATENCIES.items():
        for stat in STATS:
            rows.append(_row(label, stat, m["latency_s"][metric][stat], s["latency_s"][metric][stat],
                             tolerances.for_stat(stat), tolerances.abs_ms, scale=1000.0))
        rows.append({"metric": label, "stat": PAIRED, "measured": None, "simulated": None,
                     "error": paired_median_error(measured, simulated, PER_REQUEST[metric]),
                     "tolerance": None, "ok": None})  # fmt: skip
    for key, label in THROUGHPUTS.items():
        rows.append(_row(label, "rate", m["throughput"][key], s["throughput"][key],
                         tolerances.throughput, 0.0, scale=1.0))
    table = pd.DataFrame(rows)
    checked = table["ok"].dropna()
    return Comparison(table, bool(checked.all()) if len(checked) else False, tolerances)


def paired_median_error(measured: Results, simulated: Results, column: str) -> float | None:
    """Median over the requests both runs completed of simulated / measured - 1."""
    real = measured.requests.set_index("id")[column]
    sim = simulated.requests.set_index("id")[column]
    ratio = (sim / real).replace([np.inf, -np.inf], np.nan).dropna()  # aligned on request id
    return float(ratio.median() - 1.0) if len(ratio) else None


def _row(metric: str, stat: str, real, sim, tol: float | None, abs_ms: float, scale: float) -> dict:
    real = None if real is None else real * scale
    sim = None if sim is None else sim * scale
    error = (sim / real - 1.0) if real and sim is not None else None
    ok = None
    if tol is not None:
        ok = error is not None and (abs(error) <= tol or abs(sim - real) <= abs_ms)
    return {"metric": metric, "stat": stat, "measured": real, "simulated": sim, "error": error,
            "tolerance": tol, "ok": ok}


def print_comparison(comparison: Comparison, console: Console | None = None, title: str = "") -> None:
    console = console or report_console()
    table = Table(title=title or "Simulated vs measured", title_justify="left")
    floor = "real_vs_real" in comparison.table.columns  # judged against a noise floor (noise_floor.py)
    columns = ["metric", "stat", "measured", "simulated", "sim vs real"]
    columns += ["real vs real", "tolerance", "limit", "set by", ""] if floor else ["tolerance", ""]
    for column in columns:
        table.add_column(column, justify="left" if column in ("metric", "stat", "set by", "") else "right")
    for row in comparison.table.itertuples():
        unit = "" if row.stat == "rate" else " ms"
        verdict = {True: "[green]ok", False: "[bold red]FAIL", None: ""}[row.ok]
        cells = [row.metric, row.stat, _fmt(row.measured, unit), _fmt(row.simulated, unit), _pct(row.error, "+")]
        if floor:
            cells.append(_pct(row.real_vs_real, "+"))
        cells.append("-" if row.tolerance is None or np.isnan(row.tolerance) else f"±{row.tolerance:.0%}")
        if floor:
            cells += [_pct(row.limit, "±"), row.limit_set_by if isinstance(row.limit_set_by, str) else ""]
        table.add_row(*cells, verdict)
    console.print(table)
    verdict = "[bold green]PASS" if comparison.passed else "[bold red]FAIL"
    console.print(f"{verdict}[/]: {len(comparison.failures)} of {comparison.table['ok'].notna().sum()} "
                  "checked statistics outside their " + ("limit, max(tolerance, real vs real)" if floor else "tolerance"))


def _pct(value, sign: str) -> str:
    if value is None or pd.isna(value):
        return "-"
    return f"{value:+.1%}" if sign == "+" else f"±{value:.1%}"


def _fmt(value, unit: str) -> str:
    return "-" if value is None or np.isnan(value) else f"{value:,.2f}{unit}"


def overlay_plots(measured: Results, simulated: Results, out_dir: Path) -> list[Path]:
    """Real-vs-simulated CDFs of TTFT, TPOT, E2E and the mean ITL per request."""
    frames = {"measured": measured.requests, "simulated": simulated.requests}
    return [overlay_cdfs(frames, metric, out_dir / f"{metric}_real_vs_sim.png")
            for metric in ("ttft", "tpot", "e2e", "itl_mean")]

"""When does a run meet its SLOs? One rule, used by `sweep` (highest sustainable rate) and `plan`.

A run meets its objectives when it is not saturated and every check holds:

- latency checks `pXX_METRIC_ms`: the XX-th percentile of METRIC (ttft, tpot, itl, e2e; completed
  requests of the check's scope) is within the limit;
- attainment checks: the fraction of the scope's requests meeting every per-request SLO of their
  class (the definition in `simulator.metrics`, rejected and unfinished requests count as misses)
  is at least the target.

Two ways to state the rule:

- from the workload's classes (`SLORule.from_classes`): for every class with SLOs, its
  `slo_target.percentile` latency of each metric it names is within that metric's limit, and its
  attainment is at least `slo_target.attainment_pct`;
- from a plan's `slo:` mapping (`SLORule.from_limits`), e.g. `{p90_ttft_ms: 500, p90_tpot_ms: 50,
  attainment_pct: 95}`, checked over all requests together.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from simulator.metrics import PERCENTILES, SLO, Summary

SLO_METRICS = ("ttft", "tpot", "itl", "e2e")
ATTAINMENT_KEY = "attainment_pct"
_LIMIT_KEY = re.compile(r"^p(\d+)_([a-z]+)_ms$")


def allowed_slo_keys() -> list[str]:
    return [f"p{p}_{m}_ms" for m in SLO_METRICS for p in PERCENTILES] + [ATTAINMENT_KEY]


def check_slo_key(key: str) -> tuple[int, str] | None:
    """(percentile, metric) of a latency key, None for attainment; ValueError for anything else."""
    if key == ATTAINMENT_KEY:
        return None
    match = _LIMIT_KEY.match(key)
    if match and int(match.group(1)) in PERCENTILES and match.group(2) in SLO_METRICS:
        return int(match.group(1)), match.group(2)
    raise ValueError(
        f"unknown SLO metric {key!r}; allowed: pXX_METRIC_ms with XX in "
        f"{', '.join(map(str, PERCENTILES))} and METRIC in {', '.join(SLO_METRICS)} "
        f"(e.g. p90_ttft_ms, p99_tpot_ms), or {ATTAINMENT_KEY}"
    )


class SLOTarget(BaseModel):
    """The scenario-level `slo_target:`, how the classes' SLOs judge a whole run."""

    model_config = ConfigDict(extra="forbid")

    percentile: Literal[50, 90, 95, 99] = Field(90, description="latency percentile each class's SLOs apply to")
    attainment_pct: float = Field(90.0, gt=0, le=100, description="least % of a class's requests meeting its SLOs")


@dataclass(frozen=True)
class Check:
    """One objective and how a run fared against it."""

    name: str  # e.g. "chat p90 ttft" or "all attainment"
    value: float | None  # ms for latencies, % for attainment; None when there was no sample
    limit: float
    higher_is_better: bool = False

    @property
    def ok(self) -> bool:
        if self.value is None:
            return False
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def miss(self) -> str:
        """How far from the objective, in words ("" when met)."""
        if self.ok:
            return ""
        if self.value is None:
            return f"{self.name}: no completed request to measure"
        if self.higher_is_better:
            return f"{self.name} {self.value:.1f}% < {self.limit:g}% ({self.limit - self.value:.1f} points short)"
        return f"{self.name} {self.value:,.0f} ms > {self.limit:,.0f} ms ({self.value / self.limit:.2f}x the limit)"


@dataclass(frozen=True)
class Verdict:
    met: bool
    saturated: bool
    checks: tuple[Check, ...]

    def misses(self) -> list[str]:
        out = ["saturated: the queue grows without bound"] if self.saturated else []
        return out + [c.miss() for c in self.checks if not c.ok]

    def to_dict(self) -> dict:
        return {"met": self.met, "saturated": self.saturated, "checks": [asdict(c) for c in self.checks]}


@dataclass(frozen=True)
class LatencyLimit:
    scope: str | None  # a class name, or None for all requests
    metric: str
    percentile: int
    limit_ms: float


@dataclass(frozen=True)
class SLORule:
    latency: tuple[LatencyLimit, ...]
    attainment: tuple[tuple[str | None, float], ...]  # (scope, least % meeting their SLOs)

    @property
    def empty(self) -> bool:
        return not self.latency and not self.attainment

    @classmethod
    def from_classes(cls, slos: dict[str, SLO], target: SLOTarget) -> SLORule:
        latency, attainment = [], []
        for name, slo in slos.items():
            limits = {m: getattr(slo, f"{m}_ms") for m in SLO_METRICS}
            limits = {m: v for m, v in limits.items() if v is not None}
            latency += [LatencyLimit(name, m, target.percentile, v) for m, v in limits.items()]
            if limits:
                attainment.append((name, target.attainment_pct))
        return cls(tuple(latency), tuple(attainment))

    @classmethod
    def from_limits(cls, limits: dict[str, float]) -> SLORule:
        latency, attainment = [], []
        for key, value in limits.items():
            parsed = check_slo_key(key)
            if parsed is None:
                attainment.append((None, float(value)))
            else:
                latency.append(LatencyLimit(None, parsed[1], parsed[0], float(value)))
        return cls(tuple(latency), tuple(attainment))

    def describe(self) -> str:
        parts = []
        for lim in self.latency:
            scope = f"{lim.scope} " if lim.scope else ""
            parts.append(f"{scope}p{lim.percentile} {lim.metric.upper()} <= {lim.limit_ms:g} ms")
        for scope, pct in self.attainment:
            parts.append(f"{scope + ' ' if scope else ''}SLO attainment >= {pct:g}%")
        return "; ".join(parts + ["not saturated"])

    def evaluate(self, summary: Summary) -> Verdict:
        checks = []
        for lim in self.latency:
            stats = (summary.latency if lim.scope is None else _class(summary, lim.scope).latency)[lim.metric]
            value = getattr(stats, f"p{lim.percentile}")
            checks.append(
                Check(
                    f"{lim.scope or 'all'} p{lim.percentile} {lim.metric}",
                    None if value is None else value * 1000,
                    lim.limit_ms,
                )
            )
        for scope, pct in self.attainment:
            value = summary.slo_attainment if scope is None else _class(summary, scope).slo_attainment
            checks.append(
                Check(f"{scope or 'all'} attainment", None if value is None else value * 100, pct, True)
            )
        met = not summary.saturated and all(c.ok for c in checks)
        return Verdict(met, summary.saturated, tuple(checks))


def _class(summary: Summary, name: str):
    return summary.classes[name]

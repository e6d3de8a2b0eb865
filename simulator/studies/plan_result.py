"""What `llmsim plan` answers, and how it is written: candidates.csv, candidates.parquet (with
pyarrow), plan.json and pareto.png. Every file shows the percentiles the SLOs are stated in (p99
when the SLO is p99), with their confidence intervals, the measurement window and whether it
reached steady state."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from simulator.common.files import result_files
from simulator.metrics.tables import write_table
from simulator.studies import capacity_plots
from simulator.studies.trials import step_models

HOURS_PER_MONTH = 730.0  # 8,760 hours a year / 12


@dataclass
class PlanResult:
    name: str
    rule: str
    target: str
    candidates: pd.DataFrame  # one row per group x replica count
    winner: int | None  # index into candidates
    closest: int | None  # when nothing meets the SLOs: the candidate missing them by the least
    notes: list[str] = field(default_factory=list)
    seeds: int = 1
    simulations: int = 0  # simulations run to reach the answer
    decisive: list[dict] = field(default_factory=list)  # [{key, metric, percentile, limit_ms}]
    headroom_basis: str = ""
    confirm_factor: float = 1.0
    groups: int = 0
    rejected_groups: dict[str, str] = field(default_factory=dict)  # group label -> reason

    @property
    def step_models(self) -> dict[str, dict[str, int]]:
        """Step counts per provenance label of the simulated candidates, per step-time source."""
        if "step_model" not in self.candidates:
            return {}
        rows = self.candidates.dropna(subset=["step_model"])
        return step_models({"step_model": m, "step_sources": json.loads(s)}
                           for m, s in zip(rows["step_model"], rows["step_sources"]) if isinstance(s, str))

    @property
    def feasible(self) -> bool:
        return self.winner is not None

    def answer(self) -> dict | None:
        return None if self.winner is None else jsonable(self.candidates.loc[self.winner].to_dict())

    def to_dict(self) -> dict:
        return {
            "scenario": self.name,
            "feasible": self.feasible,
            "answer": self.answer(),
            "closest": None if self.closest is None else jsonable(self.candidates.loc[self.closest].to_dict()),
            "slo_rule": self.rule,
            "decisive_percentiles": self.decisive,
            "target": self.target,
            "seeds": self.seeds,
            "simulations": self.simulations,
            "headroom_basis": self.headroom_basis,
            "confirm_longer": self.confirm_factor,
            "notes": self.notes,
            "counts": self.candidates["status"].value_counts().to_dict(),
            "groups": self.groups,
            "rejected_groups": self.rejected_groups,
        }

    def save(self, out: str | Path, *, force: bool = False, formats: tuple[str, ...] = ("csv",)) -> Path:
        with result_files(out, force=force) as tmp:
            write_table(self.candidates, tmp / "candidates", formats)
            (tmp / "plan.json").write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
            capacity_plots.pareto(self.candidates, tmp / "pareto.png", winner=self.winner, decisive=self.decisive)
        return Path(out)


def jsonable(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if (isinstance(v, float) and not math.isfinite(v)) or v is pd.NA:
            v = None
        out[k] = v.item() if hasattr(v, "item") else v
    return out

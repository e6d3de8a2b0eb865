"""The outcome of a run (simulated or measured) and how it is written to disk."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from simulator.common.files import atomic_directory
from simulator.metrics import RequestRecord, Summary, requests_frame
from simulator.metrics.plots import plot_results

RUN_LOG_KEYS = ("wall_time_s",)  # facts of the machine, not of the run: in run_log.json, not summary.json


@dataclass
class Results:
    summary: Summary
    records: list[RequestRecord]
    timeseries: pd.DataFrame | None
    slos: dict
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # provenance: what produced these numbers
    _requests: pd.DataFrame | None = None

    @property
    def requests(self) -> pd.DataFrame:
        """One row per request (seconds)."""
        if self._requests is None:
            self._requests = requests_frame(self.records, self.slos)
        return self._requests

    def plot(self, out_dir: str | Path) -> list[Path]:
        return plot_results(self.requests, self.timeseries, Path(out_dir), slos=self.slos)

    def save(self, out_dir: str | Path) -> Path:
        """Write summary.json, requests.csv, timeseries.csv, run_log.json and plots/ to `out_dir`.

        summary.json holds only what the run determines, so identical runs write identical files;
        how long it took goes to run_log.json. Everything is written to a temporary sibling
        folder first and moved into place at the end, so an interrupted run never leaves a
        half-written result folder.
        """
        out = Path(out_dir)
        with atomic_directory(out) as tmp:
            info = {k: v for k, v in self.info.items() if k not in RUN_LOG_KEYS}
            summary = self.summary.to_dict() | {"run": info}
            (tmp / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False, default=str) + "\n")
            log = {k: self.info[k] for k in RUN_LOG_KEYS if k in self.info}
            log["written_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            (tmp / "run_log.json").write_text(json.dumps(log, indent=2) + "\n")
            self.requests.to_csv(tmp / "requests.csv", index=False, float_format="%.6f")
            if self.timeseries is not None:
                self.timeseries.to_csv(tmp / "timeseries.csv", index=False, float_format="%.6f")
            self.plot(tmp / "plots")
            if "autoscaling" in self.info:
                from simulator.metrics.replica_timeline import save_outputs

                save_outputs(self.info["autoscaling"], tmp, self.requests["arrival"].to_numpy())
        return out

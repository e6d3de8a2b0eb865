"""The outcome of a run (simulated or measured) and how it is written to disk."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from simulator.common.files import result_files
from simulator.metrics import RequestRecord, Summary, requests_frame
from simulator.metrics.plots import plot_results
from simulator.metrics.tables import write_table

RUN_LOG_KEYS = ("wall_time_s",)  # facts of the machine, not of the run: in run_log.json, not summary.json


@dataclass
class Results:
    summary: Summary
    records: list[RequestRecord]
    timeseries: pd.DataFrame | None
    slos: dict
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # provenance: what produced these numbers
    window: tuple[float, float] | None = None  # arrivals measured, [start, end) s; None: all of them
    _requests: pd.DataFrame | None = None

    @property
    def requests(self) -> pd.DataFrame:
        """One row per request (seconds); with a measurement window, `measured` says which
        requests the summary covers."""
        if self._requests is None:
            frame = requests_frame(self.records, self.slos)
            if self.window is not None:
                frame["measured"] = (frame["arrival"] >= self.window[0]) & (frame["arrival"] < self.window[1])
            self._requests = frame
        return self._requests

    @property
    def measured_requests(self) -> pd.DataFrame:
        """The requests the summary covers."""
        frame = self.requests
        return frame[frame["measured"]] if "measured" in frame else frame

    def reset_requests(self) -> None:
        self._requests = None

    def plot(self, out_dir: str | Path) -> list[Path]:
        return plot_results(self.measured_requests, self.timeseries, Path(out_dir), slos=self.slos,
                            window=self.window)

    def save(self, out_dir: str | Path, *, force: bool = False, formats: tuple[str, ...] = ("csv",)) -> Path:
        """Write summary.json, requests.csv, timeseries.csv (and .parquet with `formats`),
        run_log.json and plots/ to `out_dir`.

        summary.json holds only what the run determines, so identical runs write identical files;
        how long it took goes to run_log.json. The files are staged and moved into place at the
        end (simulator.common.files.result_files): an interrupted run leaves the previous results
        intact, and nothing llmsim did not write is replaced or removed.
        """
        with result_files(out_dir, force=force) as stage:
            self.write_into(stage, formats)
        return Path(out_dir)

    def write_into(self, folder: Path, formats: tuple[str, ...] = ("csv",)) -> None:
        """This run's files, into `folder` (a staging folder of a result set)."""
        info = {k: v for k, v in self.info.items() if k not in RUN_LOG_KEYS}
        summary = self.summary.to_dict() | {"run": info}
        (folder / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False, default=str) + "\n")
        streamed = "streamed" in self.info  # its requests.csv was written as it ran (info.streamed names it)
        if not streamed:
            write_table(self.requests, folder / "requests", formats, float_format="%.6f")
        if self.timeseries is not None:
            write_table(self.timeseries, folder / "timeseries", formats, float_format="%.6f")
        log = {k: self.info[k] for k in RUN_LOG_KEYS if k in self.info}
        log["written_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:  # a plot never costs the run its numbers
            if not streamed:
                self.plot(folder / "plots")
            if "autoscaling" in self.info:
                from simulator.metrics.replica_timeline import save_outputs

                save_outputs(self.info["autoscaling"], folder, self.requests["arrival"].to_numpy())
        except Exception as exc:  # noqa: BLE001 - any plotting failure; the numbers are written anyway
            log["plot_error"] = f"{type(exc).__name__}: {exc}"
            print(f"llmsim: warning: plots not drawn ({log['plot_error']}); the results are written",
                  file=sys.stderr)
        (folder / "run_log.json").write_text(json.dumps(log, indent=2) + "\n")

"""A scenario run streamed in bounded memory (`run.stream_above`): what `run` does for runs too
large to hold every request (simulator/serving/streamed.py, simulator/metrics/streaming.py)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from simulator.metrics.results import Results
from simulator.metrics.streaming import StreamingSummary
from simulator.scenario.schema import Scenario
from simulator.serving import Deployment
from simulator.serving.streamed import serve_streamed
from simulator.workload.stream import expected_requests


def streams(scenario: Scenario) -> bool:
    """Whether `run` streams this scenario: its expected request count exceeds run.stream_above."""
    above = scenario.run.stream_above
    return above is not None and expected_requests(scenario.workload) > above


def run_streamed(scenario: Scenario, seed: int, deployment: Deployment, started: float) -> Results:
    """Serve the scenario's workload drawn lazily; requests.csv is written to run.stream_dir (a new
    folder by default) in chunks and the summary comes from exact counts and quantile sketches.
    The Results hold no records: `info["streamed"]` names the file."""
    if scenario.run.stream_dir is not None:
        folder = Path(scenario.run.stream_dir)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(tempfile.mkdtemp(prefix=f"llmsim-{scenario.name}-"))
    path = folder / "requests.csv"
    if path.exists():  # never overwrite a file llmsim did not just write
        path = Path(tempfile.mkstemp(prefix="requests-", suffix=".csv", dir=folder)[1])
    slos = {c.name: c.slo for c in scenario.workload.classes}
    summary = StreamingSummary(slos, path)
    served = serve_streamed(deployment, scenario.workload, seed, base_dir=scenario.base_dir, on_records=summary.add)
    counts = served.counts()
    out = summary.summary(cost_per_hour=deployment.usd_per_hour, gpu_busy_fraction=counts.pop("gpu_busy_fraction"),
                          kv_usage_mean=counts.pop("kv_usage_mean"))
    pool = deployment.entry
    info = {"scenario": deployment.name, "seed": seed, "model": deployment.model, "hardware": pool.hardware,
            "replicas": pool.replicas, "tensor_parallel": pool.tensor_parallel, "policy": deployment.policy,
            "router": deployment.router, "execution": pool.execution.describe(), **counts,
            "streamed": {"requests_csv": str(path), "rows": summary.rows_written,
                         "percentile_relative_error": summary.relative_error},
            "wall_time_s": round(time.perf_counter() - started, 3)}
    return Results(out, [], None, slos, f"{deployment.model} on {pool.replicas}x{pool.tensor_parallel} "
                   f"{pool.hardware}, streamed", info)

"""A day with autoscaling against a fixed deployment sized for the peak, on the same arrivals.

The fixed deployment runs as many replicas all day as the autoscaler provisioned at its peak.
Both runs use the same seed, so they serve identical requests (common random numbers). Cost per
day is the time-average of provisioned replicas x $/replica-hour x 24: with a compressed day
(a diurnal `period_s` shorter than 86,400 s) it is the cost of the real day the run stands for,
provided the autoscaler's interval and cold start were compressed alike.
"""

from __future__ import annotations

import pandas as pd

from simulator.common.errors import ConfigError
from simulator.metrics.results import Results
from simulator.scenario import Scenario, run


def _row(name: str, results: Results, replicas_mean: float, replicas_peak: int, per_replica_hour: float) -> dict:
    s = results.summary
    return {
        "deployment": name,
        "mean_replicas": replicas_mean,
        "peak_replicas": replicas_peak,
        "usd_per_day": replicas_mean * per_replica_hour * 24,
        "slo_attainment_pct": None if s.slo_attainment is None else s.slo_attainment * 100,
        "ttft_p90_ms": None if s.latency["ttft"].p90 is None else s.latency["ttft"].p90 * 1000,
        "tpot_p90_ms": None if s.latency["tpot"].p90 is None else s.latency["tpot"].p90 * 1000,
        "saturated": s.saturated,
    }


def autoscaled_vs_fixed(scenario: Scenario, seed: int | None = None) -> tuple[pd.DataFrame, dict[str, Results]]:
    """Run the scenario as written (with autoscaling) and with a fixed fleet sized for its peak."""
    if scenario.autoscaling is None:
        raise ConfigError(f"{scenario.name}: no autoscaling: section to compare against a fixed deployment")
    per_replica_hour = scenario.price_per_hour() / scenario.deployment.replicas
    scaled = run(scenario, seed=seed)
    report = scaled.info["autoscaling"]
    peak = int(report["peak_replicas"])
    fixed_scenario = scenario.model_copy(
        update={"autoscaling": None, "deployment": scenario.deployment.model_copy(update={"replicas": peak})}
    )
    fixed = run(fixed_scenario, seed=seed)
    table = pd.DataFrame([
        _row("autoscaled", scaled, report["mean_replicas"], peak, per_replica_hour),
        _row(f"fixed at peak ({peak})", fixed, float(peak), peak, per_replica_hour),
    ])
    return table, {"autoscaled": scaled, "fixed": fixed}

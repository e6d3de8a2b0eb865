"""Simulated vs measured: the error table, tolerances, and a short validation on the real engine."""

import numpy as np
import pytest

from calibration.accuracy import Tolerances, compare
from simulator.errors import ConfigError
from simulator.metrics import RequestRecord, summarize
from simulator.results import Results


def results(scale: float = 1.0, n: int = 50) -> Results:
    """Requests with TTFT 20 ms and 10 tokens 5 ms apart, all times scaled by `scale`."""
    records = []
    for i in range(n):
        arrival = 0.1 * i
        times = arrival + scale * (0.020 + 0.005 * np.arange(10) * (1 + i / n))
        records.append(RequestRecord(i, "c", arrival, 100, times, "ok"))
    return Results(summarize(records), records, None, {})


def test_identical_runs_pass_with_zero_error():
    cmp = compare(results(), results())
    assert cmp.passed
    assert np.allclose(cmp.table["error"].astype(float), 0.0)
    assert set(cmp.table["metric"]) >= {"TTFT", "TPOT", "ITL", "E2E", "output tok/s"}


def test_a_simulator_8_percent_slow_fails_p50_at_5_percent_but_passes_at_10():
    real, sim = results(), results(scale=1.08)
    strict = compare(real, sim, Tolerances(mean=None, p50=0.05, p90=None, throughput=None))
    assert not strict.passed
    ttft = strict.table.query("metric == 'TTFT' and stat == 'p50'").iloc[0]
    assert ttft.error == pytest.approx(0.08, abs=1e-9) and ttft.ok is False
    assert compare(real, sim, Tolerances(mean=0.1, p50=0.1, p90=0.1, throughput=0.1)).passed


def test_absolute_slack_forgives_sub_millisecond_misses():
    real, sim = results(), results(scale=1.02)  # TTFT 20 ms -> 20.4 ms, 2% off
    tol = Tolerances(mean=None, p50=0.01, p90=None, throughput=None, abs_ms=0.5)
    row = compare(real, sim, tol).table.query("metric == 'TTFT' and stat == 'p50'").iloc[0]
    assert row.ok  # 0.4 ms off
    row = compare(real, sim, Tolerances(p50=0.01, abs_ms=0.0)).table.query(
        "metric == 'TTFT' and stat == 'p50'").iloc[0]
    assert not row.ok


def test_tolerance_overrides_parse_and_reject_nonsense():
    tol = Tolerances.parse(["p50=0.05", "p99=none", "throughput=0.03"])
    assert (tol.p50, tol.p99, tol.throughput) == (0.05, None, 0.03)
    for bad in ("p42=0.1", "p50", "p50=-1", "p50=abc"):
        with pytest.raises(ConfigError, match="--tolerance"):
            Tolerances.parse([bad])

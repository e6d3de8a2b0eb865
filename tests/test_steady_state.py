"""Steady state by construction: measurement windows by simulated time, MSER warm-up checks,
batch-means intervals of percentiles, the stopping rule, and what plan and sweep do with them."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import simulator
from simulator.common.errors import ConfigError
from simulator.metrics.steady_state import Decisive, assess, mser_truncation, quantile_interval
from simulator.scenario import parse_scenario
from simulator.scenario.window import decisive_percentiles, resolve_window

BASE = {
    "name": "steady",
    "model": "llama-3-8b",
    "hardware": "a100-80gb",
    "scheduler": {"max_num_seqs": 16},
    "workload": {
        "arrival": {"process": "poisson", "rate": 8.0},
        "num_requests": 150,
        "classes": [{"name": "c", "prompt_tokens": {"dist": "uniform", "low": 50, "high": 2000},
                     "output_tokens": {"dist": "constant", "value": 40}, "slo": {"ttft_ms": 1000}}],
    },
}


def scenario(rate=8.0, window=None, **changes):
    data = copy.deepcopy(BASE)
    data["workload"]["arrival"]["rate"] = rate
    if window is not None:
        data["run"] = {"window": window}
    data.update(changes)
    return parse_scenario(data)


def test_mser_finds_a_transient_and_ignores_noise():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, 2000)
    assert mser_truncation(noise) < 200  # no transient: it cuts (almost) nothing
    transient = noise + 20 * np.exp(-np.arange(2000) / 100)
    assert 200 <= mser_truncation(transient) <= 800


def test_a_transient_past_the_warmup_is_reported():
    rng = np.random.default_rng(2)
    arrival = np.arange(4000) / 10.0
    latency = 0.2 + 0.02 * rng.standard_normal(4000) + 1.0 * np.exp(-arrival / 60)
    d = [Decisive("ttft", 90, None)]
    state = assess(arrival, {"ttft": latency}, d, warmup_s=0, window_s=400, start_s=0)
    assert not state.steady and state.warmup_short and "settling" in state.reason
    later = arrival >= 300
    ok = assess(arrival[later], {"ttft": latency[later]}, d, warmup_s=300, window_s=100, start_s=300)
    assert ok.steady and ok.settled_at_s is None


def test_batch_means_interval_covers_a_correlated_series_and_is_wider_than_iid():
    rng = np.random.default_rng(3)
    x = np.zeros(20000)
    for i in range(1, x.size):  # AR(1), strongly correlated neighbours
        x[i] = 0.95 * x[i - 1] + rng.standard_normal()
    _, lo, hi = quantile_interval(x, 0.9)
    truth = 1.2816 * np.sqrt(1 / (1 - 0.95**2))
    assert lo < truth < hi
    iid = np.sqrt(0.9 * 0.1 / x.size) * 1.96  # the binomial interval in probability
    lo_iid, hi_iid = np.quantile(x, [0.9 - iid, 0.9 + iid])
    assert (hi - lo) > 2 * (hi_iid - lo_iid)


def test_defaults_scale_with_the_rate_and_the_decisive_percentile():
    sc = scenario(rate=30.0, slo_target={"percentile": 99})
    w = resolve_window(sc, decisive_percentiles(sc))
    assert w.measure_s == pytest.approx(5000 / 30) and w.warmup_s == pytest.approx(5000 / 30 / 4)
    assert w.cooldown_s == 30
    slow = scenario(rate=0.5)
    assert resolve_window(slow, decisive_percentiles(slow)).measure_s == pytest.approx(1000)  # p90: 500 arrivals
    fast = scenario(rate=100.0)
    assert resolve_window(fast, decisive_percentiles(fast)).measure_s == 120  # never under two minutes


def test_a_windowed_run_measures_only_its_window():
    sc = scenario(window={"warmup_s": 10, "measure_s": 40, "cooldown_s": 10, "max_extensions": 0})
    results = simulator.run(sc)
    frame = results.requests
    inside = (frame["arrival"] >= 10) & (frame["arrival"] < 50)
    assert (frame["measured"] == inside).all()
    assert frame["arrival"].max() < 60 and frame["arrival"].max() > 55  # arrivals ran through the cool-down
    assert results.summary.total == int(inside.sum())
    assert results.summary.duration == pytest.approx(40)
    assert results.info["window"]["measured_requests"] == int(inside.sum())
    state = results.info["steady_state"]
    assert state["window_s"] == 40 and "ttft_p90" in state["intervals"]


def test_the_stopping_rule_lengthens_a_window_too_short_to_decide():
    sc = scenario(rate=4.0, window={"warmup_s": 10, "measure_s": 15, "cooldown_s": 5, "max_extensions": 2,
                                    "rel_tolerance": 0.02})
    sc = sc.with_updates({"workload.classes": [sc.workload.classes[0].model_dump() | {"slo": {}}]})
    results = simulator.run(sc)  # no limit to be clear of: only a narrow interval ends it
    window = results.info["window"]
    assert window["extensions"] == 2 and window["measure_s"] >= 30  # doubled (a warm-up may be doubled too)
    assert results.info["steady_state"]["too_wide"]  # and still reported as not narrow enough


def test_a_load_a_short_run_passes_is_not_steady_over_a_window():
    short = simulator.run(scenario(rate=12.0)).summary  # 150 requests, 12 s
    assert not short.saturated and short.latency["ttft"].p90 < 1.5
    windowed = simulator.run(scenario(rate=12.0, window={"max_extensions": 0}))
    assert not windowed.info["steady_state"]["steady"]
    assert windowed.summary.latency["ttft"].p90 > 5 * short.latency["ttft"].p90


def test_a_window_needs_a_stationary_arrival_process(tmp_path):
    data = copy.deepcopy(BASE)
    data["workload"] = {"arrival": {"process": "trace", "format": "csv", "path": str(tmp_path / "t.csv")},
                        "classes": [{"name": "c"}]}
    (tmp_path / "t.csv").write_text("arrival_time,prompt_tokens,output_tokens\n0,10,10\n1,10,10\n")
    data["run"] = {"window": {}}
    with pytest.raises(ConfigError, match="not stationary"):
        simulator.run(parse_scenario(data))


def test_sweep_points_report_their_window_and_steady_state(tmp_path):
    import yaml

    from simulator.studies.sweep import run_sweep

    path = tmp_path / "s.yaml"
    data = copy.deepcopy(BASE)
    data["run"] = {"window": {"warmup_s": 10, "measure_s": 30, "cooldown_s": 5, "max_extensions": 0}}
    path.write_text(yaml.safe_dump(data))
    result = run_sweep(path, ["workload.arrival.rate=4,14"], seeds=1, workers=1, max_rate=False, progress=False)
    points = result.points.set_index("workload.arrival.rate")
    assert (points["window_s"] == 30).all() and points.loc[4, "steady"]
    assert points.loc[14, "saturated"] or not points.loc[14, "steady"]
    assert {"ttft_p90_ci_low_ms", "ttft_p90_ci_high_ms", "batch_occupancy"} <= set(points.columns)

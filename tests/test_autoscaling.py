"""Diurnal arrivals (thinning) and the autoscaler: replicas follow the load, cold starts, draining, cost."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator.cli import main
from simulator.common.errors import ConfigError
from simulator.metrics.replica_timeline import timeline_frame
from simulator.scenario import load_scenario, parse_scenario, run
from simulator.studies.scaling_compare import autoscaled_vs_fixed
from simulator.workload import generate, load_workload

ROOT = Path(__file__).resolve().parent.parent
CHAT = {"name": "chat", "prompt_tokens": {"dist": "lognormal", "mean": 400, "std": 200},
        "output_tokens": {"dist": "lognormal", "mean": 100, "std": 50}, "slo": {"ttft_ms": 2000, "tpot_ms": 100}}


def diurnal_workload(profile, rate=None, duration=4000.0, period=1000.0, classes=(CHAT,)):
    arrival = {"process": "diurnal", "period_s": period, "profile": profile}
    if rate is not None:
        arrival["rate"] = rate
    return load_workload({"arrival": arrival, "duration_s": duration, "classes": list(classes)})


def arrivals(config, seed=0):
    return generate(config, seed=seed, max_context=8192).to_frame()["arrival"].to_numpy()


def test_sine_profile_arrivals_follow_the_rate_curve():
    config = diurnal_workload({"kind": "sine", "amplitude": 0.8, "peak_at": 0.25}, rate=5.0)
    t = arrivals(config)
    assert t.size == pytest.approx(5.0 * 4000, rel=0.03)
    phase = np.mod(t, 1000.0) / 1000.0
    counts = np.histogram(phase, bins=10, range=(0, 1))[0]
    centres = (np.arange(10) + 0.5) / 10
    # expected count per bin: integral of the rate over the bin, four periods
    expected = 4 * 100 * 5.0 * (1 + 0.8 * np.sinc(0.1) * np.cos(2 * np.pi * (centres - 0.25)))
    assert counts == pytest.approx(expected, rel=0.08)
    assert np.argmax(counts) == 2  # the peak bin holds 0.25 of the period


def test_table_and_trace_profiles_give_their_slot_rates():
    table = diurnal_workload({"kind": "table", "rates": [1.0, 4.0, 1.0, 2.0]}, duration=8000.0)
    counts = np.histogram(np.mod(arrivals(table), 1000.0), bins=4, range=(0, 1000))[0] / (8 * 250)
    assert counts == pytest.approx([1.0, 4.0, 1.0, 2.0], rel=0.1)
    rescaled = diurnal_workload({"kind": "table", "rates": [1.0, 4.0, 1.0, 2.0]}, rate=4.0, duration=8000.0)
    assert arrivals(rescaled).size == pytest.approx(4.0 * 8000, rel=0.05)
    trace = diurnal_workload({"kind": "trace", "format": "azure", "bins": 6,
                              "path": str(ROOT / "scenarios/traces/azure_conv_2023.csv")}, rate=3.0, duration=3000.0)
    assert arrivals(trace).size == pytest.approx(3.0 * 3000, rel=0.05)


def test_thinning_is_seeded_and_keeps_common_random_numbers():
    config = diurnal_workload({"kind": "sine", "amplitude": 0.5}, rate=2.0)
    assert np.array_equal(arrivals(config, seed=4), arrivals(config, seed=4))
    assert not np.array_equal(arrivals(config, seed=4), arrivals(config, seed=5))
    other = dict(CHAT, prompt_tokens={"dist": "constant", "value": 50})
    changed = diurnal_workload({"kind": "sine", "amplitude": 0.5}, rate=2.0, classes=(other,))
    assert np.array_equal(arrivals(config, seed=4), arrivals(changed, seed=4))  # lengths never move arrivals
    with pytest.raises(ConfigError, match="sine profile needs rate"):
        diurnal_workload({"kind": "sine"})


def autoscaled(**scaling):
    data = {
        "name": "day",
        "model": "llama-3-8b",
        "hardware": "l4",
        "deployment": {"replicas": 1, "weight_dtype": "fp8"},
        "scheduler": {"max_num_seqs": 64},
        "router": "least_outstanding_requests",
        "workload": {"arrival": {"process": "diurnal", "rate": 3.0, "period_s": 600,
                                 "profile": {"kind": "sine", "amplitude": 0.9, "peak_at": 0.5}},
                     "duration_s": 600, "classes": [CHAT]},
        "autoscaling": {"target": 10, "interval_s": 10, "cold_start_s": 25, "min_replicas": 1, "max_replicas": 6,
                        "scale_in_window_s": 40}
        | scaling,
    }
    return parse_scenario(data)


@pytest.fixture(scope="module")
def day():
    return run(autoscaled())


def test_replicas_follow_the_load_within_bounds(day):
    timeline = timeline_frame(day.info["autoscaling"])
    assert timeline["provisioned"].min() >= 1 and timeline["provisioned"].max() <= 6
    quiet = timeline[timeline["time"] < 60]["provisioned"].max()
    peak = timeline[(timeline["time"] > 250) & (timeline["time"] < 350)]["provisioned"].max()
    assert quiet == 1 and peak >= 3
    assert timeline["provisioned"].iloc[-1] < peak  # scaled back in after the peak
    assert (timeline["serving"] <= timeline["provisioned"]).all()


def test_every_request_is_served_and_drained_replicas_get_no_new_work(day):
    df = day.requests
    assert (df["status"] == "ok").all() and day.summary.total == day.summary.completed
    assert df["replica"].nunique() >= 3
    replicas = day.info["autoscaling"]["replicas"]
    assert any(r["released_at"] is not None and r["serving_periods"] for r in replicas)  # some were drained
    for r in replicas:  # the router sends a replica requests only while it serves
        arrived = df[df["replica"] == r["replica"]]["arrival"].to_numpy()
        inside = np.zeros(arrived.size, dtype=bool)
        for start, end in r["serving_periods"]:
            inside |= (arrived >= start) & (arrived <= (np.inf if end is None else end))
        assert inside.all()
        if r["released_at"] is not None and len(arrived):  # released only once its work was done
            assert df[df["replica"] == r["replica"]]["finish"].max() <= r["released_at"]


def test_new_replicas_serve_after_the_cold_start():
    scenario = autoscaled(cold_start_s=40)
    res = run(scenario)
    timeline = timeline_frame(res.info["autoscaling"])
    grew = timeline[timeline["provisioned"].diff() > 0]
    first_request = float(grew["time"].iloc[0])
    df = res.requests
    new_replicas_first = df[df["replica"] != 0]["arrival"].min()  # replica 0 serves from the start
    assert first_request + 40 - 1e-9 <= new_replicas_first <= first_request + 40 + 5


def test_autoscaling_costs_less_than_fixed_at_peak_on_the_same_arrivals():
    table, runs = autoscaled_vs_fixed(autoscaled(), seed=0)
    scaled, fixed = table.iloc[0], table.iloc[1]
    assert scaled["usd_per_day"] < fixed["usd_per_day"]
    assert fixed["mean_replicas"] == fixed["peak_replicas"] == scaled["peak_replicas"]
    a, b = runs["autoscaled"].requests, runs["fixed"].requests
    assert np.array_equal(a["arrival"].to_numpy(), b["arrival"].to_numpy())
    report = runs["autoscaled"].info["autoscaling"]
    price = 0.805  # catalog $/h of one L4
    assert report["cost_usd"] == pytest.approx(report["replica_hours"] * price)
    assert runs["autoscaled"].summary.cost_total < runs["fixed"].summary.cost_total


def test_bad_autoscaling_settings_are_rejected():
    with pytest.raises(ConfigError, match="min_replicas"):
        autoscaled(min_replicas=5, max_replicas=2)
    with pytest.raises(ConfigError, match="utilization target"):
        autoscaled(metric="utilization", target=4)


def test_shipped_scenario_writes_replicas_over_time(tmp_path, capsys):
    path = ROOT / "scenarios" / "diurnal_autoscaling.yaml"
    assert load_scenario(path).autoscaling is not None
    assert main(["run", str(path), "--out", str(tmp_path / "day"), "--compare-fixed"]) == 0
    out = capsys.readouterr().out
    assert "per day" in out and "fixed at peak" in out
    replicas = pd.read_csv(tmp_path / "day" / "replicas.csv")
    assert {"time", "serving", "provisioned", "desired"} <= set(replicas.columns)
    assert (tmp_path / "day" / "plots" / "replicas.png").stat().st_size > 0
    summary = json.loads((tmp_path / "day" / "summary.json").read_text())
    assert summary["run"]["autoscaling"]["peak_replicas"] >= 2

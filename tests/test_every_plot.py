"""Every plot type llmsim draws, rendered from small runs: a run's five plots (with its
measurement window greyed), CDF overlays, load-latency curves, the plan's Pareto plot, a
comparison's pooled CDFs and differences, and replicas over time."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

import simulator
from simulator.metrics.palette import GPU_COLOURS, OKABE_ITO, colour_of, colours_for
from simulator.metrics.plots import overlay_cdfs
from simulator.scenario import parse_scenario
from simulator.studies import capacity_plots
from simulator.studies.compare import compare, policy_variant
from simulator.studies.compare_report import save_comparison
from simulator.studies.sweep import run_sweep

PNG = b"\x89PNG\r\n\x1a\n"
SMALL = {
    "name": "small",
    "model": "llama-3-8b",
    "hardware": "a100-80gb",
    "scheduler": {"max_num_seqs": 16},
    "workload": {
        "arrival": {"process": "poisson", "rate": 6.0},
        "num_requests": 80,
        "classes": [{"name": "c", "prompt_tokens": {"dist": "uniform", "low": 50, "high": 1500},
                     "output_tokens": {"dist": "constant", "value": 30}, "slo": {"ttft_ms": 800, "tpot_ms": 40}}],
    },
}


def is_png(path, min_bytes=5000):
    data = path.read_bytes()
    return data.startswith(PNG) and len(data) > min_bytes


@pytest.fixture(scope="module")
def windowed():
    data = copy.deepcopy(SMALL)
    data["run"] = {"window": {"warmup_s": 5, "measure_s": 15, "cooldown_s": 5, "max_extensions": 0}}
    return simulator.run(parse_scenario(data))


def test_run_plots(windowed, tmp_path):
    paths = windowed.plot(tmp_path)
    assert [p.name for p in paths] == ["ttft_cdf.png", "e2e_cdf.png", "tpot_hist.png", "queue_kv.png", "throughput.png"]
    assert all(is_png(p) for p in paths)


def test_overlay_cdfs_with_fixed_colours_and_an_slo(windowed, tmp_path):
    frames = {"a": windowed.requests, "b": windowed.requests}
    assert is_png(overlay_cdfs(frames, "ttft", tmp_path / "o.png", slo_ms=800, colours=colours_for(["a", "b"])))


def test_load_latency_with_a_saturated_point(tmp_path):
    path = tmp_path / "s.yaml"
    data = copy.deepcopy(SMALL)
    data["run"] = {"window": {"warmup_s": 5, "measure_s": 15, "cooldown_s": 5, "max_extensions": 0}}
    path.write_text(yaml.safe_dump(data))
    result = run_sweep(path, ["workload.arrival.rate=2,40"], seeds=1, workers=1, max_rate=False, progress=False)
    assert result.points["saturated"].any()
    out = result.save(tmp_path / "sweep")
    assert is_png(out / "load_latency.png")
    assert capacity_plots.axis_label("workload.arrival.rate") == "arrival rate (requests/s)"


def test_pareto_of_the_decisive_percentiles_marks_saturated_candidates(tmp_path):
    frame = pd.DataFrame({
        "hardware": ["l4", "h100-sxm", "h100-sxm", "a100-80gb"], "status": ["missed", "met", "met", "missed"],
        "usd_per_hour": [1.0, 6.0, 9.0, 2.0], "saturated": [True, False, False, False],
        "ttft_p99_ms": [1e6, 400.0, 300.0, 1500.0], "tpot_p99_ms": [1e4, 30.0, 25.0, 60.0]})
    decisive = [{"key": "ttft_p99", "metric": "ttft", "percentile": 99, "limit_ms": 1000},
                {"key": "tpot_p99", "metric": "tpot", "percentile": 99, "limit_ms": 50}]
    assert is_png(capacity_plots.pareto(frame, tmp_path / "p.png", winner=1, decisive=decisive))


def test_comparison_plots_pool_replications(tmp_path):
    sc = parse_scenario(SMALL)
    c = compare(sc, [policy_variant("vllm"), policy_variant("static")], replications=2)
    assert set(c.requests["vllm"]["replication"]) == {0, 1}  # the CDFs pool every replication
    out = save_comparison(c, tmp_path / "cmp")
    for name in ("ttft_cdf", "tpot_cdf", "e2e_cdf", "differences"):
        assert is_png(out / "plots" / f"{name}.png")


def test_replicas_over_time(tmp_path):
    from simulator.metrics.replica_timeline import replicas_over_time

    timeline = pd.DataFrame({"time": [0.0, 100.0, 200.0], "serving": [1, 2, 2], "provisioned": [1, 3, 2]})
    assert is_png(replicas_over_time({"autoscaled": timeline}, tmp_path / "r.png",
                                     rate=pd.DataFrame({"time": [0, 100, 200], "rate": [1.0, 3.0, 2.0]})))


def test_colours_are_okabe_ito_and_fixed_per_name():
    assert set(colours_for(list("abcdefgh")).values()) == set(OKABE_ITO.values())
    assert colour_of("h100-sxm") == colour_of("h100-sxm") == GPU_COLOURS["h100-sxm"]
    assert colour_of("my-variant") == colour_of("my-variant")  # stable across runs (no hash seed)
    assert len(set(colours_for(["a", "b", "c", "d"]).values())) == 4
    assert np.all([c.startswith("#") for c in colours_for(list("abcdefghij")).values()])

"""Streamed runs: the quantile sketch's bound, chunked summaries against whole-run ones, and a
streamed run against the same requests served in memory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simulator.common.errors import ConfigError
from simulator.metrics import summarize
from simulator.metrics.sketch import LogBucketSketch
from simulator.metrics.streaming import StreamingSummary
from simulator.scenario import load_scenario, run
from simulator.workload import Workload, load_workload
from simulator.workload.stream import stream_requests

SCENARIO = {
    "name": "stream_test", "seed": 3, "model": "llama-3-8b", "hardware": "a100-80gb",
    "deployment": {"replicas": 2}, "scheduler": {"policy": "vllm"}, "router": "least_outstanding_requests",
    "workload": {"arrival": {"process": "poisson", "rate": 6.0}, "num_requests": 400, "classes": [
        {"name": "chat", "weight": 3, "prompt_tokens": {"dist": "uniform", "low": 20, "high": 900},
         "output_tokens": {"dist": "uniform", "low": 1, "high": 200}, "slo": {"ttft_ms": 300, "tpot_ms": 40}},
        {"name": "batch", "prompt_tokens": {"dist": "constant", "value": 1500},
         "output_tokens": {"dist": "constant", "value": 50}}]},
}


def _scenario(tmp_path, **run_settings):
    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SCENARIO | {"run": run_settings}))
    return load_scenario(path)


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_sketch_quantiles_within_relative_error_and_merge_is_exact(alpha):
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.lognormal(-3, 1.5, 20_000), np.zeros(50)])
    whole = LogBucketSketch(alpha)
    whole.add(values)
    parts = [LogBucketSketch(alpha) for _ in range(3)]
    for part, chunk in zip(parts, np.array_split(values, 3)):
        part.add(chunk)
    for part in parts[1:]:
        parts[0].merge(part)
    ordered = np.sort(values)
    for q in (0.01, 0.5, 0.9, 0.95, 0.99, 0.999):
        exact = ordered[int(np.ceil(q * (values.size - 1)))]
        got = whole.quantile(q)
        assert abs(got - exact) <= alpha * exact * (1 + 1e-9)
        assert parts[0].quantile(q) == got
    assert whole.count == values.size and whole.sum == pytest.approx(values.sum())
    assert whole.quantile(0) == 0.0 and whole.quantile(1) == values.max()


def test_chunked_summary_matches_the_whole_run(tmp_path):
    results = run(_scenario(tmp_path))
    records = results.records
    whole = summarize(records, slos=results.slos)
    stream = StreamingSummary(results.slos, tmp_path / "requests.csv")
    for start in range(0, len(records), 128):
        stream.add(records[start : start + 128])
    got = stream.summary()
    for key in ("total", "completed", "rejected", "unfinished", "good", "prompt_tokens", "output_tokens"):
        assert getattr(got, key) == getattr(whole, key)
    assert got.duration == pytest.approx(whole.duration)
    frame = results.requests
    for metric in ("ttft", "tpot", "e2e"):
        values = np.sort(frame[metric].dropna().to_numpy())
        stats = got.latency[metric]
        assert stats.count == whole.latency[metric].count
        assert stats.mean == pytest.approx(whole.latency[metric].mean)
        exact = values[int(np.ceil(0.9 * (values.size - 1)))]
        assert abs(stats.p90 - exact) <= 0.01 * exact * (1 + 1e-9)
    assert got.latency["itl"].count == whole.latency["itl"].count
    assert {n: c.good for n, c in got.classes.items()} == {n: c.good for n, c in whole.classes.items()}
    written = pd.read_csv(tmp_path / "requests.csv")
    assert len(written) == len(records) and list(written.columns) == list(frame.columns)


def test_streamed_run_serves_the_same_requests_as_one_in_memory(tmp_path):
    scenario = _scenario(tmp_path, stream_above=100, stream_dir=str(tmp_path / "out"))
    streamed = run(scenario)
    assert streamed.records == [] and streamed.info["streamed"]["rows"] == 400
    requests = list(stream_requests(scenario.workload, seed=scenario.seed, max_context=8192, chunk=1 << 16))
    config = load_workload(SCENARIO["workload"])
    memory = run(scenario, workload=Workload(requests, slos={c.name: c.slo for c in config.classes}))
    for key in ("total", "completed", "good", "prompt_tokens", "output_tokens"):
        assert getattr(streamed.summary, key) == getattr(memory.summary, key)
    assert streamed.info["steps"] == memory.info["steps"]
    assert streamed.info["step_sources"] == memory.info["step_sources"]
    assert streamed.summary.latency["e2e"].mean == pytest.approx(memory.summary.latency["e2e"].mean)
    assert streamed.summary.gpu_busy_fraction == pytest.approx(memory.summary.gpu_busy_fraction)
    folder = streamed.save(tmp_path / "results")
    assert (folder / "summary.json").is_file() and not (folder / "requests.csv").exists()
    written = pd.read_csv(tmp_path / "out" / "requests.csv").sort_values("id").reset_index(drop=True)
    expected = memory.requests.reset_index(drop=True)
    assert np.allclose(written["e2e"].to_numpy(), expected["e2e"].to_numpy(), equal_nan=True)


def test_stream_draws_are_fixed_by_the_seed():
    config = load_workload(SCENARIO["workload"])
    a = [(r.arrival, r.prompt_tokens, r.output_tokens) for r in stream_requests(config, seed=1, max_context=4096)]
    b = [(r.arrival, r.prompt_tokens, r.output_tokens) for r in stream_requests(config, seed=1, max_context=4096)]
    c = [(r.arrival, r.prompt_tokens) for r in stream_requests(config, seed=2, max_context=4096)]
    assert a == b and len(a) == 400 and [x[:2] for x in a] != c
    assert all(p + o <= 4096 for _, p, o in a)


def test_traces_are_not_streamed():
    config = load_workload({"arrival": {"process": "trace", "format": "azure", "path": "x.csv"}})
    with pytest.raises(ConfigError, match="cannot be streamed"):
        next(stream_requests(config, seed=0, max_context=4096))

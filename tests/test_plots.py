"""Plots are written, non-empty, and survive empty runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simulator.metrics import SLO, RequestRecord, requests_frame
from simulator.metrics.plots import output_token_rate, overlay_cdfs, plot_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPECTED = ["ttft_cdf.png", "e2e_cdf.png", "tpot_hist.png", "queue_kv.png", "throughput.png"]


def sample_frame(n=200, seed=0, cls=("chat", "batch")):
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        arrival = i * 0.1
        times = arrival + 0.05 + np.cumsum(rng.exponential(0.02, rng.integers(1, 60)))
        records.append(RequestRecord(i, cls[i % len(cls)], arrival, 100, times, "ok", i % 2))
    records.append(RequestRecord(n, "chat", 1.0, 9000, np.empty(0), "rejected", None))
    return requests_frame(records, {"chat": SLO(ttft_ms=100)})


def sample_timeseries(n=400, replicas=2):
    t = np.linspace(0, 20, n)
    return pd.DataFrame(
        {
            "time": np.tile(t, replicas),
            "replica": np.repeat(np.arange(replicas), n),
            "waiting": np.tile((np.sin(t) > 0) * 3, replicas),
            "running": 8,
            "kv_usage": np.tile(0.5 + 0.3 * np.sin(t), replicas),
            "busy": 1.0,
        }
    )


def assert_pngs(paths, out_dir):
    assert [p.name for p in paths] == EXPECTED
    for path in paths:
        assert path.parent == out_dir
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_plot_results_writes_all_plots(tmp_path):
    out = tmp_path / "plots"
    paths = plot_results(sample_frame(), sample_timeseries(), out, slos={"chat": SLO(ttft_ms=100)})
    assert_pngs(paths, out)


def test_plot_results_without_timeseries_and_with_a_long_one(tmp_path):
    assert_pngs(plot_results(sample_frame(), None, tmp_path / "a"), tmp_path / "a")
    long = sample_timeseries(n=20_000, replicas=1)  # drawn as bin means
    assert_pngs(plot_results(sample_frame(cls=("chat",)), long, tmp_path / "b"), tmp_path / "b")


def test_plot_results_when_everything_was_rejected(tmp_path):
    records = [RequestRecord(i, "c", 0.1 * i, 9000, np.empty(0), "rejected", None) for i in range(3)]
    paths = plot_results(requests_frame(records), None, tmp_path)
    assert [p.name for p in paths] == EXPECTED and all(p.stat().st_size > 0 for p in paths)
    paths = plot_results(requests_frame([]), pd.DataFrame(), tmp_path / "none")
    assert all(p.exists() for p in paths)


def test_overlay_cdfs(tmp_path):
    frames = {"simulated": sample_frame(seed=1), "measured": sample_frame(seed=2), "empty": requests_frame([])}
    path = overlay_cdfs(frames, "ttft", tmp_path / "cmp" / "ttft.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert overlay_cdfs({"x": requests_frame([])}, "e2e", tmp_path / "e.png").stat().st_size > 0
    with pytest.raises(ValueError, match="metric"):
        overlay_cdfs(frames, "latency", tmp_path / "bad.png")


def test_output_token_rate_conserves_tokens():
    done = sample_frame()
    done = done[done["status"] == "ok"]
    edges = np.linspace(done["first_token"].min(), done["finish"].max() + 1e-9, 51)
    rate = output_token_rate(done, edges)
    assert np.sum(rate * np.diff(edges)) == pytest.approx(done["output_tokens"].sum())

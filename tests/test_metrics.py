"""Metrics against hand-computed examples, saturation detection, summary.json and the report."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from simulator.common.files import write_text_atomic
from simulator.metrics import (
    SLO,
    LatencyStats,
    RequestRecord,
    detect_saturation,
    requests_frame,
    summarize,
    total_waiting,
)
from simulator.metrics.report import print_summary, summary_to_json
from simulator.metrics.saturation import drain_check, ttft_trend


def rec(i, cls, arrival, prompt, times, status="ok", replica=0):
    return RequestRecord(i, cls, arrival, prompt, np.array(times, dtype=float), status, replica)


def hand_records():
    """Six requests whose metrics are worked out by hand in the tests below."""
    return [
        rec(0, "chat", 0.0, 100, [0.2, 0.25, 0.35, 0.40]),  # TPOT 0.2/3 = 66.7 ms
        rec(1, "chat", 0.5, 50, [0.6, 0.64, 0.68]),  # TPOT 40 ms
        rec(2, "chat", 1.0, 20, [1.5]),  # a single output token: no TPOT, no gaps
        rec(3, "batch", 1.0, 200, [1.2, 1.3, 2.0]),  # TPOT 0.4 s
        rec(4, "chat", 1.5, 5000, [], "rejected", None),
        rec(5, "batch", 1.8, 10, [2.5], "unfinished"),
    ]


SLOS = {"chat": SLO(ttft_ms=300, tpot_ms=60), "batch": SLO(e2e_ms=2000)}


def test_requests_frame_by_hand():
    df = requests_frame(hand_records(), SLOS).set_index("id")
    assert list(df["status"]) == ["ok", "ok", "ok", "ok", "rejected", "unfinished"]
    assert df["output_tokens"].tolist() == [4, 3, 1, 3, 0, 1]
    assert df.loc[0, "ttft"] == pytest.approx(0.2)
    assert df.loc[1, "ttft"] == pytest.approx(0.1)
    assert df.loc[3, "e2e"] == pytest.approx(1.0)
    assert df.loc[0, "tpot"] == pytest.approx(0.2 / 3)
    assert df.loc[3, "tpot"] == pytest.approx(0.4)
    assert np.isnan(df.loc[2, "tpot"]) and np.isnan(df.loc[2, "itl_max"])  # one token: excluded
    assert df.loc[3, "itl_max"] == pytest.approx(0.7)
    assert df.loc[0, "itl_mean"] == pytest.approx(0.2 / 3)
    # Requests that did not complete have no latencies, but the unfinished one did emit a token.
    assert df.loc[[4, 5], ["ttft", "e2e", "finish"]].isna().all().all()
    assert df.loc[5, "first_token"] == pytest.approx(2.5)
    assert np.isnan(df.loc[4, "first_token"])
    # r0 misses TPOT, r2 misses TTFT; r1 and r3 meet their class's SLOs.
    assert df["met_slo"].tolist() == [False, True, False, True, False, False]
    assert pd.isna(df.loc[4, "replica"]) and df.loc[0, "replica"] == 0


def test_summary_by_hand():
    s = summarize(hand_records(), slos=SLOS, cost_per_hour=36.0)
    assert (s.total, s.completed, s.rejected, s.unfinished, s.errors) == (6, 4, 1, 1, 0)
    assert s.duration == pytest.approx(2.0)  # first arrival 0.0 to last finish 2.0
    assert s.request_throughput == pytest.approx(4 / 2.0)
    assert s.output_tokens == 11 and s.prompt_tokens == 370  # completed requests only
    assert s.output_throughput == pytest.approx(11 / 2.0)
    assert s.total_token_throughput == pytest.approx(381 / 2.0)

    ttft = [0.2, 0.1, 0.5, 0.2]
    assert s.latency["ttft"].mean == pytest.approx(0.25)
    assert s.latency["ttft"].p50 == pytest.approx(0.2)
    assert s.latency["ttft"].p90 == pytest.approx(np.percentile(ttft, 90))
    tpot = [0.2 / 3, 0.04, 0.4]
    assert s.latency["tpot"].count == 3
    assert s.latency["tpot"].mean == pytest.approx(np.mean(tpot))
    itl = [0.05, 0.10, 0.05, 0.04, 0.04, 0.1, 0.7]  # pooled gaps of completed requests
    assert s.latency["itl"].count == 7
    assert s.latency["itl"].mean == pytest.approx(np.mean(itl))
    assert s.latency["itl"].p99 == pytest.approx(np.percentile(itl, 99))
    assert s.latency["e2e"].mean == pytest.approx(np.mean([0.4, 0.18, 0.5, 1.0]))

    assert s.good == 2
    assert s.goodput == pytest.approx(2 / 2.0)
    assert s.slo_attainment == pytest.approx(2 / 6)  # rejected and unfinished count as arrived
    assert s.classes["chat"].total == 4 and s.classes["chat"].good == 1
    assert s.classes["chat"].slo_attainment == pytest.approx(0.25)
    assert s.classes["batch"].slo_attainment == pytest.approx(0.5)
    assert s.classes["batch"].goodput == pytest.approx(0.5)
    assert s.classes["batch"].latency["ttft"].mean == pytest.approx(0.2)

    assert s.cost_total == pytest.approx(36.0 * 2.0 / 3600)  # $0.02
    assert s.cost_per_million_output_tokens == pytest.approx(0.02 / 11 * 1e6)
    assert s.cost_per_million_total_tokens == pytest.approx(0.02 / 381 * 1e6)
    assert not s.saturated


def test_duration_override_scales_rates_and_cost():
    s = summarize(hand_records(), slos=SLOS, duration=4.0, cost_per_hour=36.0)
    assert s.request_throughput == pytest.approx(1.0)
    assert s.goodput == pytest.approx(0.5)
    assert s.cost_per_million_output_tokens == pytest.approx(36.0 * 4 / 3600 / 11 * 1e6)


def test_class_without_slo_counts_every_completed_request_as_good():
    s = summarize(hand_records(), slos={"chat": SLO(ttft_ms=300)})
    assert s.classes["batch"].good == 1  # r3 completed, r5 unfinished
    assert s.classes["batch"].slo is None
    assert s.classes["chat"].good == 2  # r0 and r1; r2's TTFT is 500 ms


def test_tpot_slo_passes_single_token_requests():
    records = [rec(0, "c", 0.0, 10, [0.1]), rec(1, "c", 0.0, 10, [0.1, 0.3])]
    df = requests_frame(records, {"c": SLO(tpot_ms=100)})
    assert df["met_slo"].tolist() == [True, False]


def test_itl_slo_allows_one_percent_of_gaps_over():
    def steady(i, n_gaps, slow):
        gaps = np.full(n_gaps, 0.01)
        gaps[:slow] = 0.5
        return rec(i, "c", 0.0, 10, 0.1 + np.concatenate([[0.0], np.cumsum(gaps)]))

    records = [steady(0, 3, 0), steady(1, 3, 1), steady(2, 200, 2), steady(3, 200, 3)]
    df = requests_frame(records, {"c": SLO(itl_ms=20)})
    # Under 100 gaps every gap must be within the SLO; 200 gaps tolerate 2 slow ones.
    assert df["met_slo"].tolist() == [True, False, True, False]


def test_invalid_records_are_rejected():
    with pytest.raises(ValueError, match="status"):
        rec(0, "c", 0.0, 1, [1.0], "done")
    with pytest.raises(ValueError, match="request 7"):
        requests_frame([rec(1, "c", 0.0, 1, [0.5, 0.6]), rec(7, "c", 0.0, 1, [0.5, 0.4])])
    with pytest.raises(ValueError, match="earlier than the arrival"):
        requests_frame([rec(3, "c", 1.0, 1, [0.5])])


def test_percentiles_match_numpy():
    values = np.random.default_rng(3).lognormal(size=1001)
    stats = LatencyStats.of(values)
    assert [stats.p50, stats.p90, stats.p95, stats.p99] == pytest.approx(
        np.percentile(values, [50, 90, 95, 99])
    )
    assert stats.mean == pytest.approx(values.mean())
    assert LatencyStats.of(np.array([np.nan])).p99 is None


def test_pooled_itl_matches_numpy_on_random_requests():
    rng = np.random.default_rng(5)
    records, gaps = [], []
    for i in range(300):
        times = 1.0 + i + np.cumsum(rng.exponential(0.03, rng.integers(1, 40)))
        records.append(rec(i, "c", float(i), 10, times))
        gaps.append(np.diff(times))
    pooled = np.concatenate(gaps)
    s = summarize(records)
    assert s.latency["itl"].count == pooled.size
    assert s.latency["itl"].p99 == pytest.approx(np.percentile(pooled, 99))
    assert s.latency["itl"].p50 == pytest.approx(np.percentile(pooled, 50))


def test_utilisation_is_time_weighted_per_replica():
    ts = pd.DataFrame(
        {
            "time": [0.0, 3.0, 4.0, 0.0, 4.0],
            "replica": [0, 0, 0, 1, 1],
            "waiting": [0, 0, 0, 0, 0],
            "busy": [1.0, 0.0, 1.0, 0.0, 0.0],
            "kv_usage": [0.5, 0.5, 0.5, 0.1, 0.1],
        }
    )
    s = summarize(hand_records(), timeseries=ts)
    assert s.gpu_busy_fraction == pytest.approx((0.75 + 0.0) / 2)
    assert s.kv_usage_mean == pytest.approx(0.3)


def test_empty_and_all_rejected_runs():
    s = summarize([])
    assert s.total == 0 and s.request_throughput is None and s.slo_attainment is None
    s = summarize([rec(i, "c", 0.1 * i, 9000, [], "rejected", None) for i in range(5)], cost_per_hour=1)
    assert s.completed == 0 and s.slo_attainment == 0.0
    assert s.latency["ttft"].mean is None and s.cost_per_million_output_tokens is None
    json.dumps(s.to_dict(), allow_nan=False)


def test_speed_sanity_20k_requests():
    rng = np.random.default_rng(0)
    records = [
        rec(i, "c", i * 0.05, 500, i * 0.05 + 0.1 + np.cumsum(rng.exponential(0.02, 200)))
        for i in range(20_000)
    ]
    df = requests_frame(records, {"c": SLO(ttft_ms=500, itl_ms=100)})
    assert len(df) == 20_000 and df["output_tokens"].sum() == 4_000_000
    assert df["tpot"].notna().all()


# ---- saturation ------------------------------------------------------------------------------


def sawtooth_queue(duration=600.0, period=10.0, burst=40, rising=False, seed=0):
    """A stable but bursty queue, sampled at irregular step boundaries. Falling: `burst` requests
    arrive together every `period` seconds and are served within 80% of it. Rising: they trickle
    in over the period and are all admitted at its end (the harder case for a slope fit)."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, duration, 12_000))
    phase = np.mod(t, period) / period
    waiting = burst * phase if rising else burst * np.clip(1 - phase / 0.8, 0, None)
    arrivals = np.repeat(np.arange(0, duration, period), burst)
    return pd.DataFrame({"time": t, "waiting": np.round(waiting)}), arrivals


def growing_queue(duration=600.0, rate=5.0, served=4.0, seed=0):
    """Arrivals at `rate`/s, service at `served`/s: the queue grows by (rate - served) per second."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, duration, 12_000))
    waiting = np.maximum(0, np.round((rate - served) * t + rng.normal(0, 3, t.size)))
    arrivals = np.sort(rng.uniform(0, duration, int(rate * duration)))
    return pd.DataFrame({"time": t, "waiting": waiting}), arrivals


@pytest.mark.parametrize("rising", [False, True])
@pytest.mark.parametrize("period", [10.0, 30.0])
@pytest.mark.parametrize("end", [600.0, 593.0])
def test_stable_sawtooth_queue_is_not_saturated(rising, period, end):
    # Bursts of up to 120 waiting requests, 10 or more of them in the inspected half.
    ts, arrivals = sawtooth_queue(period=period, burst=int(4 * period), rising=rising)
    check = detect_saturation(ts, end, arrivals_start=0.0, arrival_times=arrivals)
    assert not check.saturated, check


def test_linearly_growing_queue_is_saturated():
    ts, arrivals = growing_queue()
    check = detect_saturation(ts, 600.0, arrivals_start=0.0, arrival_times=arrivals)
    assert check.saturated
    assert check.queue_growth == pytest.approx(300, rel=0.1)
    assert "waiting queue grew" in check.reason


def test_small_growth_is_below_the_threshold():
    ts, arrivals = growing_queue(rate=5.0, served=4.9)  # +30 requests over 1,500 arrivals
    assert not detect_saturation(ts, 600.0, arrivals_start=0.0, arrival_times=arrivals).saturated


def test_queue_is_summed_over_replicas_with_irregular_samples():
    ts = pd.DataFrame(
        {"time": [0.0, 2.0, 1.0, 3.0, 3.0], "replica": [0, 0, 1, 1, 1], "waiting": [4, 1, 2, 5, 6]}
    )
    t, total = total_waiting(ts)
    assert t.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert total.tolist() == [4, 6, 3, 7]  # at t=3 the later row of replica 1 wins


def test_growth_split_across_replicas_is_saturated():
    ts, arrivals = growing_queue()
    parts = []
    for replica in range(4):
        part = ts.iloc[replica::4].copy()
        part["waiting"] = part["waiting"] / 4
        part["replica"] = replica
        parts.append(part)
    check = detect_saturation(pd.concat(parts), 600.0, arrivals_start=0.0, arrival_times=arrivals)
    assert check.saturated


def test_many_unfinished_requests_mean_saturation():
    check = detect_saturation(None, 100.0, unfinished=400, total=1000)
    assert check.saturated and "400 of 1000" in check.reason
    assert not detect_saturation(None, 100.0, unfinished=5, total=1000).saturated


def test_summarize_flags_saturation_from_records_alone():
    # 2 requests/s arrive, the server starts one every 0.6 s: TTFT grows with arrival time.
    records = []
    for i in range(600):
        arrival = i * 0.5
        first = i * 0.6 + 0.1
        records.append(rec(i, "c", arrival, 10, first + 0.02 * np.arange(20)))
    s = summarize(records)
    assert s.saturated and "waiting queue grew" in s.saturation_reason
    stable = [rec(i, "c", i * 0.5, 10, i * 0.5 + 0.1 + 0.02 * np.arange(20)) for i in range(600)]
    assert not summarize(stable).saturated


def test_the_time_in_system_rule_sees_a_slow_rise_the_queue_rule_misses():
    """A queue fed 2% faster than served (waits rising 0.02 s per second of arrivals) in noise."""
    rng = np.random.default_rng(3)
    arrival = np.sort(rng.uniform(0, 600, 3000))
    rising = 0.5 + 0.02 * arrival + rng.normal(0, 0.5, arrival.size)
    check = ttft_trend(arrival, np.maximum(rising, 0.01), 0.0, 600.0)
    assert check.saturated and "rose by about 6" in check.reason
    stable = np.maximum(0.5 + rng.exponential(1.0, arrival.size), 0.01)  # bursty but level
    assert not ttft_trend(arrival, stable, 0.0, 600.0).saturated
    few = ttft_trend(arrival[:30], rising[:30], 0.0, float(arrival[29]))  # 15 requests in the half
    assert not few.saturated


def test_a_backlog_drained_after_the_arrivals_is_flagged():
    arrival = np.linspace(0, 3, 60)
    burst = drain_check(arrival, arrival + np.linspace(0.1, 40, 60))  # the last starts 40 s late
    assert burst.saturated and "drained a backlog" in burst.reason
    assert not drain_check(arrival, arrival + 0.5).saturated
    assert not drain_check(arrival[:5], arrival[:5] + 40).saturated  # too few requests to judge


# ---- outputs -----------------------------------------------------------------------------------


def test_summary_json_layout(tmp_path):
    s = summarize(hand_records(), slos=SLOS, cost_per_hour=36.0)
    path = summary_to_json(s, tmp_path / "out" / "summary.json")
    data = json.loads(path.read_text())
    assert data["counts"] == {"total": 6, "completed": 4, "rejected": 1, "unfinished": 1, "errors": 0}
    assert data["latency_s"]["ttft"]["mean"] == pytest.approx(0.25)
    assert set(data["latency_s"]) == {"ttft", "tpot", "itl", "e2e"}
    assert data["slo"]["slo_attainment"] == pytest.approx(2 / 6)
    assert data["classes"]["chat"]["slo_ms"] == {"ttft_ms": 300.0, "tpot_ms": 60.0}
    assert data["cost"]["per_1m_output_tokens_usd"] == pytest.approx(0.02 / 11 * 1e6)
    assert data["utilization"] == {"gpu_busy_fraction": None, "kv_usage_mean": None}
    assert data["saturated"] is False


def test_write_text_atomic_replaces_without_leftovers(tmp_path):
    target = tmp_path / "a.txt"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def _printed(summary) -> str:
    buffer = io.StringIO()
    print_summary(summary, Console(file=buffer, width=140, color_system=None), title="test run")
    return buffer.getvalue()


def test_print_summary_shows_ms_and_saturation_banner():
    s = summarize(hand_records(), slos=SLOS, cost_per_hour=36.0)
    text = _printed(s)
    assert "250.0" in text  # mean TTFT in ms
    assert "33.3%" in text  # overall SLO attainment
    assert "SATURATED" not in text
    s.saturated, s.saturation_reason = True, "waiting queue grew by about 300 requests"
    text = _printed(s)
    assert "SATURATED" in text and "not meaningful" in text and "replicas" in text

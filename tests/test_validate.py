"""Simulated vs measured: the error table, tolerances, and a short validation on the real engine."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from calibration.validation.accuracy import Tolerances, compare
from simulator.common.errors import ConfigError
from simulator.metrics import RequestRecord, summarize
from simulator.metrics.results import Results
from simulator.scenario import parse_scenario
from simulator.workload import generate


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


def test_paired_median_sets_each_request_against_its_twin():
    def run(shift: int) -> Results:  # request i gets the TTFT of request i + shift
        n = 40
        records = [RequestRecord(i, "c", 0.1 * i, 100, 0.1 * i + 0.020 * (1 + (i + shift) % n / n) + 0.005 * np.arange(5),
                                 "ok") for i in range(n)]  # fmt: skip
        return Results(summarize(records), records, None, {})

    table = compare(run(0), run(1)).table.set_index(["metric", "stat"])["error"]
    assert table[("TTFT", "p50")] == pytest.approx(0.0, abs=1e-9)  # the same distribution
    assert table[("TTFT", "paired p50")] == pytest.approx(0.025 / 1.5, rel=0.05)  # each request 1/n x 20 ms late
    assert compare(results(), results(scale=1.08)).table.set_index(["metric", "stat"])["error"][
        ("E2E", "paired p50")] == pytest.approx(0.08)


def test_absolute_slack_forgives_sub_millisecond_misses():
    real, sim = results(), results(scale=1.02)  # TTFT 20 ms -> 20.4 ms, 2% off
    tol = Tolerances(mean=None, p50=0.01, p90=None, throughput=None, abs_ms=0.5)
    row = compare(real, sim, tol).table.query("metric == 'TTFT' and stat == 'p50'").iloc[0]
    assert row.ok  # 0.4 ms off
    row = compare(real, sim, Tolerances(p50=0.01, abs_ms=0.0)).table.query(
        "metric == 'TTFT' and stat == 'p50'").iloc[0]
    assert not row.ok


def test_the_noise_floor_widens_the_limit_where_real_runs_differ_more_than_the_tolerance(capsys):
    from calibration.validation.accuracy import print_comparison
    from calibration.validation.noise_floor import floor_summary, judge_against_floor

    real, sim = results(), results(scale=1.08)  # the simulator 8% slow
    tol = Tolerances(mean=None, p50=0.05, p90=None, throughput=None, abs_ms=0.0)
    plain = compare(real, sim, tol)
    assert not plain.passed
    noisy = judge_against_floor(plain, compare(real, results(scale=1.12), tol))  # real runs 12% apart
    row = noisy.table.query("metric == 'TTFT' and stat == 'p50'").iloc[0]
    assert row.real_vs_real == pytest.approx(0.12) and row.limit == pytest.approx(0.12)
    assert row.limit_set_by == "noise floor" and row.ok and noisy.passed
    assert "the noise floor dominates" in floor_summary(noisy)
    quiet = judge_against_floor(plain, compare(real, results(scale=1.01), tol))  # 1% apart: tolerance rules
    row = quiet.table.query("metric == 'TTFT' and stat == 'p50'").iloc[0]
    assert row.limit == pytest.approx(0.05) and row.limit_set_by == "tolerance" and not quiet.passed
    assert "the tolerance dominates" in floor_summary(quiet)
    assert noisy.table.query("stat == 'paired p50'")["ok"].isna().all()  # reported, never checked
    from rich.console import Console

    print_comparison(noisy, Console(width=200))
    out = capsys.readouterr().out
    assert "real vs real" in out and "noise floor" in out


def test_tolerance_overrides_parse_and_reject_nonsense():
    tol = Tolerances.parse(["p50=0.05", "p99=none", "throughput=0.03"])
    assert (tol.p50, tol.p99, tol.throughput) == (0.05, None, 0.03)
    for bad in ("p42=0.1", "p50", "p50=-1", "p50=abc"):
        with pytest.raises(ConfigError, match="--tolerance"):
            Tolerances.parse([bad])


# --- the real engine: its schedule replayed through the simulator -------------------------------

CPU = {"name": "cpu-host", "memory_gib": 16, "memory_bandwidth_gbps": 20, "tflops": {"fp32": 0.2, "fp16": 0.2},
       "interconnect_gbps": 10}


# A small mixture of experts (8 experts, top 2, a dense first layer) for the engine's MoE path.
TINY_MOE = {"name": "tiny-moe", "num_layers": 3, "hidden_size": 256, "num_heads": 4, "num_kv_heads": 2,
            "head_dim": 64, "intermediate_size": 512, "vocab_size": 8192, "max_context": 2048,
            "num_experts": 8, "num_experts_per_token": 2, "moe_intermediate_size": 256, "first_dense_layers": 1,
            "source": "test"}  # fmt: skip


def cpu_scenario(rate, n, policy="vllm", model="llama-20m", **scheduler):
    data = {
        "name": "tiny-cpu", "seed": 5, "model": model, "hardware": CPU,
        "deployment": {"weight_dtype": "fp32", "kv_dtype": "fp32"},
        "scheduler": {"policy": policy, "max_num_seqs": 32, **scheduler},
        "workload": {"arrival": {"process": "poisson", "rate": rate}, "num_requests": n,
                     "classes": [{"name": "c", "prompt_tokens": {"dist": "uniform", "low": 16, "high": 320},
                                  "output_tokens": {"dist": "uniform", "low": 8, "high": 48}}]},
    }
    return parse_scenario(data)


def engine_run(scenario, num_blocks=None, shared_prefixes=False):
    """The scenario's requests served in real time by the engine: (results, steps, settings, workload)."""
    from calibration.measure.replay import build_engine, engine_settings, replay, warm_up

    engine = build_engine(scenario, num_blocks=num_blocks)
    warm_up(engine)
    workload = generate(scenario.workload, seed=scenario.seed, max_context=engine.max_model_len)
    if shared_prefixes:
        workload = with_shared_prefixes(workload, scenario.scheduler.block_size)
    run = replay(engine, workload, seed=scenario.seed, progress=False)
    return run.results, run.steps, engine_settings(engine, 1), workload


def with_shared_prefixes(workload, block, shared_blocks=4, groups=3):
    """Every request names its prompt blocks: the first `shared_blocks` are those of its group
    (request id modulo `groups`), the rest its own. The replay gives named blocks the same tokens
    on the engine, the simulator shares them by name."""
    requests = []
    for r in workload.requests:
        n = -(-r.prompt_tokens // block)
        ids = [1000 * (r.request_id % groups) + j if j < shared_blocks else 10**6 + 1000 * r.request_id + j
               for j in range(n)]  # fmt: skip
        requests.append(dataclasses.replace(r, block_hashes=ids))
    return dataclasses.replace(workload, requests=requests, hash_block_tokens=block)


# Whatever the machine's load, the engine's recorded step times fed to the simulator must give the
# engine's schedule exactly: the same rows in every step, the same token times, the same
# preemptions. A tight KV cache (24 blocks of 16 tokens for up to 32 requests of up to 368 tokens)
# makes the engine preempt, so recompute is checked too.
# With shared prompt prefixes, vLLM V1's prefix cache (on by default) must find the same hits on
# both sides: the engine hashes token ids, the simulator the blocks' names.
@pytest.mark.parametrize("rate, scheduler, num_blocks, shared",
                         [(12.0, {"policy": "vllm"}, None, False), (12.0, {"policy": "vllm"}, 24, False),
                          (12.0, {"policy": "vllm"}, 24, True), (12.0, {"policy": "vllm-v0"}, 24, False),
                          (8.0, {"policy": "sarathi", "chunk_size": 96}, None, False),
                          (12.0, {"policy": "vllm", "model": TINY_MOE}, 24, False)],
                         ids=["vllm", "vllm-preempting", "vllm-shared-prefixes", "vllm-v0-preempting",
                              "chunked-prefill", "moe-vllm-preempting"])  # fmt: skip
def test_the_simulator_fed_the_engines_step_times_makes_the_engines_schedule(rate, scheduler, num_blocks, shared):
    pytest.importorskip("torch")
    from calibration.validation.schedule_check import check_schedule

    scenario = cpu_scenario(rate=rate, n=24, **scheduler)
    measured, steps, settings, workload = engine_run(scenario, num_blocks, shared)
    check = check_schedule(measured, steps, scenario, workload, settings, scenario.seed)
    assert check.identical, check.line()
    assert check.steps == check.steps_matched == len(steps) > 24
    assert check.requests == check.requests_matched == 24 and check.max_time_difference_s < 1e-9
    assert measured.summary.completed == 24
    if num_blocks:  # the engine did preempt, and the simulator preempted the same requests
        assert sum(r.num_preemptions for r in measured.records) > 0
    if shared:  # the engine found cached prefixes (and the simulator the same ones: same rows)
        assert sum(r.cached_prompt_tokens for r in measured.records) > 0
        assert settings["scheduler"]["enable_prefix_caching"] is True
    if scheduler["policy"] == "sarathi":  # prompts went in pieces of at most 96 tokens
        pieces = [n for row in steps.new_tokens for n in map(int, str(row).split())]
        assert max(pieces) <= 96 and max(steps.num_batched_tokens) <= 96


def test_the_schedule_check_names_the_first_step_that_differs():
    """A simulated step the engine did not run stops the check with both steps shown."""
    pytest.importorskip("torch")
    from calibration.validation.schedule_check import check_schedule

    scenario = cpu_scenario(rate=12.0, n=8)
    measured, steps, settings, workload = engine_run(scenario)
    other = settings | {"scheduler": settings["scheduler"] | {"max_num_seqs": 1}}  # another policy setting
    check = check_schedule(measured, steps, scenario, workload, other, scenario.seed)
    assert not check.identical and check.steps_matched < check.steps
    assert "the engine ran" in check.first_difference and "FAILED" in check.line()
    shifted = steps.assign(end=steps.end + 1e-6)  # token times 1 us later than the engine's
    late = check_schedule(measured, shifted, scenario, workload, settings, scenario.seed)
    assert late.steps_matched == late.steps and not late.identical and "token" in late.first_difference


def test_validate_on_the_engine_writes_its_report_with_the_engines_settings(tmp_path):
    """The machinery of `llmsim validate` (no accuracy asserted: that is benchmarks/bench_accuracy.py)."""
    torch = pytest.importorskip("torch")
    from calibration.validation.validate import validate

    threads = torch.get_num_threads()
    try:
        result = validate(cpu_scenario(rate=8.0, n=12), threads=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert result.measured.summary.completed == 12 == result.simulated.summary.completed
    assert result.schedule_check.identical, result.schedule_check.line()
    settings = result.settings  # the simulator ran with the engine's capacity and scheduler settings
    assert result.simulated.info["kv_blocks_per_replica"] == settings["num_blocks"]
    assert settings["scheduler"]["max_num_seqs"] == 32 and settings["host_overhead"]["steps"] > 0
    assert result.step_errors["all"]["steps"] == len(result.steps) == result.measured.info["steps"]
    out = result.save(tmp_path / "validate")
    assert (out / "plots" / "ttft_real_vs_sim.png").is_file() and (out / "comparison.csv").is_file()
    report = json.loads((out / "validation.json").read_text())
    assert report["settings"]["num_blocks"] == settings["num_blocks"]
    assert report["schedule_check"]["steps_matched"] == len(result.steps)


def test_engine_steps_become_a_measurements_file_calibrate_reads(tmp_path):
    from calibration.measure.measurements import load_measurements
    from calibration.measure.served_steps import steps_to_measurements

    rows = [("40", "0", 0.05), ("1 1", "40 12", 0.02), ("30 1", "0 41", 0.04)] * 6
    steps = pd.DataFrame(rows, columns=["new_tokens", "cached_tokens", "execute_s"])
    path = steps_to_measurements([steps], tmp_path / "served.csv", model="llama-20m", dtype="fp32", threads=1)
    m = load_measurements(path)
    assert list(m.regions[:3]) == ["prefill", "decode", "mixed"]
    assert list(m.frame.layout[:3]) == ["40+0", "1+40 1+12", "30+0 1+41"]
    assert m.times[1] == pytest.approx(0.02) and m.meta["threads"] == 1 and m.meta["model"] == "llama-20m"
    both = steps_to_measurements([steps], tmp_path / "both.csv", model="llama-20m", dtype="fp32", profile=path)
    assert len(load_measurements(both).frame) == 2 * len(steps)


@pytest.mark.parametrize("idle", ["sleep", "spin"])
def test_an_idle_engine_sleeps_or_spins_as_asked_and_the_schedule_still_replays(idle, monkeypatch):
    """Between sparse arrivals the engine waits: "sleep" blocks the core, "spin" keeps it busy (the
    conditions a profile's back-to-back steps ran in). Either way the simulator makes its schedule."""
    pytest.importorskip("torch")
    import calibration.measure.replay as replay_module
    from calibration.measure.replay import build_engine, engine_settings, replay, warm_up
    from calibration.validation.schedule_check import check_schedule

    sleeps = []
    real_sleep = replay_module.time.sleep
    monkeypatch.setattr(replay_module.time, "sleep", lambda s: (sleeps.append(s), real_sleep(s)))
    scenario = cpu_scenario(rate=20.0, n=4)
    engine = build_engine(scenario)
    warm_up(engine)
    workload = generate(scenario.workload, seed=scenario.seed, max_context=engine.max_model_len)
    # tiny requests 0.5 s apart: each is done a hundred times sooner, and the engine waits
    workload = dataclasses.replace(workload, requests=[
        dataclasses.replace(r, arrival=0.5 * i, prompt_tokens=16, output_tokens=2)
        for i, r in enumerate(workload.requests)])  # fmt: skip
    run = replay(engine, workload, seed=scenario.seed, progress=False, idle=idle)
    assert run.results.summary.completed == 4
    assert bool(sleeps) == (idle == "sleep")
    check = check_schedule(run.results, run.steps, scenario, workload, engine_settings(engine, 1), scenario.seed)
    assert check.identical, check.line()


def test_an_unknown_idle_mode_is_refused_by_name():
    pytest.importorskip("torch")
    from calibration.measure.replay import build_engine, replay

    scenario = cpu_scenario(rate=20.0, n=2)
    engine = build_engine(scenario)
    workload = generate(scenario.workload, seed=scenario.seed, max_context=engine.max_model_len)
    with pytest.raises(ConfigError, match="--idle: got 'nap'; allowed: sleep, spin"):
        replay(engine, workload, idle="nap")

"""Simulated vs measured: the error table, tolerances, and a short validation on the real engine."""

import json

import numpy as np
import pandas as pd
import pytest

from calibration.accuracy import Tolerances, compare
from simulator.errors import ConfigError
from simulator.metrics import RequestRecord, summarize
from simulator.results import Results
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


def test_tolerance_overrides_parse_and_reject_nonsense():
    tol = Tolerances.parse(["p50=0.05", "p99=none", "throughput=0.03"])
    assert (tol.p50, tol.p99, tol.throughput) == (0.05, None, 0.03)
    for bad in ("p42=0.1", "p50", "p50=-1", "p50=abc"):
        with pytest.raises(ConfigError, match="--tolerance"):
            Tolerances.parse([bad])


# --- a short validation on the real engine ------------------------------------------------------

CPU = {"name": "cpu-host", "memory_gib": 16, "memory_bandwidth_gbps": 20, "tflops": {"fp32": 0.2, "fp16": 0.2},
       "interconnect_gbps": 10}


def cpu_scenario(rate, n, calibration=None, policy="vllm", **scheduler):
    data = {
        "name": "tiny-cpu", "seed": 5, "model": "llama-20m", "hardware": CPU,
        "deployment": {"weight_dtype": "fp32", "kv_dtype": "fp32"},
        "scheduler": {"policy": policy, "max_num_seqs": 32, **scheduler},
        "workload": {"arrival": {"process": "poisson", "rate": rate}, "num_requests": n,
                     "classes": [{"name": "c", "prompt_tokens": {"dist": "uniform", "low": 16, "high": 320},
                                  "output_tokens": {"dist": "uniform", "low": 8, "high": 48}}]},
    }
    if calibration:
        data["execution"] = {"calibration": str(calibration)}
    return parse_scenario(data)


def calibrate_on_engine_steps(tmp_path, rate=8.0, **scheduler):
    """A calibration fitted to the engine's own step records of a run like the validated one, on
    this machine, now: the validation below then checks the sim-vs-real machinery (scheduler
    replay, capacity, host overhead, timestamps), not how busy the machine was when a shipped
    profile was measured nor how well the step-time model's form suits this CPU."""
    from calibration.fit import fit_coefficients, initial_guess
    from calibration.replay import build_engine, replay, warm_up
    from simulator.calibration_file import Calibration, FittedSection
    from simulator.fitted import Coefficients, MeasuredRange, StepFeatures, StepWork

    scenario = cpu_scenario(rate=rate, n=50, **scheduler)  # the validated load, other requests (seed 1, not 5)
    engine = build_engine(scenario)
    warm_up(engine)
    steps = replay(engine, generate(scenario.workload, seed=1, max_context=2048), progress=False).steps
    rows = [(list(map(int, n.split())), list(map(int, c.split()))) for n, c in zip(steps.new_tokens, steps.cached_tokens)]
    width = max(len(n) for n, _ in rows)
    new = np.array([n + [0] * (width - len(n)) for n, _ in rows])
    cached = np.array([c + [0] * (width - len(c)) for _, c in rows])
    f, times = StepFeatures.of(new, cached), steps.execute_s.to_numpy()
    work = StepWork.from_spec(scenario.model_spec(), "fp32", "fp32")
    x = fit_coefficients(f, times, work, initial_guess(f, times, work, {}))
    measured = MeasuredRange(max_batched_tokens=int(f.tokens.max()), max_num_seqs=int(f.seqs.max()),
                             max_context=int(f.max_context.max()), max_kv_tokens=int(f.kv_tokens.max()))
    cal = Calibration(model="llama-20m", hardware="cpu-host", dtype="fp32", provenance="measured",
                      fitted=FittedSection(coefficients=Coefficients.from_vector(x), work=work, measured_range=measured))
    path = tmp_path / "llama-20m-here.yaml"
    path.write_text(cal.to_yaml())
    return path


# Chunked prefill takes more steps per prompt: a lower rate keeps it as far from saturation, where
# a moment of load from another process would be amplified into a large latency error.
@pytest.mark.parametrize("rate, scheduler", [(8.0, {"policy": "vllm"}), (4.0, {"policy": "sarathi", "chunk_size": 96})],
                         ids=["vllm", "chunked-prefill"])
def test_short_validation_on_the_engine(tmp_path, rate, scheduler):
    torch = pytest.importorskip("torch")
    from calibration.validate import validate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steadier timings on a shared machine
    try:
        calibration = calibrate_on_engine_steps(tmp_path, rate, **scheduler)
        result = validate(cpu_scenario(rate=rate, n=40, calibration=calibration, **scheduler), threads=1,
                          progress=False,
                          tolerances=Tolerances(mean=None, p50=0.25, p90=None, throughput=None, abs_ms=1.0))
    finally:
        torch.set_num_threads(threads)
    table = result.comparison.table.set_index(["metric", "stat"])
    print(table)
    assert result.measured.summary.completed == 40 == result.simulated.summary.completed
    if scheduler["policy"] == "sarathi":  # prompts went in pieces of at most 96 tokens
        pieces = [n for row in result.steps.new_tokens for n in map(int, str(row).split())]
        assert max(pieces) <= 96 and max(result.steps.num_batched_tokens) <= 96
        assert any(int(c) > 0 and int(n) > 1 for row_n, row_c in zip(result.steps.new_tokens, result.steps.cached_tokens)
                   for n, c in zip(str(row_n).split(), str(row_c).split()))
    for metric in ("TTFT", "TPOT", "E2E"):
        assert abs(table.loc[(metric, "p50"), "error"]) <= 0.25, metric
    # the simulator ran with the engine's capacity and scheduler settings, and says so
    settings = result.settings
    assert result.simulated.info["kv_blocks_per_replica"] == settings["num_blocks"]
    assert settings["scheduler"]["max_num_seqs"] == 32 and settings["host_overhead"]["steps"] > 0
    assert result.step_errors["all"]["steps"] == len(result.steps) == result.measured.info["steps"]
    out = result.save(tmp_path / "validate")
    assert (out / "plots" / "ttft_real_vs_sim.png").is_file() and (out / "comparison.csv").is_file()
    assert json.loads((out / "validation.json").read_text())["settings"]["num_blocks"] == settings["num_blocks"]


def test_engine_steps_become_a_measurements_file_calibrate_reads(tmp_path):
    from calibration.measurements import load_measurements
    from calibration.served_steps import steps_to_measurements

    rows = [("40", "0", 0.05), ("1 1", "40 12", 0.02), ("30 1", "0 41", 0.04)] * 6
    steps = pd.DataFrame(rows, columns=["new_tokens", "cached_tokens", "execute_s"])
    path = steps_to_measurements([steps], tmp_path / "served.csv", model="llama-20m", dtype="fp32", threads=1)
    m = load_measurements(path)
    assert list(m.regions[:3]) == ["prefill", "decode", "mixed"]
    assert list(m.frame.layout[:3]) == ["40+0", "1+40 1+12", "30+0 1+41"]
    assert m.times[1] == pytest.approx(0.02) and m.meta["threads"] == 1 and m.meta["model"] == "llama-20m"
    both = steps_to_measurements([steps], tmp_path / "both.csv", model="llama-20m", dtype="fp32", profile=path)
    assert len(load_measurements(both).frame) == 2 * len(steps)

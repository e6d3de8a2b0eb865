"""`llmsim calibrate --from-bench`: known step costs are recovered from request-level measurements.

The "server" is the simulator itself running a known FittedModel: its requests.csv is exactly
what `llmsim bench` writes for a real server whose steps cost what the model says.
"""

import numpy as np
import pandas as pd
import pytest

from calibration.fitting.from_bench import (
    calibrate_from_bench,
    observations,
    read_bench,
    resolve_hardware,
    roofline_prior,
)
from simulator.common.errors import ConfigError
from simulator.execution.calibration_file import Calibration, FittedSection, load_calibration
from simulator.execution.fitted import FittedModel, MeasuredRange, StepWork
from simulator.scenario import parse_scenario, run
from simulator.spec import get_hardware, get_model

MODEL, HARDWARE = get_model("llama-3-8b"), get_hardware("a10g")
WORK = StepWork.from_spec(MODEL, "fp16", "fp16")
WIDE = MeasuredRange(max_batched_tokens=8192, max_num_seqs=256, max_context=8192, max_kv_tokens=10**6)


def truth():
    prior = roofline_prior(MODEL, HARDWARE, "fp16", "fp16")
    return prior.model_copy(update={
        "overhead_s": 2e-3, "overhead_per_sequence_s": 5e-5, "weight_bandwidth": 0.9 * prior.weight_bandwidth,
        "matmul_flops": 0.8 * prior.matmul_flops,
        "decode_attention_s_per_token": 1.3 * prior.decode_attention_s_per_token,
        "prefill_attention_s_per_pair": 1.2 * prior.prefill_attention_s_per_pair,
    })


@pytest.fixture(scope="module", params=["vllm", "vllm-v0"])
def bench_dirs(request, tmp_path_factory):
    """Four 'bench' runs of a server with known costs running vLLM V1 (mixed steps under one
    token budget) or prefill-first vllm-v0: a low-rate one (idle prefills of every length), two
    busier ones with short prompts and one with long prompts (decode batches)."""
    policy = request.param
    root = tmp_path_factory.mktemp(f"bench-{policy}")
    cal = Calibration(model=MODEL.name, hardware=HARDWARE.name, dtype="fp16", provenance="measured",
                      fitted=FittedSection(coefficients=truth(), work=WORK, measured_range=WIDE))
    (root / "truth.yaml").write_text(cal.to_yaml())
    dirs = []
    for rate, n, low, high in [(0.1, 40, 32, 2000), (3.0, 150, 32, 200), (6.0, 200, 32, 200), (1.0, 120, 1000, 1900)]:
        scenario = parse_scenario({
            "name": "server", "model": MODEL.name, "hardware": HARDWARE.name,
            "scheduler": {"policy": policy},
            "execution": {"calibration": str(root / "truth.yaml")},
            "workload": {
                "arrival": {"process": "poisson", "rate": rate}, "num_requests": n,
                "classes": [{"name": "c", "prompt_tokens": {"dist": "uniform", "low": low, "high": high},
                             "output_tokens": {"dist": "uniform", "low": 16, "high": 300}}],
            },
        })
        out = run(scenario, seed=1).save(root / f"rate{rate}-{low}")
        dirs.append(out)
    return policy, dirs


def test_recovers_step_times_within_the_measured_range(bench_dirs, tmp_path):
    policy, bench_dirs = bench_dirs
    cal, fit = calibrate_from_bench(bench_dirs, model=MODEL, hardware=HARDWARE, dtype="fp16", policy=policy)
    real = FittedModel(truth(), WORK, WIDE)
    fitted = FittedModel(cal.fitted.coefficients, cal.fitted.work, cal.fitted.measured_range)
    for new, cached in [([128], [0]), ([1024], [0]), ([1], [500]), ([1] * 8, [500] * 8), ([1] * 32, [1000] * 32),
                        ([1] * 60, [300] * 60)]:
        new, cached = np.array(new), np.array(cached)
        assert fitted.step_time(new, cached) == pytest.approx(real.step_time(new, cached), rel=0.05), (new, cached)
    assert fit.error_summary()["ttft"]["median_abs_pct"] < 2
    assert fit.error_summary()["decode"]["median_abs_pct"] < 2
    assert fit.ttft_offset_s < 1e-3  # the simulator has no HTTP time
    assert fit.relative_se and all(v <= 0.5 for v in fit.relative_se.values())  # the rest were fixed

    # the file says what could not be identified and was fixed from the roofline
    fixed = cal.source["fixed_from_roofline"]
    assert "knee_sharpness" in fixed and "decode_padding_s_per_token" in fixed
    assert "matmul_flops" not in fixed and "overhead_s" not in fixed
    path = tmp_path / "cal.yaml"
    path.write_text(cal.to_yaml())
    assert load_calibration(path).fitted.coefficients == cal.fitted.coefficients


def test_idle_arrivals_and_decode_batches_are_read_from_the_timeline(bench_dirs):
    policy, bench_dirs = bench_dirs
    obs = observations(read_bench(bench_dirs[:1]), policy)
    # at 0.1 requests/s most requests find the server idle; every one with 2+ tokens has a span
    assert obs.info["ttft_observations"] >= 15
    assert obs.info["decode_observations"] == 40
    assert obs.info["decode_batch"][0] == pytest.approx(1.0)
    busy = observations(read_bench(bench_dirs[2:3]), policy)
    assert busy.info["decode_batch"][1] > 10
    assert (busy.info["mixed_steps"] > 0) == (policy == "vllm")  # V1 computes prompts inside decode steps


def test_a_run_without_idle_arrivals_is_refused_with_advice(bench_dirs, tmp_path):
    _, bench_dirs = bench_dirs
    with pytest.raises(ConfigError, match="low-rate run"):
        calibrate_from_bench(bench_dirs[2:3], model=MODEL, hardware=HARDWARE)
    with pytest.raises(ConfigError, match="requests.csv"):
        calibrate_from_bench([tmp_path], model=MODEL, hardware=HARDWARE)


def test_cli_writes_a_calibration_a_scenario_can_use(bench_dirs, tmp_path, capsys):
    from simulator.cli import main

    policy, bench_dirs = bench_dirs
    out = tmp_path / "server.yaml"
    code = main(["calibrate", "--from-bench", *map(str, bench_dirs), "--model", MODEL.name,
                 "--hardware", HARDWARE.name, "--policy", policy, "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "fixed (not identifiable from these runs): physical prior" in printed
    assert "per-step host overhead" in printed and "±" in printed
    scenario = parse_scenario({
        "name": "planned", "model": MODEL.name, "hardware": HARDWARE.name, "execution": {"calibration": str(out)},
        "workload": {"arrival": {"process": "poisson", "rate": 1.0}, "num_requests": 20,
                     "classes": [{"name": "c", "prompt_tokens": {"dist": "constant", "value": 500},
                                  "output_tokens": {"dist": "constant", "value": 50}}]},
    })
    assert run(scenario).info["execution"]["provenance"] == "measured"
    assert main(["calibrate", "--from-bench", str(bench_dirs[0]), "--model", MODEL.name]) == 2
    assert "--hardware" in capsys.readouterr().err


def test_v1_prices_chunked_prefills_and_mixed_steps_under_one_budget():
    frame = pd.DataFrame({  # request 0 alone (5000-token prompt), then 1 decoding while 2's prompt runs
        "arrival": [0.0, 10.0, 10.5], "first_token": [1.0, 10.2, 10.9], "finish": [2.0, 12.0, 12.5],
        "prompt_tokens": [5000, 100, 3000], "output_tokens": [10, 40, 20], "status": ["ok"] * 3,
    })
    obs = observations([frame], "vllm", 2048)
    shapes = {tuple(zip(n[n > 0].astype(int).tolist(), c[n > 0].astype(int).tolist())): k
              for k, (n, c) in enumerate(zip(obs.new, obs.cached))}  # fmt: skip
    ttft = obs.counts[[0]].toarray().ravel()
    assert {s for s, k in shapes.items() if ttft[k]} == {((2048, 0),), ((2048, 2048),), ((904, 4096),)}
    span = obs.counts[[int(np.flatnonzero(obs.kinds == "decode")[1])]].toarray().ravel()  # request 1's
    mixed = [s for s, k in shapes.items() if span[k] and len(s) > 1 and s[-1][0] > 1]
    assert sorted(s[-1] for s in mixed) == [(954, 2046), (2046, 0)]  # 3000 tokens; 2 decodes go first
    assert span.sum() == pytest.approx(39)  # the span is still its 39 steps
    legacy = observations([frame], "vllm-v0")
    assert legacy.info["mixed_steps"] == 0 and obs.info["mixed_steps"] == 2


def test_hardware_may_be_cpu_a_file_or_an_inline_spec(tmp_path):
    assert resolve_hardware("cpu").name == "cpu-host" and resolve_hardware("a10g").name == "a10g"
    inline = "{name: my-box, memory_gib: 8, memory_bandwidth_gbps: 20, tflops: {fp32: 0.1}, interconnect_gbps: 1}"
    assert resolve_hardware(inline).memory_bandwidth == pytest.approx(20e9)
    path = tmp_path / "hw.yaml"
    path.write_text(inline)
    assert resolve_hardware(str(path)).name == "my-box"
    with pytest.raises(ConfigError, match="memory_gib"):
        resolve_hardware("{name: x, memory_bandwidth_gbps: 20, tflops: {fp32: 0.1}, interconnect_gbps: 1}")
    with pytest.raises(ConfigError, match="--policy"):
        observations([], "sarathi")


def test_a_rate_that_runs_to_its_bound_is_fixed_at_its_prior(bench_dirs):
    from calibration.fitting.bench_fit import fit

    policy, dirs = bench_dirs
    obs = observations(read_bench(dirs[1:3]), policy)
    obs.durations = obs.counts @ (0.02 + 1e-5 * obs.features.tokens)  # steps that read no weights at all
    prior = roofline_prior(MODEL, HARDWARE, "fp16", "fp16")
    slow = prior.model_copy(update={"weight_bandwidth": prior.weight_bandwidth / 1000})
    result = fit(obs, WORK, slow)
    assert "ran to 100x its physical prior" in result.fixed["weight_bandwidth"]
    assert result.coefficients.weight_bandwidth == slow.weight_bandwidth

"""`llmsim calibrate --from-bench`: known step costs are recovered from request-level measurements.

The "server" is the simulator itself running a known FittedModel: its requests.csv is exactly
what `llmsim bench` writes for a real server whose steps cost what the model says.
"""

import numpy as np
import pytest

from calibration.fitting.from_bench import calibrate_from_bench, observations, read_bench, roofline_prior
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


@pytest.fixture(scope="module")
def bench_dirs(tmp_path_factory):
    """Four 'bench' runs of a server with known costs: a low-rate one (idle prefills of every
    length), two busier ones with short prompts and one with long prompts (decode batches)."""
    root = tmp_path_factory.mktemp("bench")
    cal = Calibration(model=MODEL.name, hardware=HARDWARE.name, dtype="fp16", provenance="measured",
                      fitted=FittedSection(coefficients=truth(), work=WORK, measured_range=WIDE))
    (root / "truth.yaml").write_text(cal.to_yaml())
    dirs = []
    for rate, n, low, high in [(0.1, 40, 32, 2000), (3.0, 150, 32, 200), (6.0, 200, 32, 200), (1.0, 120, 1000, 1900)]:
        scenario = parse_scenario({
            "name": "server", "model": MODEL.name, "hardware": HARDWARE.name,
            "scheduler": {"policy": "vllm-v0"},  # a prompt is one prefill step, as the fit assumes
            "execution": {"calibration": str(root / "truth.yaml")},
            "workload": {
                "arrival": {"process": "poisson", "rate": rate}, "num_requests": n,
                "classes": [{"name": "c", "prompt_tokens": {"dist": "uniform", "low": low, "high": high},
                             "output_tokens": {"dist": "uniform", "low": 16, "high": 300}}],
            },
        })
        out = run(scenario, seed=1).save(root / f"rate{rate}-{low}")
        dirs.append(out)
    return dirs


def test_recovers_step_times_within_the_measured_range(bench_dirs, tmp_path):
    cal, fit = calibrate_from_bench(bench_dirs, model=MODEL, hardware=HARDWARE, dtype="fp16")
    real = FittedModel(truth(), WORK, WIDE)
    fitted = FittedModel(cal.fitted.coefficients, cal.fitted.work, cal.fitted.measured_range)
    for new, cached in [([128], [0]), ([1024], [0]), ([1], [500]), ([1] * 8, [500] * 8), ([1] * 32, [1000] * 32),
                        ([1] * 60, [300] * 60)]:
        new, cached = np.array(new), np.array(cached)
        assert fitted.step_time(new, cached) == pytest.approx(real.step_time(new, cached), rel=0.05), (new, cached)
    assert fit.error_summary()["ttft"]["median_abs_pct"] < 2
    assert fit.error_summary()["decode"]["median_abs_pct"] < 2
    assert fit.ttft_offset_s < 1e-3  # the simulator has no HTTP time

    # the file says what could not be identified and was fixed from the roofline
    fixed = cal.source["fixed_from_roofline"]
    assert "knee_sharpness" in fixed and "decode_padding_s_per_token" in fixed
    assert "matmul_flops" not in fixed and "overhead_s" not in fixed
    path = tmp_path / "cal.yaml"
    path.write_text(cal.to_yaml())
    assert load_calibration(path).fitted.coefficients == cal.fitted.coefficients


def test_idle_arrivals_and_decode_batches_are_read_from_the_timeline(bench_dirs):
    obs = observations(read_bench(bench_dirs[:1]))
    # at 0.1 requests/s most requests find the server idle; every one with 2+ tokens has a span
    assert obs.info["ttft_observations"] >= 15
    assert obs.info["decode_observations"] == 40
    assert obs.info["decode_batch"][0] == pytest.approx(1.0)
    busy = observations(read_bench(bench_dirs[2:3]))
    assert busy.info["decode_batch"][1] > 10


def test_a_run_without_idle_arrivals_is_refused_with_advice(bench_dirs, tmp_path):
    with pytest.raises(ConfigError, match="low-rate run"):
        calibrate_from_bench(bench_dirs[2:3], model=MODEL, hardware=HARDWARE)
    with pytest.raises(ConfigError, match="requests.csv"):
        calibrate_from_bench([tmp_path], model=MODEL, hardware=HARDWARE)


def test_cli_writes_a_calibration_a_scenario_can_use(bench_dirs, tmp_path, capsys):
    from simulator.cli import main

    out = tmp_path / "server.yaml"
    code = main(["calibrate", "--from-bench", *map(str, bench_dirs), "--model", MODEL.name,
                 "--hardware", HARDWARE.name, "--out", str(out)])
    assert code == 0
    assert "fixed: roofline" in capsys.readouterr().out
    scenario = parse_scenario({
        "name": "planned", "model": MODEL.name, "hardware": HARDWARE.name, "execution": {"calibration": str(out)},
        "workload": {"arrival": {"process": "poisson", "rate": 1.0}, "num_requests": 20,
                     "classes": [{"name": "c", "prompt_tokens": {"dist": "constant", "value": 500},
                                  "output_tokens": {"dist": "constant", "value": 50}}]},
    })
    assert run(scenario).info["execution"]["provenance"] == "measured"
    assert main(["calibrate", "--from-bench", str(bench_dirs[0]), "--model", MODEL.name]) == 2
    assert "--hardware" in capsys.readouterr().err

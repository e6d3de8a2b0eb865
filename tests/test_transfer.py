"""Transfer: a measured fit's efficiencies, applied to another GPU's datasheet peaks by the roofline."""

import numpy as np
import pytest

from calibration.fitting.transfer import effective_rates, efficiencies, transfer
from simulator.cli import main
from simulator.common.errors import ConfigError
from simulator.execution import RooflineEfficiency, RooflineModel, StepOverhead
from simulator.execution.calibration_file import REPO_ROOT, Calibration, FittedSection, load_calibration
from simulator.execution.fitted import Coefficients, MeasuredRange, StepWork
from simulator.scenario import execution_model, parse_scenario
from simulator.spec import get_hardware, get_model

WORK = StepWork.from_spec(get_model("llama-100m"), "fp32", "fp32")
PEAK_BW, PEAK_FLOPS = 40e9, 200e9


def measured(bandwidth=20e9, flops=100e9, per_token_s=0.0, peaks=True) -> Calibration:
    coefficients = Coefficients(
        overhead_s=1e-3,
        overhead_per_sequence_s=1e-5,
        overhead_per_token_s=per_token_s,
        weight_bandwidth=bandwidth,
        matmul_flops=flops,
        prefill_attention_s_per_pair=WORK.attention_flops_per_pair / 50e9,
        decode_attention_s_per_token=WORK.kv_bytes_per_token / 10e9,
        decode_padding_s_per_token=0.0,
        knee_sharpness=4.0,
    )
    rng = MeasuredRange(max_batched_tokens=2048, max_num_seqs=64, max_context=2048, max_kv_tokens=65536)
    source = {"measured_peaks": {"memory_bandwidth": PEAK_BW, "matmul_flops": PEAK_FLOPS}} if peaks else {}
    return Calibration(
        model="llama-100m",
        hardware="cpu-host",
        device="test cpu",
        dtype="fp32",
        provenance="measured",
        fitted=FittedSection(coefficients=coefficients, work=WORK, measured_range=rng),
        expected_error="test",
        source=source,
    )


def test_efficiencies_are_achieved_over_measured_peaks():
    eff, detail = efficiencies(measured())
    assert eff.memory_bandwidth == pytest.approx(0.5)
    assert eff.linear_compute == pytest.approx(0.5)
    assert eff.attention_compute == pytest.approx(0.25)
    assert detail["achieved"]["weight_bandwidth"] == pytest.approx(20e9)


def test_per_token_overhead_counts_as_compute():
    # the same per-token cost split two ways gives the same effective rate
    flops_per_token = WORK.layer_flops_per_token
    a = effective_rates(measured(flops=100e9).fitted.coefficients, WORK)["linear_flops"]
    split = measured(flops=200e9, per_token_s=flops_per_token / 200e9).fitted.coefficients
    assert effective_rates(split, WORK)["linear_flops"] == pytest.approx(a)


def test_fractions_above_peak_are_capped():
    eff, detail = efficiencies(measured(bandwidth=60e9))
    assert eff.memory_bandwidth == 1.0
    assert detail["fractions_before_cap"]["memory_bandwidth"] == pytest.approx(1.5)


def test_transferred_calibration_predicts_like_the_roofline_with_those_efficiencies(tmp_path):
    moved = transfer(measured(), "a100-80gb", target_model="llama-3-8b", source_path="x.yaml")
    assert moved.provenance == "transferred" and moved.hardware == "a100-80gb" and moved.model == "llama-3-8b"
    assert "factor" in moved.expected_error and moved.source["from_device"] == "test cpu"
    path = tmp_path / "moved.yaml"
    path.write_text(moved.to_yaml())
    scenario = parse_scenario(
        {
            "model": "llama-3-8b",
            "hardware": "a100-80gb",
            "deployment": {"weight_dtype": "bf16", "kv_dtype": "bf16"},
            "execution": {"calibration": str(path)},
            "workload": {
                "arrival": {"process": "poisson", "rate": 1},
                "num_requests": 3,
                "classes": [
                    {
                        "name": "c",
                        "prompt_tokens": {"dist": "constant", "value": 100},
                        "output_tokens": {"dist": "constant", "value": 10},
                    }
                ],
            },
        }
    )
    model = execution_model(scenario)
    assert model.provenance == "transferred" and model.describe()["provenance"] == "transferred"
    reference = RooflineModel(
        get_model("llama-3-8b"),
        get_hardware("a100-80gb"),
        weight_dtype="bf16",
        kv_dtype="bf16",
        efficiency=RooflineEfficiency(memory_bandwidth=0.5, linear_compute=0.5, attention_compute=0.25),
        overhead=StepOverhead(),
    )
    for new, cached in (([1] * 32, [1000] * 32), ([2048], [0])):
        assert model.step_time(np.array(new), np.array(cached)) == pytest.approx(
            reference.step_time(np.array(new), np.array(cached))
        )


def test_transfer_needs_measured_peaks_and_a_measured_fit():
    with pytest.raises(ConfigError, match="measured peaks"):
        efficiencies(measured(peaks=False))
    roofline = load_calibration(REPO_ROOT / "calibration/profiles/llama-3-8b-a100-80gb-bf16.yaml")
    with pytest.raises(ConfigError, match="needs a measured calibration"):
        transfer(roofline, "h100-sxm")
    with pytest.raises(ConfigError, match="unknown hardware"):
        transfer(measured(), "a100-90gb")


def test_cli_transfers_a_shipped_cpu_calibration(tmp_path, capsys):
    out = tmp_path / "llama-3-8b-h100.yaml"
    source = REPO_ROOT / "calibration/profiles/llama-100m-cpu-fp32.yaml"
    argv = [
        "calibrate",
        str(source),
        "--transfer-to",
        "h100-sxm",
        "--target-model",
        "llama-3-8b",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert "efficiencies carried to h100-sxm" in capsys.readouterr().out
    cal = load_calibration(out)
    assert cal.provenance == "transferred" and cal.dtype == "bf16"
    assert 0 < cal.roofline.efficiency.memory_bandwidth <= 1
    assert main(["calibrate", str(source), "--out", str(out)]) == 2  # a YAML input needs --transfer-to
    assert "only an input with --transfer-to" in capsys.readouterr().err

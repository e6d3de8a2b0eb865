"""The fitted step model prices mixture-of-experts steps (distinct experts touched, their reads
and compute, a per-expert overhead), recovers those terms from measurements, and leaves dense
calibrations exactly as they were."""

import json

import numpy as np
import pandas as pd
import pytest

from backend.model import Llama
from calibration.fitting.fit import calibrate
from calibration.measure.measurements import describe_step, encode_layout, meta_path
from calibration.measure.step_grid import FULL, sweep_points, with_routing_range
from simulator.execution.calibration_file import REPO_ROOT, fitted_model, load_calibration
from simulator.execution.fitted import (
    Coefficients,
    FittedModel,
    MeasuredRange,
    StepFeatures,
    StepWork,
    predict,
)
from simulator.spec import get_model

MOE = get_model("moe-60m")
WORK = StepWork.from_spec(MOE, "fp32", "fp32", matvec_max_tokens=4, small_matmul_max_tokens=32)
TRUE = Coefficients(
    overhead_s=1e-3, overhead_per_sequence_s=5e-5, overhead_per_token_s=0.0, weight_bandwidth=15e9,
    matmul_flops=60e9, prefill_attention_s_per_pair=WORK.attention_flops_per_pair / 30e9,
    decode_attention_s_per_token=WORK.kv_bytes_per_token / 10e9, decode_padding_s_per_token=0.0,
    matvec_read_factor=0.8, knee_sharpness=4.0, small_matmul_flops_factor=0.7, moe_overhead_per_expert_s=4e-5,
)  # fmt: skip
WIDE = MeasuredRange(max_batched_tokens=4096, max_num_seqs=256, max_context=4096, max_kv_tokens=10**6)


def test_expected_experts_climbs_from_k_to_all_experts():
    got = WORK.expected_experts(np.array([0, 1, 2, 4, 40]))
    np.testing.assert_allclose(got, [0.0, 2.0, 3.5, 8 * (1 - 0.75**4), 8 * (1 - 0.75**40)])
    assert StepWork.from_spec(get_model("llama-20m"), "fp32", "fp32").expected_experts(7) == 0.0


def test_moe_work_counts_what_the_backend_model_holds():
    model = Llama(MOE, "fp32", "meta")
    experts = sum(p.numel() for n, p in model.named_parameters() if ".w_gate_up" in n or ".w_down" in n)
    linear = sum(p.numel() for n, p in model.named_parameters() if n.startswith("layers.") and n.endswith(
        ("proj.weight", "router.weight")))  # fmt: skip
    assert WORK.expert_weight_bytes * MOE.num_experts == experts * 4
    assert WORK.layer_weight_bytes == linear * 4  # attention and routers: what every token passes
    assert WORK.expert_flops_per_token == 2 * experts / MOE.num_experts
    assert (WORK.moe_layers, WORK.num_experts, WORK.experts_per_token) == (4, 8, 2)


def test_a_step_costs_more_the_more_experts_its_tokens_reach():
    model = FittedModel(TRUE, WORK, WIDE)
    times = [model.step_time(np.ones(b, int), np.full(b, 100)) for b in (1, 2, 4, 8, 16, 32)]
    assert times == sorted(times)
    # From 1 to 2 decodes the step reaches 1.5 more experts a layer (their reads and overhead) and
    # one more sequence.
    expert_s = WORK.expert_weight_bytes * TRUE.matvec_read_factor / TRUE.weight_bandwidth
    per_expert = expert_s + WORK.moe_layers * TRUE.moe_overhead_per_expert_s
    assert times[1] - times[0] == pytest.approx(1.5 * per_expert + TRUE.overhead_per_sequence_s, rel=0.05)


def synthetic_moe_csv(path, noise=0.01, seed=0):
    plan = with_routing_range(FULL, MOE.num_experts, MOE.num_experts_per_token)
    points = sweep_points(plan, max_tokens=2048, max_batch=128, max_context=2048, kv_blocks=4096, block_size=16)
    rng = np.random.default_rng(seed)
    rows = []
    for p in points:
        new, cached = np.array([[n for n, _ in p.rows]]), np.array([[c for _, c in p.rows]])
        t = predict(TRUE.vector(), WORK, StepFeatures.of(new, cached))[0] * np.exp(rng.normal(0, noise))
        tokens = int(new.sum())
        rows.append({"region": p.region, "layout": encode_layout(list(p.rows)), **describe_step(list(p.rows)),
                     "median_s": t, "experts_touched": float(WORK.expected_experts(tokens)) * 0.97,
                     "expected_experts": float(WORK.expected_experts(tokens))})  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)
    meta = {"model": "moe-60m", "dtype": "fp32", "device_type": "cpu", "device": "synthetic",
            "matvec_max_tokens": 4, "small_matmul_max_tokens": 32,
            "measured_memory_bandwidth": 20e9, "measured_matmul_flops": 80e9}  # fmt: skip
    meta_path(path).write_text(json.dumps(meta))
    return path


def test_the_fit_recovers_the_expert_terms_and_reports_routing(tmp_path):
    plan = with_routing_range(FULL, 8, 2)
    assert set(range(1, 12)) <= set(plan.decode_batches) and set(range(2, 12)) <= set(plan.prefill_new)
    cal, *_ = calibrate(synthetic_moe_csv(tmp_path / "moe.csv"), None, plot=False)
    got = cal.fitted.coefficients
    assert cal.fitted.work == WORK
    assert got.weight_bandwidth == pytest.approx(TRUE.weight_bandwidth, rel=0.1)

    # A touched expert's overhead and its weight read both grow with the experts reached; the
    # data fixes their sum (per expert and MoE layer, at decode's matrix-vector rate).
    def per_expert(c):
        return c.moe_overhead_per_expert_s * WORK.moe_layers + (
            WORK.expert_weight_bytes * c.matvec_read_factor / c.weight_bandwidth)

    assert per_expert(got) == pytest.approx(per_expert(TRUE), rel=0.03)
    assert cal.fitted.fit_error["heldout_mape_percent"]["all"] < 3.0
    routing = cal.fitted.fit_error["routing"]
    assert routing["measured_over_expected_mean"] == pytest.approx(0.97)
    assert (routing["experts"], routing["experts_per_token"]) == (8, 2)


# Step times of the shipped dense calibrations before the MoE terms existed: unchanged to the last bit.
SHIPPED = {
    "llama-100m-cpu-fp32": [0.009244342255515197, 0.3057115261012943, 0.08095141227380741, 0.09329217443357626,
                            1.717958385644061, 0.010389906099029303],
    "llama-20m-cpu-fp32": [0.002504039238404565, 0.10273046732616438, 0.028572022933766733, 0.03191884351550349,
                           0.6656534559906616, 0.0028388406384279767],
}  # fmt: skip
STEPS = [([1], [100]), ([512], [0]), ([1] * 32, [1000] * 32), ([128, 1, 1, 1], [256, 900, 30, 2047]), ([2048], [0]),
         ([3], [0])]  # fmt: skip


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_dense_calibrations_predict_exactly_as_before(name):
    cal = load_calibration(REPO_ROOT / "calibration" / "profiles" / f"{name}.yaml")
    assert cal.fitted.work.moe_layers == 0 and cal.fitted.coefficients.moe_overhead_per_expert_s == 0.0
    model = fitted_model(cal)
    assert [model.step_time(np.array(n), np.array(c)) for n, c in STEPS] == SHIPPED[name]

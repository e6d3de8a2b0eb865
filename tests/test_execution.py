import json

import numpy as np
import pytest

from simulator.execution import ExecutionModel, RooflineEfficiency, RooflineModel, StepOverhead
from simulator.spec import HardwareSpec, ModelSpec, get_hardware, get_model

# A toy model and chip with round numbers, so a step can be worked out by hand.
TOY = ModelSpec(
    "toy",
    num_layers=2,
    hidden_size=64,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=128,
    vocab_size=100,
    max_context=4096,
    head_dim=16,
)
CHIP = HardwareSpec(
    "chip",
    memory_bytes=1e10,
    memory_bandwidth=1e9,
    flops={"fp16": 1e12},
    interconnect_bandwidth=1e9,
    interconnect_latency=1e-6,
)
EXACT = RooflineEfficiency(memory_bandwidth=1.0, linear_compute=1.0, attention_compute=1.0, interconnect=1.0)
OVERHEAD = StepOverhead(constant_s=1e-3, per_sequence_s=1e-4, per_token_s=1e-6)

# Toy numbers: per layer q, k, v, o = 4096 + 2048 + 2048 + 4096 params, MLP 3 x 64 x 128 = 24576.
TOY_LAYER_PARAMS = 4096 + 2048 + 2048 + 4096 + 24576
TOY_HEAD_PARAMS = 100 * 64
TOY_KV_BYTES = 2 * 2 * 2 * 16 * 2  # K and V x layers x kv heads x head_dim x fp16 = 256
TOY_ATTN_FLOPS = 4 * 2 * 4 * 16  # per query-key pair: QK^T and PV, 2 FLOPs each, all heads and layers


def toy(**kwargs):
    return RooflineModel(TOY, CHIP, efficiency=EXACT, overhead=OVERHEAD, **kwargs)


def test_hand_computed_mixed_step():
    # One decode row (20 cached) and one 10-token prefill chunk.
    new, cached = np.array([1, 10]), np.array([20, 0])
    overhead = 1e-3 + 2 * 1e-4 + 11 * 1e-6
    weights = 2 * TOY_LAYER_PARAMS * 2 / 1e9  # memory-bound: 11 tokens are far below the ridge
    head = TOY_HEAD_PARAMS * 2 / 1e9
    decode_attn = max(21 * TOY_KV_BYTES / 1e9, TOY_ATTN_FLOPS * 1 * 21 / 1e12)
    prefill_attn = max(10 * TOY_KV_BYTES / 1e9, TOY_ATTN_FLOPS * 10 * 5.5 / 1e12)
    expected = overhead + weights + head + decode_attn + prefill_attn
    assert toy().step_time(new, cached) == pytest.approx(expected, rel=1e-12)


def test_hand_computed_compute_bound_prefill():
    new, cached = np.array([2000]), np.array([0])
    breakdown = toy().roofline_breakdown(new, cached)
    assert breakdown["linear"] == pytest.approx(2 * 2 * TOY_LAYER_PARAMS * 2000 / 1e12)
    assert breakdown["linear_memory"] == pytest.approx(2 * TOY_LAYER_PARAMS * 2 / 1e9)
    assert breakdown["attention"] == pytest.approx(TOY_ATTN_FLOPS * 2000 * 1000.5 / 1e12)
    assert breakdown["lm_head"] == pytest.approx(TOY_HEAD_PARAMS * 2 / 1e9)  # one sampled row
    parts = ("overhead", "linear", "lm_head", "attention", "allreduce")
    assert breakdown["total"] == pytest.approx(sum(breakdown[p] for p in parts))


def test_hand_computed_tensor_parallel_all_reduce():
    tp2 = toy(tp=2).roofline_breakdown(np.array([1, 10]), np.array([20, 0]))
    # 2 all-reduces per layer; ring moves 2(tp-1)/tp of 11 tokens x 64 x 2 bytes, 2(tp-1) hops.
    per_reduce = 1.0 * 11 * 64 * 2 / 1e9 + 2 * 1e-6
    assert tp2["allreduce"] == pytest.approx(2 * 2 * per_reduce)
    assert tp2["linear"] == pytest.approx(TOY_LAYER_PARAMS * 2 / 1e9)  # half the weights per rank


def test_padding_rows_cost_nothing():
    model = toy()
    assert model.step_time(np.array([1, 0, 0]), np.array([10, 50, 7])) == model.step_time(
        np.array([1]), np.array([10])
    )


@pytest.mark.parametrize("tp,batch,steps", [(1, 137, 300), (2, 5000, 250)])
def test_decode_run_times_equals_loop_of_step_time(tp, batch, steps):
    model = RooflineModel(get_model("llama-3-8b"), get_hardware("h100-sxm"), tp=tp)
    cached = np.random.default_rng(0).integers(0, 6000, size=batch)
    ones = np.ones(batch, dtype=int)
    loop = np.array([model.step_time(ones, cached + j) for j in range(steps)])
    np.testing.assert_array_equal(model.decode_run_times(cached, steps), loop)


def test_batch1_decode_is_weight_bytes_over_effective_bandwidth():
    model, hw = get_model("llama-3-8b"), get_hardware("h100-sxm")
    roofline = RooflineModel(model, hw)
    layer = 4096 * 4096 * 2 + 2 * 4096 * 1024 + 3 * 4096 * 14336
    streamed = (32 * layer + 128256 * 4096) * 2  # layers + LM head, fp16
    eff, oh = RooflineEfficiency(), StepOverhead()
    expected = streamed / (3350e9 * eff.memory_bandwidth) + oh.constant_s + oh.per_sequence_s + oh.per_token_s
    assert roofline.step_time(np.array([1]), np.array([0])) == pytest.approx(expected, rel=1e-4)


def test_int8_weights_halve_the_memory_bound_part():
    model, hw = get_model("llama-3-8b"), get_hardware("a10g")
    fp16 = RooflineModel(model, hw, weight_dtype="fp16").roofline_breakdown([1], [0])
    int8 = RooflineModel(model, hw, weight_dtype="int8").roofline_breakdown([1], [0])
    assert int8["total"] < fp16["total"]
    # Weight streaming (layers and LM head) is the whole memory-bound part at batch 1.
    ratio = (fp16["linear"] + fp16["lm_head"]) / (int8["linear"] + int8["lm_head"])
    assert ratio == pytest.approx(2.0, rel=1e-9)
    assert 1.7 < fp16["total"] / int8["total"] < 2.0


def test_a10g_llama3_8b_decode_anchor():
    # 16.06 GB of fp16 weights at 600 GB/s: at most 37.4 tokens/s; int8 halves the bytes.
    model, hw = get_model("llama-3-8b"), get_hardware("a10g")
    fp16_rate = 1 / RooflineModel(model, hw).step_time(np.array([1]), np.array([128]))
    int8_rate = 1 / RooflineModel(model, hw, weight_dtype="int8").step_time(np.array([1]), np.array([128]))
    assert fp16_rate < 600e9 / 16.06e9
    assert int8_rate > 45


def test_fp8_compute_uses_the_fp8_peak():
    model = get_model("llama-3-8b")
    h100, a100 = get_hardware("h100-sxm"), get_hardware("a100-80gb")
    prefill = (np.array([4096]), np.array([0]))
    eff = RooflineEfficiency().linear_compute
    for hw, peak in ((h100, 1979e12), (a100, 312e12)):  # the A100 has no fp8 units: 16-bit peak
        fp8 = RooflineModel(model, hw, weight_dtype="fp8")
        assert fp8.compute_dtype == "fp8"
        got = fp8.roofline_breakdown(*prefill)["linear_compute"]
        assert got == pytest.approx(2 * model.layer_linear_params * 4096 / (peak * eff))
    fp16_h100 = RooflineModel(model, h100).roofline_breakdown(*prefill)["linear"]
    fp8_h100 = RooflineModel(model, h100, weight_dtype="fp8").roofline_breakdown(*prefill)["linear"]
    assert fp16_h100 / fp8_h100 == pytest.approx(2.0, rel=0.01)


def test_tensor_parallel_cuts_linear_time_and_adds_all_reduce():
    model, hw = get_model("llama-3-70b"), get_hardware("h100-sxm")
    batch = (np.ones(32, dtype=int), np.full(32, 1000))
    tp4 = RooflineModel(model, hw, tp=4).roofline_breakdown(*batch)
    tp8 = RooflineModel(model, hw, tp=8).roofline_breakdown(*batch)
    assert tp8["linear"] == pytest.approx(tp4["linear"] / 2, rel=0.01)
    assert tp8["allreduce"] > tp4["allreduce"] > 0
    tp1 = RooflineModel(get_model("llama-3-8b"), hw).roofline_breakdown(*batch)
    assert tp1["allreduce"] == 0


def test_prefill_grows_linearly_once_compute_bound():
    model = RooflineModel(get_model("llama-3-8b"), get_hardware("h100-sxm"))
    t = {n: model.step_time(np.array([n]), np.array([0])) for n in (1024, 2048, 4096)}
    at_2048 = model.roofline_breakdown([2048], [0])
    assert at_2048["linear_compute"] > at_2048["linear_memory"]
    # Attention's quadratic term adds a little on top of doubling.
    assert 1.9 < t[4096] / t[2048] < 2.25
    assert 1.8 < t[2048] / t[1024] < 2.25


def test_decode_is_memory_bound_and_grows_with_context():
    model = RooflineModel(get_model("llama-3-8b"), get_hardware("a100-80gb"))
    short = model.roofline_breakdown(np.ones(64, dtype=int), np.full(64, 100))
    long = model.roofline_breakdown(np.ones(64, dtype=int), np.full(64, 4000))
    assert short["linear_memory"] > short["linear_compute"]
    assert long["attention"] == pytest.approx(short["attention"] * 4001 / 101, rel=1e-9)


def test_protocol_provenance_and_description():
    model = RooflineModel(get_model("llama-3-8b"), get_hardware("l4"), tp=1, weight_dtype="int8")
    assert isinstance(model, ExecutionModel)
    assert model.provenance == "roofline"
    assert model.is_extrapolated(np.array([100000]), np.array([0])) is False
    described = model.describe()
    json.dumps(described)
    assert described["efficiency"]["memory_bandwidth"] == RooflineEfficiency().memory_bandwidth
    assert described["compute_dtype"] == "fp16"  # int8 weight-only dequantises for the matmul
    assert described["sources"]["hardware"]

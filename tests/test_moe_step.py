"""Step times of mixtures of experts under tensor, expert and pipeline parallelism, checked by hand."""

import numpy as np
import pytest

from simulator.execution import RooflineModel
from simulator.execution.moe_roofline import MoERooflineModel, all_to_all_bytes, distinct_experts
from simulator.execution.roofline import RooflineEfficiency, StepOverhead
from simulator.spec import get_hardware, get_model
from simulator.spec.parallel import Parallelism

NO_OVERHEAD = StepOverhead(constant_s=0.0, per_sequence_s=0.0)


def test_distinct_experts_of_one_token_and_of_many():
    assert distinct_experts(1, 256, 8) == pytest.approx(8)
    assert distinct_experts(0, 256, 8) == 0
    assert distinct_experts(10_000, 256, 8) == pytest.approx(256)
    # Two tokens: 8 + 8 x (1 - 8/256) expected distinct.
    assert distinct_experts(2, 256, 8) == pytest.approx(8 + 8 * (1 - 8 / 256))


def test_all_to_all_volume_of_a_hand_made_step():
    v3 = get_model("deepseek-v3")
    layout = Parallelism(tp=1, dp=8, ep=8)
    # 64 tokens over 8 ranks: 8 per rank, each sent to 8 experts, 7 of 8 destinations off-rank,
    # 7168 x 2 bytes each.
    assert all_to_all_bytes(64, v3, layout) == pytest.approx(8 * 8 * 7168 * 2 * 7 / 8)
    assert all_to_all_bytes(64, v3, layout, imbalance=1.5) == pytest.approx(1.5 * 8 * 8 * 7168 * 2 * 7 / 8)
    assert all_to_all_bytes(64, v3, Parallelism(tp=8)) == 0  # tensor-parallel MoE all-reduces instead


def test_exchange_term_is_the_all_to_all_by_hand():
    v3, h200 = get_model("deepseek-v3"), get_hardware("h200")
    eff = RooflineEfficiency()
    model = MoERooflineModel(v3, h200, layout=Parallelism(tp=1, dp=8, ep=8), weight_dtype="fp8", kv_dtype="fp8",
                             overhead=NO_OVERHEAD)  # fmt: skip
    terms = model.roofline_breakdown(np.ones(64, dtype=int), np.full(64, 100))
    sent = 8 * 8 * 7168 * 2 * 7 / 8
    per_layer = 2 * (sent / (h200.interconnect_bandwidth * eff.interconnect) + 7 * h200.interconnect_latency)
    assert terms["exchange"] == pytest.approx(58 * per_layer)  # tp=1: no all-reduce, 58 MoE layers


def test_small_batches_read_many_experts():
    qwen, h200 = get_model("qwen3-235b-a22b"), get_hardware("h200")
    model = MoERooflineModel(qwen, h200, layout=Parallelism(tp=8), weight_dtype="fp8", overhead=NO_OVERHEAD)
    one = model.roofline_breakdown([1], [1000])["experts"]
    sixteen = model.roofline_breakdown(np.ones(16, dtype=int), np.full(16, 1000))["experts"]
    # Batch 1 reads 8 of 128 experts; batch 16 reads 128 (1 - (1 - 1/16)^16) = 82.5 of them.
    assert sixteen / one == pytest.approx(distinct_experts(16, 128, 8) / 8, rel=1e-9)


def test_dense_model_agrees_with_the_plain_roofline():
    llama, h100 = get_model("llama-3-8b"), get_hardware("h100-sxm")
    plain = RooflineModel(llama, h100, tp=2, weight_dtype="fp16")
    layered = MoERooflineModel(llama, h100, layout=Parallelism(tp=2), weight_dtype="fp16")
    for new, cached in (([1] * 8, [500] * 8), ([512], [0]), ([1, 300], [2000, 0])):
        assert layered.step_time(np.array(new), np.array(cached)) == pytest.approx(
            plain.step_time(np.array(new), np.array(cached)), rel=0.01)


def test_pipeline_without_micro_batches_runs_the_stages_in_turn():
    llama, h100 = get_model("llama-3.1-70b"), get_hardware("h100-sxm")
    one = MoERooflineModel(llama, h100, layout=Parallelism(tp=4), overhead=NO_OVERHEAD)
    two = MoERooflineModel(llama, h100, layout=Parallelism(tp=4, pp=2), micro_batches=1, overhead=NO_OVERHEAD)
    new, cached = np.ones(32, dtype=int), np.full(32, 1000)
    # Each stage reads half the weights; in turn they take as long as one stage with all of them.
    assert two.step_time(new, cached) == pytest.approx(one.step_time(new, cached), rel=0.02)
    piped = MoERooflineModel(llama, h100, layout=Parallelism(tp=4, pp=2), micro_batches=2, overhead=NO_OVERHEAD)
    # Two micro-batches re-read every stage's weights: a memory-bound decode step gains nothing.
    assert piped.step_time(new, cached) > two.step_time(new, cached)
    # Compute-bound prefills gain from the overlap: 3 half-batch stage-times instead of 4.
    prefill = (np.full(4, 2048), np.zeros(4, dtype=int))
    assert piped.step_time(*prefill) / two.step_time(*prefill) == pytest.approx(3 / 4, rel=0.03)
    # A single row cannot be split: one micro-batch.
    assert piped.step_time(np.array([8192]), np.array([0])) == two.step_time(np.array([8192]), np.array([0]))


def test_mla_decode_reads_the_latent_once_for_all_heads():
    v3, h200 = get_model("deepseek-v3"), get_hardware("h200")
    model = MoERooflineModel(v3, h200, layout=Parallelism(tp=8), weight_dtype="fp8", kv_dtype="fp8",
                             overhead=NO_OVERHEAD)  # fmt: skip
    short = model.roofline_breakdown([1], [1000])["attention"]
    long = model.roofline_breakdown([1], [101_000])["attention"]
    bw = h200.memory_bandwidth * RooflineEfficiency().memory_bandwidth
    flops = 2 * 16 * (2 * 512 + 64) / (h200.peak_flops("fp16") * RooflineEfficiency().attention_compute)
    per_key = max(61 * 576 / bw, 61 * flops)  # every tp rank reads the whole latent
    assert long - short == pytest.approx(100_000 * per_key, rel=1e-6)


def test_sliding_layers_read_only_their_window():
    oss, h100 = get_model("gpt-oss-120b"), get_hardware("h100-sxm")
    model = MoERooflineModel(oss, h100, layout=Parallelism(tp=2), weight_dtype="bf16", overhead=NO_OVERHEAD)
    a = model.roofline_breakdown([1], [10_000])["attention"]
    b = model.roofline_breakdown([1], [20_000])["attention"]
    bw = h100.memory_bandwidth * RooflineEfficiency().memory_bandwidth
    # Only the 18 full layers read the 10,000 more keys: 4 KV heads of 64 x 2 x 2 bytes per rank.
    assert b - a == pytest.approx(18 * 10_000 * 4 * 64 * 2 * 2 / bw, rel=1e-6)


def test_fp4_experts_run_at_the_fp4_peak_on_blackwell_only():
    oss = get_model("gpt-oss-120b")
    step = (np.array([8192]), np.array([0]))
    b200 = MoERooflineModel(oss, get_hardware("b200"), weight_dtype="bf16", overhead=NO_OVERHEAD)
    assert b200.roofline_breakdown(*step)["experts"] < b200.roofline_breakdown(*step)["linear"] * 10
    assert b200._expert_peak == pytest.approx(9000e12 * RooflineEfficiency().linear_compute)
    h100 = MoERooflineModel(oss, get_hardware("h100-sxm"), weight_dtype="bf16", overhead=NO_OVERHEAD)
    assert h100._expert_peak == pytest.approx(989.5e12 * RooflineEfficiency().linear_compute)


def test_decode_runs_match_single_steps():
    qwen, h200 = get_model("qwen3-30b-a3b"), get_hardware("h200")
    model = MoERooflineModel(qwen, h200, layout=Parallelism(tp=2, dp=2, ep=4), routing_imbalance=1.3)
    cached = np.array([100, 2000, 50])
    runs = model.decode_run_times(cached, 5)
    singles = [model.step_time(np.ones(3, dtype=int), cached + j) for j in range(5)]
    assert runs == pytest.approx(singles, rel=1e-12)


def test_routing_imbalance_slows_only_expert_parallel_ranks():
    qwen, h200 = get_model("qwen3-235b-a22b"), get_hardware("h200")
    step = (np.ones(64, dtype=int), np.full(64, 1000))

    def experts(layout, imbalance):
        model = MoERooflineModel(qwen, h200, layout=layout, weight_dtype="fp8", routing_imbalance=imbalance)
        return model.roofline_breakdown(*step)["experts"]

    assert experts(Parallelism(tp=8), 1.5) == experts(Parallelism(tp=8), 1.0)
    ep = Parallelism(tp=1, dp=8, ep=8)
    # The busiest rank sees 96 tokens' worth of routing instead of 64: more of its 16 experts.
    ratio = distinct_experts(96, 128, 8) / distinct_experts(64, 128, 8)
    assert experts(ep, 1.5) / experts(ep, 1.0) == pytest.approx(ratio, rel=1e-9)


def test_the_pipeline_bubble_is_reported():
    llama, h100 = get_model("llama-3.1-70b"), get_hardware("h100-sxm")
    model = MoERooflineModel(llama, h100, layout=Parallelism(tp=4, pp=4), micro_batches=4)
    assert model.describe()["pipeline_bubble"] == pytest.approx(3 / 7)
    assert MoERooflineModel(llama, h100, layout=Parallelism(tp=4)).describe()["pipeline_bubble"] == 0

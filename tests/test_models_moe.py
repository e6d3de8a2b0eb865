"""Mixture-of-experts, latent-attention and sliding-window models: parameter counts against the
published figures, KV bytes by hand, and how weights split over tensor, expert and pipeline ranks."""

import pytest

from simulator.common.errors import ConfigError
from simulator.spec import GB, get_hardware, get_model, memory, model_from_dict
from simulator.spec.layers import stage_sizes, stages
from simulator.spec.parallel import Parallelism

# (total, active) in billions as published. Active counts follow each publisher's own convention:
# Qwen, Mistral and Meta count the embedding table among the active parameters, DeepSeek and
# OpenAI do not (ModelSpec.active_params never does: a token only gathers one row of it).
PUBLISHED = {
    "deepseek-v3": (671, 37, False),
    "deepseek-r1": (671, 37, False),
    "qwen3-235b-a22b": (235, 22, True),
    "qwen3-30b-a3b": (30.5, 3.3, True),
    "gpt-oss-120b": (116.83, 5.13, False),
    "gpt-oss-20b": (20.91, 3.61, False),
    "mixtral-8x7b": (46.7, 12.9, True),
    "llama-4-scout": (109, 17, True),
    "llama-3.1-8b": (8.03, None, True),
    "llama-3.1-70b": (70.6, None, True),
    "llama-3.1-405b": (405, None, True),
    "qwen3-8b": (8.2, None, True),
    "qwen3-32b": (32.8, None, True),
}
# Active figures published with two significant digits (37B, 3.3B, 17B): the exact counts lie
# 1.0-1.6% from the rounded number (DeepSeek-V3 36.63B without the embedding, Qwen3-30B-A3B
# 3.35B with it, Llama-4-Scout 17.17B with it), so they are held to 2%.
TWO_DIGIT_ACTIVE = {"deepseek-v3", "deepseek-r1", "qwen3-30b-a3b", "llama-4-scout"}


@pytest.mark.parametrize("name", PUBLISHED)
def test_total_parameters_within_one_percent_of_published(name):
    total, _, _ = PUBLISHED[name]
    assert get_model(name).num_params / 1e9 == pytest.approx(total, rel=0.01)


@pytest.mark.parametrize("name", [n for n, v in PUBLISHED.items() if v[1] is not None])
def test_active_parameters_match_published(name):
    _, active, with_embedding = PUBLISHED[name]
    model = get_model(name)
    counted = model.active_params + (model.embedding_params if with_embedding else 0)
    rel = 0.02 if name in TWO_DIGIT_ACTIVE else 0.01
    assert counted / 1e9 == pytest.approx(active, rel=rel)


def test_dense_models_are_all_active_but_the_embedding():
    model = get_model("llama-3.1-8b")
    assert model.active_params == model.num_params - model.embedding_params


def test_mla_caches_the_latent_and_rotary_key_per_layer():
    v3 = get_model("deepseek-v3")
    assert v3.kv_bytes_per_token("fp16") == 61 * (512 + 64) * 2 == 70272
    assert v3.kv_bytes_per_token("fp8") == 61 * 576
    # 128 heads of GQA-style K and V would be 2 x 128 x (128 + 64)... MLA is 57x smaller than MHA.
    assert 2 * 61 * 128 * 192 * 2 / v3.kv_bytes_per_token("fp16") > 50


def test_mla_latent_is_not_split_by_tensor_parallelism():
    v3 = get_model("deepseek-v3")
    per_rank = memory.kv_bytes_per_token_per_gpu(v3, "fp16", Parallelism(tp=8))
    assert per_rank == v3.kv_bytes_per_token("fp16")


def test_sliding_window_layers_hold_at_most_the_window():
    oss = get_model("gpt-oss-120b")
    per_layer = 2 * 8 * 64 * 2
    assert oss.kv_bytes_per_sequence(100, "fp16") == 36 * 100 * per_layer
    assert oss.kv_bytes_per_sequence(10_000, "fp16") == (18 * 10_000 + 18 * 128) * per_layer


def test_sliding_kv_is_reserved_per_sequence_and_not_charged_per_token():
    oss, h100 = get_model("gpt-oss-120b"), get_hardware("h100-sxm")
    per_token = memory.kv_bytes_per_token_per_gpu(oss, "fp16", Parallelism(tp=1))
    assert per_token == 18 * 2 * 8 * 64 * 2  # the full-attention half of the layers only
    few = memory.kv_capacity_tokens(oss, h100, tp=Parallelism(), weight_dtype="bf16", max_num_seqs=1)
    many = memory.kv_capacity_tokens(oss, h100, tp=Parallelism(), weight_dtype="bf16", max_num_seqs=257)
    reserved = 256 * 128 * 18 * 2 * 8 * 64 * 2
    assert few - many == pytest.approx(reserved / per_token, abs=1)


def test_gpt_oss_checkpoint_size_with_mxfp4_experts():
    # Model card: 60.8 GiB for gpt-oss-120b, 12.8 GiB for gpt-oss-20b.
    assert get_model("gpt-oss-120b").weight_bytes("bf16") / 2**30 == pytest.approx(60.8, rel=0.02)
    assert get_model("gpt-oss-20b").weight_bytes("bf16") / 2**30 == pytest.approx(12.8, rel=0.03)


def test_expert_parallel_splits_experts_and_replicates_attention():
    model = get_model("qwen3-235b-a22b")
    tp8 = memory.weights_per_gpu_bytes(model, "bf16", Parallelism(tp=8))
    ep8 = memory.weights_per_gpu_bytes(model, "bf16", Parallelism(tp=1, dp=8, ep=8))
    # Both hold an eighth of the experts. EP with DP attention keeps attention, embedding and LM
    # head whole on every rank; TP 8 splits q/o 8 ways and keeps one of the 4 KV heads per rank.
    h, q_width = 4096, 64 * 128
    attention_tp1 = 2 * h * q_width + 2 * h * 4 * 128
    attention_tp8 = 2 * h * q_width / 8 + 2 * h * 1 * 128
    vocab = 2 * 151936 * h * (1 - 1 / 8)
    assert ep8 - tp8 == pytest.approx((94 * (attention_tp1 - attention_tp8) + vocab) * 2, rel=1e-6)
    experts = model.routed_expert_params * 2 / 8
    assert tp8 > experts and ep8 > experts


def test_pipeline_stages_split_layers_and_weights():
    assert stage_sizes(61, 4) == [15, 15, 16, 15]  # as vLLM: the remainder before the last stage
    assert stage_sizes(62, 4) == [15, 16, 16, 15]
    assert sum(stage_sizes(61, 4)) == 61 and max(stage_sizes(61, 4)) - min(stage_sizes(61, 4)) <= 1
    v3 = get_model("deepseek-v3")
    parts = stages(v3, 2)
    assert parts[0].dense == 3 and parts[1].dense == 0  # the dense layers come first
    assert sum(p.moe for p in parts) == 58
    one = memory.weights_per_gpu_bytes(v3, "fp8", Parallelism(tp=8))
    two = memory.weights_per_gpu_bytes(v3, "fp8", Parallelism(tp=8, pp=2))
    assert two == pytest.approx(one / 2, rel=0.05)


def test_a_model_that_fits_only_with_more_ranks_says_which_and_the_bytes():
    v3, h200 = get_model("deepseek-v3"), get_hardware("h200")
    with pytest.raises(ConfigError) as err:
        memory.kv_capacity_tokens(v3, h200, tp=Parallelism(tp=4), weight_dtype="fp8")
    text = str(err.value)
    assert "does not fit" in text and "GB per GPU" in text and "GB are available" in text
    assert "would fit" in text


def test_bf16_deepseek_fits_no_single_h200_node():
    v3, h200 = get_model("deepseek-v3"), get_hardware("h200")
    with pytest.raises(ConfigError, match="only with pipeline parallelism"):
        memory.kv_capacity_tokens(v3, h200, tp=Parallelism(tp=8), weight_dtype="bf16")
    needed = v3.weight_bytes("bf16") / 8
    assert needed > h200.memory_bytes * 0.9  # 1.34 TB over 8 GPUs: 168 GB each, more than 126 GB


def test_parallel_layouts_are_checked_against_the_model():
    qwen = get_model("qwen3-235b-a22b")
    with pytest.raises(ConfigError, match="expert_parallel"):
        Parallelism(tp=8, ep=3).validate(qwen)
    with pytest.raises(ConfigError, match="no mixture of experts"):
        Parallelism(tp=1, dp=2, ep=2).validate(get_model("llama-3.1-8b"))
    with pytest.raises(ConfigError, match="pipeline_parallel"):
        Parallelism(pp=200).validate(qwen)


def test_inline_moe_spec_is_bounded():
    base = {"num_layers": 2, "hidden_size": 64, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 128,
                "vocab_size": 100, "max_context": 256}
    model_from_dict("ok", {**base, "num_experts": 4, "num_experts_per_token": 2, "moe_intermediate_size": 32})
    with pytest.raises(ConfigError, match="num_experts_per_token"):
        model_from_dict("bad", {**base, "num_experts": 4, "num_experts_per_token": 5, "moe_intermediate_size": 32})
    with pytest.raises(ConfigError, match="expert_dtype"):
        model_from_dict("bad", {**base, "expert_dtype": "fp3"})


def test_fp4_weights_and_peaks():
    b200, h100 = get_hardware("b200"), get_hardware("h100-sxm")
    assert b200.peak_flops("fp4") == 9000e12 and get_hardware("b300").peak_flops("fp4") > b200.peak_flops("fp4")
    assert h100.peak_flops("fp4") == h100.peak_flops("fp16")  # no fp4 tensor cores: 16-bit speed
    oss = get_model("gpt-oss-120b")
    assert oss.weight_bytes("bf16", expert_dtype="nvfp4") > oss.weight_bytes("bf16", expert_dtype="mxfp4")
    assert oss.weight_bytes("fp8") < oss.weight_bytes("bf16")
    assert memory.weights_per_gpu_bytes(oss, "bf16", Parallelism(tp=2)) < 40 * GB


def test_inline_hardware_takes_node_shape_and_fp4():
    from simulator.spec import hardware_from_dict

    base = {"memory_gib": 80, "memory_bandwidth_gbps": 3350, "tflops": {"bf16": 989, "fp4": 4000},
            "interconnect_gbps": 450}
    hw = hardware_from_dict("gpu", {**base, "internode_gbps": 100, "gpus_per_node": 4})
    assert hw.internode_bandwidth == 100e9 and hw.gpus_per_node == 4 and hw.peak_flops("fp4") == 4000e12
    with pytest.raises(ConfigError, match="gpus_per_node"):
        hardware_from_dict("gpu", {**base, "gpus_per_node": 0})


def test_a_stage_wider_than_a_node_is_refused():
    with pytest.raises(ConfigError, match="at most 8"):
        Parallelism(tp=1, dp=16, ep=16).check_node(8, "h200")
    Parallelism(tp=8, pp=2).check_node(8, "h200")  # stages may span nodes

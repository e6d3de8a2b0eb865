import pytest

from simulator.common.errors import ConfigError
from simulator.spec import get_hardware, get_model
from simulator.spec.memory import (
    default_activation_reserve,
    kv_bytes_per_token_per_gpu,
    kv_capacity_blocks,
    kv_capacity_tokens,
    kv_heads_per_rank,
    streamed_weight_bytes_per_gpu,
    weights_per_gpu_bytes,
)

# Llama-3-8B parameters from its config: embeddings + 32 layers + untied head + norms.
L3_8B_LAYER = 4096 * 4096 * 2 + 2 * 4096 * 1024 + 3 * 4096 * 14336
L3_8B_PARAMS = 2 * 128256 * 4096 + 32 * L3_8B_LAYER + 65 * 4096


def test_capacity_by_hand_llama3_8b_on_a100_80gb():
    model, hw = get_model("llama-3-8b"), get_hardware("a100-80gb")
    free = 80 * 2**30 * 0.9 - L3_8B_PARAMS * 2 - 2e9
    tokens = int(free // 131072)
    got = kv_capacity_tokens(model, hw, activation_reserve_bytes=2e9)
    assert got == tokens
    blocks = kv_capacity_blocks(model, hw, activation_reserve_bytes=2e9, block_size=16)
    assert blocks == tokens // 16
    assert 27_000 < blocks < 29_000  # about 58 GB of KV cache


def test_fp8_kv_doubles_tokens_and_utilisation_scales_budget():
    model, hw = get_model("llama-3-8b"), get_hardware("h100-sxm")
    fp16 = kv_capacity_tokens(model, hw, activation_reserve_bytes=1e9)
    fp8 = kv_capacity_tokens(model, hw, kv_dtype="fp8", activation_reserve_bytes=1e9)
    assert fp8 == pytest.approx(2 * fp16, abs=2)
    lower = kv_capacity_tokens(model, hw, gpu_memory_utilization=0.8, activation_reserve_bytes=1e9)
    assert fp16 - lower == pytest.approx(0.1 * hw.memory_bytes / 131072, abs=2)


def test_int8_weights_free_memory_for_kv():
    model, hw = get_model("llama-3-8b"), get_hardware("a10g")
    fp16 = kv_capacity_tokens(model, hw)
    int8 = kv_capacity_tokens(model, hw, weight_dtype="int8")
    # int8 saves one byte per linear parameter (embeddings stay 16-bit).
    saved = (32 * L3_8B_LAYER + 128256 * 4096) * 1.0
    assert (int8 - fp16) * 131072 == pytest.approx(saved, rel=1e-4)


def test_tensor_parallel_roughly_doubles_kv_capacity():
    model, hw = get_model("llama-3-8b"), get_hardware("a100-80gb")
    tp1 = kv_capacity_blocks(model, hw, tp=1)
    tp2 = kv_capacity_blocks(model, hw, tp=2)
    # Each rank holds half the KV heads and half the weights, so it fits more than twice the tokens.
    assert 2.0 < tp2 / tp1 < 2.5


def test_weights_split_across_ranks():
    model = get_model("llama-3-70b")
    total = model.weight_bytes("fp16")
    assert weights_per_gpu_bytes(model, "fp16", 1) == total
    # Only the norms are replicated, so each of 8 ranks holds just over 1/8.
    per_rank = weights_per_gpu_bytes(model, "fp16", 8)
    assert total / 8 < per_rank < total / 8 * 1.001
    assert streamed_weight_bytes_per_gpu(model, "fp16", 1) == model.streamed_weight_bytes("fp16")


def test_kv_heads_replicated_beyond_their_count():
    model = get_model("qwen2.5-7b")  # 28 heads, 4 KV heads
    assert kv_heads_per_rank(model, 2) == 2
    assert kv_heads_per_rank(model, 4) == 1
    assert kv_heads_per_rank(model, 28) == 1  # replicated 7 times
    # A replicated KV head costs each rank a full head of cache.
    assert kv_bytes_per_token_per_gpu(model, "fp16", 28) == 2 * 28 * 1 * 128 * 2
    with pytest.raises(ConfigError, match="num_heads"):
        kv_heads_per_rank(model, 3)
    with pytest.raises(ConfigError, match="num_kv_heads"):
        kv_heads_per_rank(model, 14)  # divides 28 heads, but neither divides 4 KV heads nor is a multiple


def test_model_that_does_not_fit_names_bytes_needed_and_available():
    model, hw = get_model("llama-3-70b"), get_hardware("a100-80gb")
    with pytest.raises(ConfigError) as err:
        kv_capacity_blocks(model, hw, tp=1, activation_reserve_bytes=1e9)
    message = str(err.value)
    layer = 8192 * 8192 * 2 + 2 * 8192 * 1024 + 3 * 8192 * 28672
    weights_gb = (2 * 128256 * 8192 + 80 * layer + 161 * 8192) * 2 / 1e9
    assert f"{weights_gb + 1:.1f} GB" in message  # needed: weights + reserve
    assert f"{80 * 2**30 * 0.9 / 1e9:.1f} GB" in message  # available: 80 GiB x 0.9
    assert "tensor parallelism" in message or "tp=" in message
    assert "dtype" in message


def test_fits_with_more_parallelism():
    model, hw = get_model("llama-3-70b"), get_hardware("h100-sxm")
    assert kv_capacity_blocks(model, hw, tp=4) > 0
    assert kv_capacity_blocks(model, get_hardware("h200"), tp=1, weight_dtype="fp8") > 0


def test_default_activation_reserve_is_modest():
    # About 1-3 GB for an 8B model: what vLLM's profiling run reports, not a fraction of memory.
    reserve = default_activation_reserve(get_model("llama-3-8b"))
    assert 1e9 < reserve < 3e9
    assert default_activation_reserve(get_model("llama-3-8b"), max_num_batched_tokens=2048) < reserve


def test_bad_utilisation_rejected():
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        kv_capacity_tokens(get_model("llama-3-8b"), get_hardware("a10g"), gpu_memory_utilization=1.5)

"""GPU memory per tensor-parallel rank: weights, activation reserve and the KV cache that fits.

Sharding follows vLLM's tensor parallelism: q, o, gate, up and down projections, the embedding
and the LM head are split across `tp` ranks; norms are replicated. KV heads are split too when
`tp` divides `num_kv_heads`; when `tp` is a multiple of `num_kv_heads` each rank keeps one KV head
and the KV heads (their k/v projections and cache) are replicated `tp / num_kv_heads` times.
"""

from __future__ import annotations

from simulator.common.errors import ConfigError
from simulator.spec.dtypes import GB, GiB, dtype_bytes
from simulator.spec.hardware import HardwareSpec
from simulator.spec.model import ModelSpec

# Activations live in 16 bits; logits are upcast to fp32 for sampling.
ACTIVATION_BYTES = 2.0
LOGIT_BYTES = 4.0
# cuBLAS workspaces, NCCL buffers and CUDA-graph pools: memory vLLM's profiling run sees
# outside the PyTorch activation peak.
RUNTIME_RESERVE_BYTES = 0.5 * GiB


def kv_heads_per_rank(model: ModelSpec, tp: int) -> int:
    """KV heads one rank holds; raises ConfigError for a tp the model cannot be split by."""
    if tp < 1 or model.num_heads % tp:
        raise ConfigError(
            f"tensor parallelism tp={tp} must be a positive divisor of {model.name}'s "
            f"num_heads ({model.num_heads})"
        )
    if model.num_kv_heads % tp == 0:
        return model.num_kv_heads // tp
    if tp % model.num_kv_heads == 0:
        return 1  # replicated, as vLLM does when tp exceeds the KV head count
    raise ConfigError(
        f"tp={tp} must divide {model.name}'s num_kv_heads ({model.num_kv_heads}) or be a multiple of it"
    )


def _layer_linear_params_per_rank(model: ModelSpec, tp: int) -> float:
    kv_heads = kv_heads_per_rank(model, tp)
    q_and_o = 2 * model.hidden_size * model.num_heads * model.head_dim / tp
    k_and_v = 2 * model.hidden_size * kv_heads * model.head_dim
    bias = (model.num_heads / tp + 2 * kv_heads) * model.head_dim if model.attention_bias else 0
    mlp = model.mlp_params_per_layer / tp
    return model.num_layers * (q_and_o + k_and_v + bias + mlp)


def weights_per_gpu_bytes(model: ModelSpec, weight_dtype: str = "fp16", tp: int = 1) -> float:
    """Weight bytes resident on one rank (embeddings and norms kept in 16 bits, as in specs)."""
    linear = _layer_linear_params_per_rank(model, tp)
    if not model.tie_embeddings:
        linear += model.lm_head_params / tp
    high = model.embedding_params / tp + model.norm_params
    return linear * dtype_bytes(weight_dtype) + high * 2.0


def streamed_weight_bytes_per_gpu(model: ModelSpec, weight_dtype: str = "fp16", tp: int = 1) -> float:
    """Weight bytes one rank reads per forward pass: its layer shards plus its LM head shard."""
    head_bytes = 2.0 if model.tie_embeddings else dtype_bytes(weight_dtype)
    return (
        _layer_linear_params_per_rank(model, tp) * dtype_bytes(weight_dtype)
        + model.lm_head_params / tp * head_bytes
    )


def kv_bytes_per_token_per_gpu(model: ModelSpec, kv_dtype: str = "fp16", tp: int = 1) -> float:
    return 2 * model.num_layers * kv_heads_per_rank(model, tp) * model.head_dim * dtype_bytes(kv_dtype)


def default_activation_reserve(
    model: ModelSpec, *, tp: int = 1, max_num_batched_tokens: int = 8192, max_num_seqs: int = 256
) -> float:
    """Peak activation memory of the largest step, the role of vLLM's profiling run.

    Per batched token: the MLP's gate/up output and its activated product (3 x intermediate / tp)
    plus about four hidden-size buffers (residual, normed input, attention output, MLP output).
    Per sequence: one row of fp32 logits over the full vocabulary. Plus a fixed runtime reserve.
    For Llama-3-8B at the defaults this gives about 1.6 GB, close to the 1.2-1.5 GiB activation
    peak plus non-torch memory vLLM reports for that model.
    """
    per_token = (3 * model.intermediate_size / tp + 4 * model.hidden_size) * ACTIVATION_BYTES
    logits = max_num_seqs * model.vocab_size * LOGIT_BYTES
    return max_num_batched_tokens * per_token + logits + RUNTIME_RESERVE_BYTES


def kv_capacity_tokens(
    model: ModelSpec,
    hw: HardwareSpec,
    *,
    tp: int = 1,
    weight_dtype: str = "fp16",
    kv_dtype: str = "fp16",
    gpu_memory_utilization: float = 0.9,
    activation_reserve_bytes: float | None = None,
) -> int:
    """Tokens of KV cache each replica can hold (the same on every rank)."""
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    reserve = (
        default_activation_reserve(model, tp=tp)
        if activation_reserve_bytes is None
        else activation_reserve_bytes
    )
    budget = hw.memory_bytes * gpu_memory_utilization
    weights = weights_per_gpu_bytes(model, weight_dtype, tp)
    free = budget - weights - reserve
    if free <= 0:
        raise ConfigError(
            _does_not_fit(model, hw, tp, weight_dtype, gpu_memory_utilization, weights, reserve)
        )
    return int(free // kv_bytes_per_token_per_gpu(model, kv_dtype, tp))


def kv_capacity_blocks(
    model: ModelSpec,
    hw: HardwareSpec,
    *,
    tp: int = 1,
    weight_dtype: str = "fp16",
    kv_dtype: str = "fp16",
    gpu_memory_utilization: float = 0.9,
    activation_reserve_bytes: float | None = None,
    block_size: int = 16,
) -> int:
    """KV cache blocks of `block_size` tokens per replica:
    (memory x utilisation - weights per rank - activation reserve) / KV bytes per token per rank."""
    tokens = kv_capacity_tokens(
        model,
        hw,
        tp=tp,
        weight_dtype=weight_dtype,
        kv_dtype=kv_dtype,
        gpu_memory_utilization=gpu_memory_utilization,
        activation_reserve_bytes=activation_reserve_bytes,
    )
    blocks = tokens // block_size
    if blocks < 1:
        raise ConfigError(
            f"{model.name} on {hw.name} (tp={tp}) leaves room for {tokens} KV tokens, less than one "
            f"block of {block_size}; use more tensor parallelism or a smaller weight dtype"
        )
    return blocks


def _does_not_fit(model, hw, tp, weight_dtype, utilization, weights, reserve) -> str:
    needed = weights + reserve
    available = hw.memory_bytes * utilization
    hint = "use more tensor parallelism or a smaller weight dtype (fp8, int8, int4)"
    for larger in (2, 4, 8):
        if larger <= tp:
            continue
        try:
            if weights_per_gpu_bytes(model, weight_dtype, larger) + reserve < available:
                hint = f"tp={larger} would fit; or use a smaller weight dtype (fp8, int8, int4)"
                break
        except ConfigError:
            continue
    return (
        f"{model.name} does not fit on {hw.name} at tp={tp} with {weight_dtype} weights: it needs "
        f"{needed / GB:.1f} GB per GPU ({weights / GB:.1f} GB weights + {reserve / GB:.1f} GB activation "
        f"reserve) but {available / GB:.1f} GB are available ({hw.memory_bytes / GB:.0f} GB x "
        f"gpu_memory_utilization {utilization}); {hint}"
    )

"""GPU memory per rank: weights, activation reserve and the KV cache that fits.

Sharding follows vLLM (simulator/spec/rank_memory.py): tensor parallelism splits attention,
dense MLPs, the embedding and the LM head; expert parallelism spreads routed experts; pipeline
stages hold their own layers. Every function takes `tp` as a tensor-parallel degree or as a
`Parallelism`; a model with several stages is bound by its fullest one.

KV capacity counts tokens of the full-attention layers. A sliding-window layer keeps at most
`sliding_window` tokens per sequence (vLLM's hybrid KV cache frees the blocks that slide out), so
its memory is reserved up front for `max_num_seqs` sequences at a full window each and the block
manager, which counts one kind of block, sees only full-attention tokens. A model whose every
layer slides is charged per token in all its layers (no bound assumed). With data-parallel
attention each of the dp groups caches its own sequences: a replica holds dp times one group's
tokens.
"""

from __future__ import annotations

from simulator.common.errors import ConfigError
from simulator.spec.dtypes import GB, GiB, dtype_bytes
from simulator.spec.hardware import HardwareSpec
from simulator.spec.model import ModelSpec
from simulator.spec.parallel import Parallelism, as_parallelism
from simulator.spec.rank_memory import (
    all_stages,
    kv_heads_per_rank,
    stage_kv_bytes_per_token,
    stage_weights,
)

__all__ = ["kv_heads_per_rank"]

# Activations live in 16 bits; logits are upcast to fp32 for sampling.
ACTIVATION_BYTES = 2.0
LOGIT_BYTES = 4.0
# cuBLAS workspaces, NCCL buffers and CUDA-graph pools: memory vLLM's profiling run sees
# outside the PyTorch activation peak.
RUNTIME_RESERVE_BYTES = 0.5 * GiB
DEFAULT_MAX_NUM_SEQS = 256  # when a caller names none, for the sliding-window reserve


def _plain(model: ModelSpec, layout: Parallelism) -> bool:
    """A dense GQA model under tensor parallelism alone, priced by the original formulas."""
    return (layout.is_plain and not model.is_moe and not model.uses_mla and not model.small_params
            and not model.encoder_params and not model.num_sliding_window_layers)  # fmt: skip


def _layer_linear_params_per_rank(model: ModelSpec, tp: int) -> float:
    kv_heads = kv_heads_per_rank(model, tp)
    q_and_o = 2 * model.hidden_size * model.num_heads * model.head_dim / tp
    k_and_v = 2 * model.hidden_size * kv_heads * model.head_dim
    bias = (model.num_heads / tp + 2 * kv_heads) * model.head_dim if model.attention_bias else 0
    mlp = model.mlp_params_per_layer / tp
    return model.num_layers * (q_and_o + k_and_v + bias + mlp)


def stage_weight_bytes(model: ModelSpec, weight_dtype: str, layout: Parallelism, expert_dtype: str | None = None
                       ) -> list[float]:  # fmt: skip
    """Weight bytes one rank of each pipeline stage holds."""
    experts = model.resolved_expert_dtype(weight_dtype, expert_dtype)
    return [stage_weights(model, layout, s).bytes(weight_dtype, experts) for s in all_stages(model, layout)]


def weights_per_gpu_bytes(model: ModelSpec, weight_dtype: str = "fp16", tp: int | Parallelism = 1,
                          expert_dtype: str | None = None) -> float:  # fmt: skip
    """Weight bytes resident on one rank of the fullest stage (embeddings and norms in 16 bits)."""
    layout = as_parallelism(tp)
    if _plain(model, layout):
        linear = _layer_linear_params_per_rank(model, layout.tp)
        if not model.tie_embeddings:
            linear += model.lm_head_params / layout.tp
        high = model.embedding_params / layout.tp + model.norm_params
        return linear * dtype_bytes(weight_dtype) + high * 2.0
    layout.validate(model)
    return max(stage_weight_bytes(model, weight_dtype, layout, expert_dtype))


def streamed_weight_bytes_per_gpu(model: ModelSpec, weight_dtype: str = "fp16", tp: int = 1) -> float:
    """Weight bytes one rank of a dense model reads per forward pass: its layer shards plus its
    LM head shard."""
    head_bytes = 2.0 if model.tie_embeddings else dtype_bytes(weight_dtype)
    return (
        _layer_linear_params_per_rank(model, tp) * dtype_bytes(weight_dtype)
        + model.lm_head_params / tp * head_bytes
    )


def _charged_per_token(model: ModelSpec, layout: Parallelism, stage, kv_dtype: str) -> float:
    """KV bytes per token the block manager charges on a stage: its full-attention layers, or all
    its layers when the model has no full-attention layer."""
    full = stage_kv_bytes_per_token(model, layout, stage, kv_dtype, sliding=False)
    if model.num_full_attention_layers == 0:
        full += stage_kv_bytes_per_token(model, layout, stage, kv_dtype, sliding=True)
    return full


def kv_bytes_per_token_per_gpu(model: ModelSpec, kv_dtype: str = "fp16", tp: int | Parallelism = 1) -> float:
    """KV bytes one rank holds per cached token (of its full-attention layers; on the fullest stage)."""
    layout = as_parallelism(tp)
    if _plain(model, layout):
        return 2 * model.num_layers * kv_heads_per_rank(model, layout.tp) * model.head_dim * dtype_bytes(kv_dtype)
    return max(_charged_per_token(model, layout, s, kv_dtype) for s in all_stages(model, layout))


def sliding_kv_bytes_per_sequence(model: ModelSpec, kv_dtype: str, layout: Parallelism, stage) -> float:
    """KV bytes one sequence can hold at most in a stage's sliding-window layers on one rank."""
    if not model.num_sliding_window_layers or not model.num_full_attention_layers:
        return 0.0
    return model.sliding_window * stage_kv_bytes_per_token(model, layout, stage, kv_dtype, sliding=True)


def default_activation_reserve(
    model: ModelSpec, *, tp: int | Parallelism = 1, max_num_batched_tokens: int = 8192, max_num_seqs: int = 256
) -> float:
    """Peak activation memory of the largest step, the role of vLLM's profiling run.

    Per batched token: the MLP's gate/up output and its activated product (3 x intermediate / tp)
    plus about four hidden-size buffers (residual, normed input, attention output, MLP output).
    Per sequence: one row of fp32 logits over the full vocabulary. Plus a fixed runtime reserve.
    For Llama-3-8B at the defaults this gives about 1.6 GB, close to the 1.2-1.5 GiB activation
    peak plus non-torch memory vLLM reports for that model. A MoE layer holds, per token of all
    dp groups, the gated outputs of its top-k experts on their ranks (k x 3 x width / moe_tp / ep
    on average) and the shared experts'.
    """
    layout = as_parallelism(tp)
    per_token = (3 * model.intermediate_size / layout.tp + 4 * model.hidden_size) * ACTIVATION_BYTES
    if model.is_moe:
        routed = layout.dp * model.num_experts_per_token * 3 * model.moe_intermediate_size / layout.stage_ranks
        shared = 3 * model.shared_expert_intermediate_size / layout.tp
        mlp = max(3 * model.intermediate_size / layout.tp if model.num_dense_layers else 0.0, routed + shared)
        per_token = (mlp + 4 * model.hidden_size) * ACTIVATION_BYTES
    logits = max_num_seqs * model.vocab_size * LOGIT_BYTES
    return max_num_batched_tokens * per_token + logits + RUNTIME_RESERVE_BYTES


def kv_capacity_tokens(
    model: ModelSpec,
    hw: HardwareSpec,
    *,
    tp: int | Parallelism = 1,
    weight_dtype: str = "fp16",
    kv_dtype: str = "fp16",
    gpu_memory_utilization: float = 0.9,
    activation_reserve_bytes: float | None = None,
    expert_dtype: str | None = None,
    max_num_seqs: int | None = None,
) -> int:
    """Tokens of KV cache each replica can hold (full-attention tokens; see the module docstring).
    `max_num_seqs` is per data-parallel group."""
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    layout = as_parallelism(tp)
    reserve = (
        default_activation_reserve(model, tp=layout)
        if activation_reserve_bytes is None
        else activation_reserve_bytes
    )
    budget = hw.memory_bytes * gpu_memory_utilization
    if _plain(model, layout):
        weights = weights_per_gpu_bytes(model, weight_dtype, layout.tp)
        free = budget - weights - reserve
        if free <= 0:
            raise ConfigError(_does_not_fit(model, hw, layout, weight_dtype, expert_dtype, gpu_memory_utilization,
                                            weights, reserve))  # fmt: skip
        return int(free // kv_bytes_per_token_per_gpu(model, kv_dtype, layout.tp))
    layout.validate(model)
    seqs = DEFAULT_MAX_NUM_SEQS if max_num_seqs is None else max_num_seqs
    weights = stage_weight_bytes(model, weight_dtype, layout, expert_dtype)
    if max(weights) + reserve >= budget:
        raise ConfigError(_does_not_fit(model, hw, layout, weight_dtype, expert_dtype, gpu_memory_utilization,
                                        max(weights), reserve))  # fmt: skip
    tokens = []
    for stage, held in zip(all_stages(model, layout), weights):
        free = budget - held - reserve - seqs * sliding_kv_bytes_per_sequence(model, kv_dtype, layout, stage)
        if free <= 0:
            raise ConfigError(
                f"{model.name} on {hw.name} ({layout.describe()}): the sliding-window layers' KV for "
                f"{seqs} sequences ({seqs * sliding_kv_bytes_per_sequence(model, kv_dtype, layout, stage) / GB:.1f} GB "
                "per GPU) leaves no memory for the full-attention layers; lower scheduler.max_num_seqs"
            )
        tokens.append(int(free // _charged_per_token(model, layout, stage, kv_dtype)))
    return layout.dp * min(tokens)


def kv_capacity_blocks(
    model: ModelSpec,
    hw: HardwareSpec,
    *,
    tp: int | Parallelism = 1,
    weight_dtype: str = "fp16",
    kv_dtype: str = "fp16",
    gpu_memory_utilization: float = 0.9,
    activation_reserve_bytes: float | None = None,
    block_size: int = 16,
    expert_dtype: str | None = None,
    max_num_seqs: int | None = None,
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
        expert_dtype=expert_dtype,
        max_num_seqs=max_num_seqs,
    )
    blocks = tokens // block_size
    if blocks < 1:
        layout = as_parallelism(tp)
        raise ConfigError(
            f"{model.name} on {hw.name} ({layout.describe()}) leaves room for {tokens} KV tokens, less than "
            f"one block of {block_size}; use more tensor parallelism or a smaller weight dtype"
        )
    return blocks


def _fitting_layouts(model: ModelSpec, hw: HardwareSpec, weight_dtype, expert_dtype, available, reserve, current):
    """Layouts with more GPUs than `current` whose weights fit, fewest GPUs first."""
    found = []
    for pp in (1, 2, 4):
        for tp in (1, 2, 4, 8):
            for dp in ((1, 2, 4, 8) if model.is_moe else (1,)):
                for ep in ({1, tp * dp} if model.is_moe else {1}):
                    layout = Parallelism(tp=tp, dp=dp, ep=ep, pp=pp)
                    if layout.gpus <= current.gpus or layout.stage_ranks > hw.gpus_per_node:
                        continue
                    try:
                        weights = weights_per_gpu_bytes(model, weight_dtype, layout, expert_dtype)
                    except ConfigError:
                        continue
                    if weights + reserve < available:
                        found.append((layout.gpus, pp, dp, ep, layout, weights))
    return [(layout, weights) for *_, layout, weights in sorted(found, key=lambda f: f[:4])]


def _does_not_fit(model, hw, layout, weight_dtype, expert_dtype, utilization, weights, reserve) -> str:
    needed = weights + reserve
    available = hw.memory_bytes * utilization
    fits = _fitting_layouts(model, hw, weight_dtype, expert_dtype, available, reserve, layout)
    lighter = [d for d in ("fp8", "int8", "int4", "mxfp4") if dtype_bytes(d) < dtype_bytes(weight_dtype)]
    smaller = f"use a smaller weight dtype ({', '.join(lighter)})" if lighter else "use more GPUs per replica"
    if not fits:
        hint = f"no layout of up to 4 pipeline stages of one node fits: {smaller}"
    else:
        best, best_weights = fits[0]
        one_node = [f for f in fits if f[0].pp == 1]
        if layout.is_plain and best.is_plain:
            hint = f"tp={best.tp} would fit; or {smaller}"
        else:
            only = ""
            if not one_node:
                only = f"it fits on no single node of {hw.gpus_per_node}, only with pipeline parallelism: "
            elif not any(f[0].ep == 1 and f[0].dp == 1 for f in fits):
                only = "it fits only with expert parallelism: "
            hint = (f"{only}{best.describe()} would fit ({best.gpus} GPUs, {best_weights / GB:.1f} GB weights per "
                    f"GPU); or {smaller}")  # fmt: skip
    return (
        f"{model.name} does not fit on {hw.name} at {layout.describe()} with {weight_dtype} weights: it needs "
        f"{needed / GB:.1f} GB per GPU ({weights / GB:.1f} GB weights + {reserve / GB:.1f} GB activation "
        f"reserve) but {available / GB:.1f} GB are available ({hw.memory_bytes / GB:.0f} GB x "
        f"gpu_memory_utilization {utilization}); {hint}"
    )

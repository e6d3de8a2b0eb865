"""Mixture-of-experts checkpoints in Hugging Face layouts: Mixtral, Qwen2-MoE and Qwen3-MoE.

Two tables, as for dense checkpoints (backend/loader.py): config.json keys that give the
ModelSpec's expert fields and the model's Variant, and checkpoint tensor names that fill the
stacked expert weights (`w_gate_up` rows [gate | up] of expert j, `w_down` of expert j), the
router and the shared expert. The tensor names are those the published checkpoints store:

    Mixtral     block_sparse_moe.gate, block_sparse_moe.experts.J.{w1 gate, w3 up, w2 down}
    Qwen2-MoE   mlp.gate, mlp.experts.J.{gate,up,down}_proj, mlp.shared_expert.{gate,up,down}_proj,
                mlp.shared_expert_gate
    Qwen3-MoE   mlp.gate, mlp.experts.J.{gate,up,down}_proj; self_attn.{q,k}_norm on every layer
"""

from __future__ import annotations

from backend.variant import Variant
from simulator.common.errors import ConfigError
from simulator.spec import ModelSpec

MOE_MODEL_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe")

Index = slice | int | tuple | None  # which part of the target parameter a checkpoint tensor fills


def moe_fields(config: dict, model_type: str, name: str) -> dict:
    """The ModelSpec fields of a MoE config.json: experts, top-k, widths, leading dense layers."""
    if model_type == "mixtral":
        experts, width = config.get("num_local_experts"), config.get("intermediate_size")
        shared, dense = 0, 0
    else:
        experts, width = config.get("num_experts"), config.get("moe_intermediate_size")
        shared = (config.get("shared_expert_intermediate_size") or 0) if model_type == "qwen2_moe" else 0
        dense = _leading_dense_layers(config, name)
    top_k = config.get("num_experts_per_tok")
    missing = [key for key, value in (("experts", experts), ("num_experts_per_tok", top_k), ("width", width))
               if not value]  # fmt: skip
    if missing:
        keys = {"experts": "num_local_experts" if model_type == "mixtral" else "num_experts",
                "width": "intermediate_size" if model_type == "mixtral" else "moe_intermediate_size"}  # fmt: skip
        raise ConfigError(f"{name}: config.json of a {model_type} model lacks "
                          f"{', '.join(keys.get(k, k) for k in missing)}")  # fmt: skip
    return {
        "num_experts": int(experts),
        "num_experts_per_token": int(top_k),
        "moe_intermediate_size": int(width),
        "shared_expert_intermediate_size": int(shared),
        "first_dense_layers": dense,
    }


def _leading_dense_layers(config: dict, name: str) -> int:
    """Qwen's dense layers (`mlp_only_layers`, or off the `decoder_sparse_step` grid) as a count of
    leading layers; other arrangements are refused."""
    layers = config["num_hidden_layers"]
    step = config.get("decoder_sparse_step") or 1
    only = set(config.get("mlp_only_layers") or [])
    dense = [i for i in range(layers) if i in only or (i + 1) % step != 0]
    if dense != list(range(len(dense))):
        raise ConfigError(
            f"{name}: dense layers {dense} (mlp_only_layers {sorted(only)}, decoder_sparse_step {step}) are not "
            "the leading layers; supported: dense layers 0..n-1 followed by MoE layers"
        )
    return len(dense)


def variant_from_config(config: dict) -> Variant:
    model_type = config.get("model_type", "llama")
    if model_type == "mixtral":
        return Variant(normalize_top_k=True)
    if model_type == "qwen2_moe":
        return Variant(
            normalize_top_k=bool(config.get("norm_topk_prob", False)),
            shared_expert_gate=bool(config.get("shared_expert_intermediate_size")),
        )
    if model_type == "qwen3_moe":
        return Variant(qk_norm=True, normalize_top_k=bool(config.get("norm_topk_prob", False)))
    return Variant()


def moe_layer_map(spec: ModelSpec, model_type: str, layer: int) -> dict[str, tuple[str, Index]]:
    """Checkpoint tensor name -> (model parameter, part of it) for the feed-forward block of a MoE layer."""
    hf, ours = f"model.layers.{layer}.", f"layers.{layer}.mlp."
    width = spec.moe_intermediate_size
    gate, up = slice(0, width), slice(width, 2 * width)
    if model_type == "mixtral":
        block, names = f"{hf}block_sparse_moe.", ("w1", "w3", "w2")
    else:
        block, names = f"{hf}mlp.", ("gate_proj", "up_proj", "down_proj")
    mapping = {f"{block}gate.weight": (f"{ours}router.weight", None)}
    for j in range(spec.num_experts):
        expert = f"{block}experts.{j}."
        mapping[f"{expert}{names[0]}.weight"] = (f"{ours}w_gate_up", (j, gate))
        mapping[f"{expert}{names[1]}.weight"] = (f"{ours}w_gate_up", (j, up))
        mapping[f"{expert}{names[2]}.weight"] = (f"{ours}w_down", j)
    shared = spec.shared_expert_intermediate_size
    if shared:
        mapping[f"{block}shared_expert.gate_proj.weight"] = (f"{ours}shared_expert.gate_up_proj.weight",
                                                              slice(0, shared))  # fmt: skip
        mapping[f"{block}shared_expert.up_proj.weight"] = (f"{ours}shared_expert.gate_up_proj.weight",
                                                            slice(shared, 2 * shared))  # fmt: skip
        mapping[f"{block}shared_expert.down_proj.weight"] = (f"{ours}shared_expert.down_proj.weight", None)
        if model_type == "qwen2_moe":
            mapping[f"{block}shared_expert_gate.weight"] = (f"{ours}shared_expert_gate.weight", None)
    return mapping

"""Small mixture-of-experts checkpoints in Hugging Face layouts, and a plain reference forward.

The reference reads the checkpoint's own tensors by their Hugging Face names and runs whole
sequences in float64: causal attention over every position, and each token's feed-forward as a
loop over the experts its router picked (no batching, no sorting, no stacking), so it shares no
code with the engine.
"""

import json
import math

import torch
from safetensors.torch import save_file

BASE = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 101,
    "max_position_embeddings": 128,
    "rope_theta": 1000.0,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
}
MIXTRAL = {**BASE, "model_type": "mixtral", "num_hidden_layers": 2, "intermediate_size": 48,
           "num_local_experts": 8, "num_experts_per_tok": 2, "tie_word_embeddings": False}
# A dense first layer, a gated shared expert, top-3 of 6 without renormalising, q/k/v biases, tied head.
QWEN2_MOE = {**BASE, "model_type": "qwen2_moe", "num_hidden_layers": 3, "num_key_value_heads": 4,
             "intermediate_size": 96, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 80,
             "num_experts": 6, "num_experts_per_tok": 3, "norm_topk_prob": False, "mlp_only_layers": [0],
             "decoder_sparse_step": 1, "tie_word_embeddings": True}
# q/k norms per head, a head_dim that is not hidden / heads, renormalised top-2 of 8.
QWEN3_MOE = {**BASE, "model_type": "qwen3_moe", "num_hidden_layers": 2, "head_dim": 24, "intermediate_size": 96,
             "moe_intermediate_size": 32, "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": True,
             "tie_word_embeddings": False}  # fmt: skip
LAYOUTS = {"mixtral": MIXTRAL, "qwen2_moe": QWEN2_MOE, "qwen3_moe": QWEN3_MOE}


def head_dim(config: dict) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def dense_layers(config: dict) -> set[int]:
    return set(config.get("mlp_only_layers") or [])


def expert_names(config: dict) -> tuple[str, tuple[str, str, str]]:
    """The MoE block's prefix and the names of an expert's gate, up and down projections."""
    if config["model_type"] == "mixtral":
        return "block_sparse_moe.", ("w1", "w3", "w2")
    return "mlp.", ("gate_proj", "up_proj", "down_proj")


def random_tensors(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint of this config, in Hugging Face names and shapes."""
    gen = torch.Generator().manual_seed(seed)
    h, vocab, d = config["hidden_size"], config["vocab_size"], head_dim(config)
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    qwen2 = config["model_type"] == "qwen2_moe"

    def rand(*shape, std=0.15):
        return torch.randn(shape, generator=gen) * std

    t = {"model.embed_tokens.weight": rand(vocab, h, std=1.0), "model.norm.weight": 1 + rand(h)}
    if not config["tie_word_embeddings"]:
        t["lm_head.weight"] = rand(vocab, h)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name, rows in (("q", heads * d), ("k", kv_heads * d), ("v", kv_heads * d)):
            t[f"{p}self_attn.{name}_proj.weight"] = rand(rows, h)
            if qwen2:
                t[f"{p}self_attn.{name}_proj.bias"] = rand(rows)
        t[f"{p}self_attn.o_proj.weight"] = rand(h, heads * d)
        if config["model_type"] == "qwen3_moe":
            t[f"{p}self_attn.q_norm.weight"] = 1 + rand(d)
            t[f"{p}self_attn.k_norm.weight"] = 1 + rand(d)
        t[f"{p}input_layernorm.weight"] = 1 + rand(h)
        t[f"{p}post_attention_layernorm.weight"] = 1 + rand(h)
        if i in dense_layers(config):
            inter = config["intermediate_size"]
            t[f"{p}mlp.gate_proj.weight"], t[f"{p}mlp.up_proj.weight"] = rand(inter, h), rand(inter, h)
            t[f"{p}mlp.down_proj.weight"] = rand(h, inter)
            continue
        block, (gate, up, down) = expert_names(config)
        experts = config.get("num_local_experts") or config["num_experts"]
        width = config.get("moe_intermediate_size") or config["intermediate_size"]
        t[f"{p}{block}gate.weight"] = rand(experts, h)
        for j in range(experts):
            e = f"{p}{block}experts.{j}."
            t[f"{e}{gate}.weight"], t[f"{e}{up}.weight"] = rand(width, h), rand(width, h)
            t[f"{e}{down}.weight"] = rand(h, width)
        shared = config.get("shared_expert_intermediate_size")
        if qwen2 and shared:
            s = f"{p}mlp.shared_expert."
            t[f"{s}gate_proj.weight"], t[f"{s}up_proj.weight"] = rand(shared, h), rand(shared, h)
            t[f"{s}down_proj.weight"] = rand(h, shared)
            t[f"{p}mlp.shared_expert_gate.weight"] = rand(1, h)
    return t


def write_checkpoint(folder, config: dict, tensors: dict, shards: int = 1):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    names = sorted(tensors)
    if shards == 1:
        save_file({n: tensors[n].contiguous() for n in names}, folder / "model.safetensors")
        return folder
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in names[s::shards]}, folder / file)
        weight_map.update(dict.fromkeys(names[s::shards], file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def reference_logits(t: dict, config: dict, ids: list[int]) -> torch.Tensor:
    """Logits [len(ids), vocab] of a whole sequence, float64, straight from the checkpoint's tensors."""
    t = {k: v.double() for k, v in t.items()}
    heads, kv_heads, d = config["num_attention_heads"], config["num_key_value_heads"], head_dim(config)
    eps, n = config["rms_norm_eps"], len(ids)
    top_k = config["num_experts_per_tok"]
    normalize = config["model_type"] == "mixtral" or config.get("norm_topk_prob", False)

    def rms_norm(x, w):
        return w * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    def proj(name, x):
        out = x @ t[f"{name}.weight"].T
        return out + t[f"{name}.bias"] if f"{name}.bias" in t else out

    def gated(prefix, names, x):
        gate, up, down = (f"{prefix}{n}" for n in names)
        return proj(down, torch.nn.functional.silu(proj(gate, x)) * proj(up, x))

    def rotate_half(x):
        return torch.cat([-x[..., d // 2 :], x[..., : d // 2]], dim=-1)

    inv_freq = 1.0 / config["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.outer(torch.arange(n, dtype=torch.float64), inv_freq)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    causal = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)
    x = t["model.embed_tokens.weight"][ids]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, t[f"{p}input_layernorm.weight"])
        q = proj(f"{p}self_attn.q_proj", h).view(n, heads, d)
        k = proj(f"{p}self_attn.k_proj", h).view(n, kv_heads, d)
        v = proj(f"{p}self_attn.v_proj", h).view(n, kv_heads, d)
        if f"{p}self_attn.q_norm.weight" in t:
            q, k = rms_norm(q, t[f"{p}self_attn.q_norm.weight"]), rms_norm(k, t[f"{p}self_attn.k_norm.weight"])
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv_heads, dim=0)
        v = v.repeat_interleave(heads // kv_heads, dim=0)
        attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d) + causal, dim=-1) @ v
        x = x + proj(f"{p}self_attn.o_proj", attn.transpose(0, 1).reshape(n, heads * d))
        h = rms_norm(x, t[f"{p}post_attention_layernorm.weight"])
        if i in dense_layers(config):
            x = x + gated(f"{p}mlp.", ("gate_proj", "up_proj", "down_proj"), h)
            continue
        block, names = expert_names(config)
        out = torch.zeros_like(h)
        for row in range(n):  # token by token, expert by expert
            probs = torch.softmax(h[row] @ t[f"{p}{block}gate.weight"].T, dim=-1)
            weights, experts = torch.topk(probs, top_k)
            if normalize:
                weights = weights / weights.sum()
            for w, e in zip(weights, experts.tolist()):
                out[row] += w * gated(f"{p}{block}experts.{e}.", names, h[row])
            if f"{p}mlp.shared_expert.down_proj.weight" in t:
                shared = gated(f"{p}mlp.shared_expert.", ("gate_proj", "up_proj", "down_proj"), h[row])
                out[row] += torch.sigmoid(h[row] @ t[f"{p}mlp.shared_expert_gate.weight"][0]) * shared
        x = x + out
    x = rms_norm(x, t["model.norm.weight"])
    return x @ t.get("lm_head.weight", t["model.embed_tokens.weight"]).T

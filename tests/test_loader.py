"""Loading Hugging Face-layout checkpoints: logits match a plain reference forward; errors are clear."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from backend.loader import load_checkpoint, read_spec, spec_from_config
from backend.model import StepBatch
from simulator.common.errors import ConfigError

LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 96,
    "vocab_size": 101,
    "max_position_embeddings": 64,
    "rope_theta": 1000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
}
# Qwen2: biases on q/k/v, tied embeddings, and a head_dim that is not hidden_size / heads.
QWEN2 = {
    **LLAMA,
    "model_type": "qwen2",
    "tie_word_embeddings": True,
    "head_dim": 24,
    "num_key_value_heads": 1,
}


def random_tensors(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint in Hugging Face names and shapes."""
    gen = torch.Generator().manual_seed(seed)
    h, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    d = config.get("head_dim") or h // heads
    bias = config["model_type"] == "qwen2"

    def rand(*shape, std=0.15):
        return torch.randn(shape, generator=gen) * std

    t = {"model.embed_tokens.weight": rand(vocab, h, std=1.0), "model.norm.weight": 1 + rand(h)}
    if not config["tie_word_embeddings"]:
        t["lm_head.weight"] = rand(vocab, h)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name, rows in (("q", heads * d), ("k", kv_heads * d), ("v", kv_heads * d)):
            t[f"{p}self_attn.{name}_proj.weight"] = rand(rows, h)
            if bias:
                t[f"{p}self_attn.{name}_proj.bias"] = rand(rows)
        t[f"{p}self_attn.o_proj.weight"] = rand(h, heads * d)
        t[f"{p}mlp.gate_proj.weight"] = rand(inter, h)
        t[f"{p}mlp.up_proj.weight"] = rand(inter, h)
        t[f"{p}mlp.down_proj.weight"] = rand(h, inter)
        t[f"{p}input_layernorm.weight"] = 1 + rand(h)
        t[f"{p}post_attention_layernorm.weight"] = 1 + rand(h)
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
        part = names[s::shards]
        save_file({n: tensors[n].contiguous() for n in part}, folder / file)
        weight_map.update(dict.fromkeys(part, file))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return folder


def reference_logits(t: dict, config: dict, ids: list[int]) -> torch.Tensor:
    """Plain full-sequence Llama forward in float64, straight from the Hugging Face tensors."""
    t = {k: v.double() for k, v in t.items()}
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    d = config.get("head_dim") or config["hidden_size"] // heads
    eps, n = config["rms_norm_eps"], len(ids)

    def rms_norm(x, w):
        return w * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)

    def rotate_half(x):
        return torch.cat([-x[..., d // 2 :], x[..., : d // 2]], dim=-1)

    inv_freq = 1.0 / config["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = torch.outer(torch.arange(n, dtype=torch.float64), inv_freq)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    causal = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)

    x = t["model.embed_tokens.weight"][ids]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."

        def proj(name, inp, p=p):
            out = inp @ t[f"{p}{name}.weight"].T
            return out + t[f"{p}{name}.bias"] if f"{p}{name}.bias" in t else out

        h = rms_norm(x, t[f"{p}input_layernorm.weight"])
        q = proj("self_attn.q_proj", h).view(n, heads, d).transpose(0, 1)
        k = proj("self_attn.k_proj", h).view(n, kv_heads, d).transpose(0, 1)
        v = proj("self_attn.v_proj", h).view(n, kv_heads, d).transpose(0, 1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv_heads, dim=0)
        v = v.repeat_interleave(heads // kv_heads, dim=0)
        attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d) + causal, dim=-1) @ v
        x = x + proj("self_attn.o_proj", attn.transpose(0, 1).reshape(n, heads * d))
        h = rms_norm(x, t[f"{p}post_attention_layernorm.weight"])
        gate, up = proj("mlp.gate_proj", h), proj("mlp.up_proj", h)
        x = x + proj("mlp.down_proj", torch.nn.functional.silu(gate) * up)
    x = rms_norm(x, t["model.norm.weight"])
    head = t.get("lm_head.weight", t["model.embed_tokens.weight"])
    return x @ head.T


def model_logits(model, ids: list[int]) -> torch.Tensor:
    kv = model.make_kv_cache(num_blocks=8, block_size=4)
    return model(StepBatch([ids], [0], [[5, 1, 7, 3, 0, 6, 2, 4]]), kv, all_logits=True)


@pytest.mark.parametrize("config,shards", [(LLAMA, 2), (QWEN2, 1)], ids=["llama-sharded", "qwen2-tied"])
def test_loaded_model_matches_reference_forward(tmp_path, config, shards):
    tensors = random_tensors(config)
    folder = write_checkpoint(tmp_path / "ckpt", config, tensors, shards)
    model = load_checkpoint(folder, dtype="fp32", device="cpu")
    ids = [3, 17, 99, 42, 0, 8, 8, 64, 23, 5, 71]
    expected = reference_logits(tensors, config, ids).float()
    torch.testing.assert_close(model_logits(model, ids), expected, atol=1e-4, rtol=1e-4)
    # The same logits when the prompt is split: a prefill chunk, then decode steps.
    kv = model.make_kv_cache(num_blocks=8, block_size=4)
    table = [6, 0, 3]
    model(StepBatch([ids[:7]], [0], [table]), kv)
    for pos in range(7, len(ids)):
        step = model(StepBatch([[ids[pos]]], [pos], [table]), kv)
        torch.testing.assert_close(step[0], expected[pos], atol=1e-4, rtol=1e-4)


def test_config_maps_to_spec():
    spec = spec_from_config(QWEN2, name="q")
    assert (spec.num_layers, spec.hidden_size, spec.num_heads, spec.num_kv_heads) == (2, 64, 4, 1)
    assert (spec.head_dim, spec.intermediate_size, spec.vocab_size, spec.max_context) == (24, 96, 101, 64)
    assert spec.attention_bias and spec.tie_embeddings
    assert spec.rope_theta == 1000.0 and spec.rms_norm_eps == 1e-5
    llama = spec_from_config({k: v for k, v in LLAMA.items() if k != "num_key_value_heads"})
    assert llama.num_kv_heads == 4 and llama.head_dim == 16 and not llama.attention_bias


def test_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        read_spec(tmp_path / "empty")
    with pytest.raises(ConfigError, match="lacks hidden_size, vocab_size"):
        spec_from_config({k: v for k, v in LLAMA.items() if k not in ("hidden_size", "vocab_size")})
    with pytest.raises(ConfigError, match="model_type 'gpt2' is not supported"):
        spec_from_config({**LLAMA, "model_type": "gpt2"})

    tensors = random_tensors(LLAMA)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps(LLAMA))
    with pytest.raises(ConfigError, match="no \\*.safetensors"):
        load_checkpoint(no_weights, device="cpu")

    missing = {k: v for k, v in tensors.items() if k != "model.layers.1.mlp.up_proj.weight"}
    with pytest.raises(ConfigError, match="lacks tensor\\(s\\) model.layers.1.mlp.up_proj.weight"):
        load_checkpoint(write_checkpoint(tmp_path / "missing", LLAMA, missing), device="cpu")

    bad = {**tensors, "model.layers.0.self_attn.k_proj.weight": torch.zeros(16, 64)}
    with pytest.raises(
        ConfigError, match=r"model.layers.0.self_attn.k_proj.weight .* \[16, 64\], .* \[32, 64\]"
    ):
        load_checkpoint(write_checkpoint(tmp_path / "bad", LLAMA, bad), device="cpu")

    extra = {**tensors, "model.layers.2.mlp.up_proj.weight": torch.zeros(96, 64)}
    with pytest.raises(ConfigError, match="does not account for: model.layers.2"):
        load_checkpoint(write_checkpoint(tmp_path / "extra", LLAMA, extra), device="cpu")

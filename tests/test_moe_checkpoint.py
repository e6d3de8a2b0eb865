"""Mixture-of-experts checkpoints: each supported key layout loads (sharded too) and computes the
reference's logits; config.json maps onto the spec's expert fields; errors name what is wrong."""

import pytest
import torch
from moe_reference import (
    LAYOUTS,
    MIXTRAL,
    QWEN2_MOE,
    QWEN3_MOE,
    random_tensors,
    reference_logits,
    write_checkpoint,
)

from backend.loader import load_checkpoint, spec_from_config
from backend.model import StepBatch
from backend.moe_checkpoint import variant_from_config
from simulator.common.errors import ConfigError


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_layout_loads_from_shards_and_matches_the_reference(tmp_path, layout):
    config = LAYOUTS[layout]
    tensors = random_tensors(config, seed=7)
    model = load_checkpoint(write_checkpoint(tmp_path / layout, config, tensors, shards=3), device="cpu")
    ids = [3, 17, 99, 42, 0, 8, 8, 64, 23, 5, 71]
    kv = model.make_kv_cache(num_blocks=8, block_size=4)
    logits = model(StepBatch([ids], [0], [[5, 1, 7, 3, 0, 6, 2, 4]]), kv, all_logits=True)
    torch.testing.assert_close(logits, reference_logits(tensors, config, ids).float(), atol=2e-4, rtol=2e-4)


def test_config_json_maps_onto_the_spec_and_variant():
    mixtral = spec_from_config(MIXTRAL)
    assert (mixtral.num_experts, mixtral.num_experts_per_token, mixtral.moe_intermediate_size) == (8, 2, 48)
    assert mixtral.shared_expert_intermediate_size == 0 and mixtral.first_dense_layers == 0
    qwen2 = spec_from_config(QWEN2_MOE)
    assert (qwen2.num_experts, qwen2.num_experts_per_token, qwen2.moe_intermediate_size) == (6, 3, 32)
    assert qwen2.shared_expert_intermediate_size == 80 and qwen2.first_dense_layers == 1
    assert qwen2.intermediate_size == 96 and qwen2.attention_bias and qwen2.tie_embeddings
    qwen3 = spec_from_config(QWEN3_MOE)
    assert qwen3.head_dim == 24 and not qwen3.attention_bias and qwen3.num_moe_layers == 2
    assert variant_from_config(MIXTRAL).normalize_top_k
    v2 = variant_from_config(QWEN2_MOE)
    assert not v2.normalize_top_k and v2.shared_expert_gate and not v2.qk_norm
    v3 = variant_from_config(QWEN3_MOE)
    assert v3.qk_norm and v3.normalize_top_k and not v3.shared_expert_gate
    # decoder_sparse_step 2 over 2 layers: layer 0 dense, layer 1 sparse (Hugging Face's rule)
    assert spec_from_config({**QWEN3_MOE, "decoder_sparse_step": 2}).first_dense_layers == 1


def test_bad_moe_configs_name_the_key():
    with pytest.raises(ConfigError, match="lacks num_local_experts"):
        spec_from_config({k: v for k, v in MIXTRAL.items() if k != "num_local_experts"})
    with pytest.raises(ConfigError, match="lacks num_experts, moe_intermediate_size"):
        spec_from_config({k: v for k, v in QWEN3_MOE.items() if k not in ("num_experts", "moe_intermediate_size")})
    with pytest.raises(ConfigError, match=r"dense layers \[1\].*not the leading layers"):
        spec_from_config({**QWEN2_MOE, "mlp_only_layers": [1]})
    with pytest.raises(ConfigError, match=r"decoder_sparse_step 2"):
        spec_from_config({**QWEN3_MOE, "num_hidden_layers": 4, "decoder_sparse_step": 2})
    with pytest.raises(ConfigError, match="num_experts_per_token must be in 1..8"):
        spec_from_config({**MIXTRAL, "num_experts_per_tok": 9})


def test_missing_or_extra_expert_tensors_are_named(tmp_path):
    tensors = random_tensors(MIXTRAL)
    missing = {k: v for k, v in tensors.items() if k != "model.layers.1.block_sparse_moe.experts.5.w3.weight"}
    with pytest.raises(ConfigError, match=r"lacks tensor\(s\) model.layers.1.block_sparse_moe.experts.5.w3.weight"):
        load_checkpoint(write_checkpoint(tmp_path / "missing", MIXTRAL, missing), device="cpu")
    extra = {**tensors, "model.layers.0.block_sparse_moe.experts.8.w1.weight": torch.zeros(48, 64)}
    with pytest.raises(ConfigError, match="does not account for: model.layers.0.block_sparse_moe.experts.8.w1"):
        load_checkpoint(write_checkpoint(tmp_path / "extra", MIXTRAL, extra), device="cpu")
    bad = {**tensors, "model.layers.0.block_sparse_moe.experts.2.w2.weight": torch.zeros(64, 40)}
    with pytest.raises(ConfigError, match=r"experts.2.w2.weight .* shape \[64, 40\], config.json implies \[64, 48\]"):
        load_checkpoint(write_checkpoint(tmp_path / "bad", MIXTRAL, bad), device="cpu")

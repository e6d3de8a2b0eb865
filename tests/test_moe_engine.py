"""The mixture-of-experts engine: prefill, decode and mixed steps against a per-token reference,
deterministic routing, and the engine serving an MoE model through its usual paths."""

import random

import pytest
import torch
from moe_reference import LAYOUTS, random_tensors, reference_logits, write_checkpoint

from backend import native
from backend.engine import Engine
from backend.loader import load_checkpoint
from backend.model import Llama, StepBatch, build_model
from backend.moe import SparseMoE, route
from backend.runner import ModelRunner
from simulator.common.errors import ConfigError
from simulator.scheduling import SchedulerConfig
from simulator.spec import ModelSpec, get_model

BLOCK = 4
TINY = ModelSpec("tiny-moe", num_layers=3, hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=96,
                 vocab_size=97, max_context=256, num_experts=8, num_experts_per_token=2, moe_intermediate_size=48,
                 first_dense_layers=1)  # fmt: skip


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def checkpoint(request, tmp_path_factory):
    config = LAYOUTS[request.param]
    tensors = random_tensors(config, seed=3)
    folder = write_checkpoint(tmp_path_factory.mktemp(request.param), config, tensors)
    return config, tensors, load_checkpoint(folder, dtype="fp32", device="cpu")


def run_steps(model, config, tensors):
    """Prefill chunks, a mixed step and decode-only steps over four sequences; every row's logits
    checked against the reference of its whole sequence so far."""
    rng = random.Random(0)
    vocab = config["vocab_size"]
    seqs = [[rng.randrange(vocab) for _ in range(n)] for n in (11, 6, 17, 3)]
    done = [0, 0, 0, 0]
    tables = [[3, 9, 1, 20, 7], [5, 6, 2], [30, 31, 32, 12, 13, 14], [11, 15, 16]]
    kv = model.make_kv_cache(num_blocks=40, block_size=BLOCK)

    def step(plan):  # {sequence: new tokens}
        ids = [seqs[i][done[i] : done[i] + n] for i, n in plan.items()]
        batch = StepBatch(ids, [done[i] for i in plan], [tables[i] for i in plan])
        logits = model(batch, kv)
        for row, (i, n) in enumerate(plan.items()):
            done[i] += n
            expected = reference_logits(tensors, config, seqs[i][: done[i]])[-1].float()
            torch.testing.assert_close(logits[row], expected, atol=2e-4, rtol=2e-4)

    step({0: 11, 1: 6, 2: 9})  # whole prompts and a first chunk
    for s in seqs:
        s.extend(rng.randrange(vocab) for _ in range(4))
    step({2: 8, 0: 1, 3: 3, 1: 1})  # a chunk after its cached prefix, decodes, a fresh prompt
    for _ in range(3):  # decode only: the fused native layer where a layer is dense
        step({i: 1 for i in range(4)})


def test_prefill_decode_and_mixed_steps_match_the_per_token_reference(checkpoint):
    config, tensors, model = checkpoint
    run_steps(model, config, tensors)


def test_torch_path_matches_the_reference_too(checkpoint, monkeypatch):
    config, tensors, model = checkpoint
    monkeypatch.setattr(native, "available", lambda: False)
    run_steps(model, config, tensors)


def test_moe_layers_take_torch_path_and_dense_layers_keep_the_fused_kernel():
    model = build_model(TINY, seed=0)
    plans = [layer.native_plan() for layer in model.layers]
    assert isinstance(model.layers[1].mlp, SparseMoE) and plans[1] is None and plans[2] is None
    assert (plans[0] is not None) == native.available()


def test_routing_is_deterministic_and_counts_the_experts_a_step_touches():
    a, b = build_model(TINY, seed=4, std=0.15), build_model(TINY, seed=4, std=0.15)
    table = list(range(8))

    def decode(model, ids):
        kv = model.make_kv_cache(num_blocks=len(ids) * 8, block_size=BLOCK)
        tables = [[8 * i + j for j in table] for i in range(len(ids))]
        return model(StepBatch([[t] for t in ids], [5] * len(ids), tables), kv), model.experts_touched()

    ids = list(range(3, 27))
    first, touched = decode(a, ids)
    again, touched_again = decode(a, ids)
    other, touched_other = decode(b, ids)
    assert torch.equal(first, again) and torch.equal(first, other)
    assert touched == touched_again == touched_other == 8.0  # 24 distinct tokens reach every expert
    _, same = decode(a, [7] * 24)  # identical rows go to the same two experts
    assert same == 2.0


def test_route_keeps_the_top_k_and_renormalises_only_when_asked():
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0], [3.0, 0.0, 0.0, 2.5]])
    weights, experts = route(logits, 2, normalize=False)
    assert experts.tolist() == [[1, 2], [0, 3]]
    torch.testing.assert_close(weights, torch.softmax(logits, -1).topk(2).values)
    weights, _ = route(logits, 2, normalize=True)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2))


def test_the_engine_serves_an_moe_model_with_continuous_batching():
    runner = ModelRunner(TINY, device="cpu", num_blocks=64, block_size=16, seed=1)
    assert runner.expert_weight_bytes == 3 * 64 * 48 * 4  # gate, up and down of one expert, fp32
    prompts = [[5, 9, 2, 44], list(range(10, 40)), [1] * 7]

    def generate(together: bool):
        engine = Engine(ModelRunner(TINY, device="cpu", num_blocks=64, block_size=16, seed=1),
                        SchedulerConfig(block_size=16, max_num_seqs=8))  # fmt: skip
        if together:
            return engine.generate(prompts, max_tokens=6)
        return [engine.generate([p], max_tokens=6)[0] for p in prompts]

    assert generate(True) == generate(False)


def test_int8_is_refused_for_moe_models():
    with pytest.raises(ConfigError, match="int8 is not supported for mixture-of-experts"):
        ModelRunner(TINY, device="cpu", num_blocks=8, quantization="int8")


@pytest.mark.parametrize("name, params", [("moe-60m", 61_362_688), ("moe-shared-30m", 30_701_184)])
def test_catalog_moe_models_have_the_parameters_their_notes_give(name, params):
    spec = get_model(name)
    model = Llama(spec, "fp32", "meta")  # shapes only
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.moe_layers) == spec.num_layers - spec.first_dense_layers

"""The torch model over the paged KV cache: batched, chunked and paged steps match a plain recompute."""

import random

import pytest
import torch

from backend.device import dtype_name, resolve_device, resolve_dtype
from backend.kv_cache import PagedKVCache
from backend.model import StepBatch, build_model
from backend.quant import Int8Linear, quantize_int8, weight_bytes
from simulator.common.errors import ConfigError
from simulator.spec import ModelSpec

SPEC = ModelSpec(
    "tiny",
    num_layers=2,
    hidden_size=64,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=128,
    vocab_size=97,
    max_context=128,
    rope_theta=500.0,
)
BLOCK = 4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # A larger init than the default makes attention peaked, so masking mistakes show in the logits.
    return build_model(SPEC, seed=1, std=0.15)


def recompute(model, tokens: list[int], all_logits: bool = False) -> torch.Tensor:
    """Logits of a sequence computed alone, in one step, on a fresh cache."""
    kv = model.make_kv_cache(num_blocks=-(-len(tokens) // BLOCK), block_size=BLOCK)
    table = list(range(kv.num_blocks))
    return model(StepBatch([tokens], [0], [table]), kv, all_logits=all_logits)


class Allocator:
    """Hands out block ids in a shuffled order, so every block table is scattered over the cache."""

    def __init__(self, num_blocks: int, seed: int = 0):
        self.free = list(range(num_blocks))
        random.Random(seed).shuffle(self.free)

    def grow(self, table: list[int], num_tokens: int) -> list[int]:
        while len(table) * BLOCK < num_tokens:
            table.append(self.free.pop())
        return table


def test_mixed_chunked_and_decode_steps_match_recompute(model):
    rng = random.Random(0)
    prompts = [[rng.randrange(SPEC.vocab_size) for _ in range(n)] for n in (13, 7, 21, 1, 5)]
    kv = model.make_kv_cache(num_blocks=64, block_size=BLOCK)
    alloc = Allocator(64)
    seqs = [{"tokens": [], "todo": list(p), "table": []} for p in prompts]

    def step(plan):
        """plan: {seq index: new tokens to run}; checks every sequence's last logits."""
        token_ids, cached, tables = [], [], []
        for i, n in plan.items():
            s = seqs[i]
            new, s["todo"] = s["todo"][:n], s["todo"][n:]
            token_ids.append(new)
            cached.append(len(s["tokens"]))
            s["tokens"] = s["tokens"] + new
            tables.append(alloc.grow(s["table"], len(s["tokens"])))
        logits = model(StepBatch(token_ids, cached, tables), kv)
        assert logits.shape == (len(plan), SPEC.vocab_size)
        for row, i in enumerate(plan):
            expected = recompute(model, seqs[i]["tokens"])[0]
            torch.testing.assert_close(logits[row], expected, atol=1e-4, rtol=1e-4)
        return logits

    step({0: 13, 2: 8, 1: 3})  # a whole prompt, and first chunks of two others
    step({4: 5, 2: 6, 1: 4})  # chunks continuing after a cached prefix
    for s in seqs:  # one sampled token each (a random one: values do not matter here)
        s["todo"].append(rng.randrange(SPEC.vocab_size))
    # Decodes interleaved with prefill chunks in one step (decode rows are not contiguous).
    step({0: 1, 2: 7, 1: 1, 3: 1, 4: 1})
    for _ in range(4):  # decode only
        for s in seqs:
            s["todo"].append(rng.randrange(SPEC.vocab_size))
        step({i: 1 for i in range(len(seqs))})
    assert all(len(s["table"]) * BLOCK >= len(s["tokens"]) for s in seqs)


def test_all_logits_of_a_chunk_after_a_cached_prefix(model):
    tokens = list(range(3, 30))
    kv = model.make_kv_cache(num_blocks=16, block_size=BLOCK)
    table = [9, 2, 14, 5, 0, 11, 7, 3]
    model(StepBatch([tokens[:10]], [0], [table]), kv)
    chunk = model(StepBatch([tokens[10:]], [10], [table]), kv, all_logits=True)
    torch.testing.assert_close(chunk, recompute(model, tokens, all_logits=True)[10:], atol=1e-4, rtol=1e-4)


def test_step_batch_checks_its_inputs(model):
    kv = model.make_kv_cache(num_blocks=4, block_size=BLOCK)
    with pytest.raises(ValueError, match="need 2 blocks"):
        model(StepBatch([[1, 2, 3]], [3], [[0]]), kv)
    with pytest.raises(ValueError, match="one entry per sequence"):
        StepBatch([[1]], [0, 0], [[0]])
    with pytest.raises(ValueError, match="max_context"):
        model(StepBatch([[1]], [SPEC.max_context], [[0] * 40]), kv)
    batch = StepBatch.of([([1, 2], 0, [0]), ([3], 5, [1, 2])])
    assert (batch.num_seqs, batch.num_tokens) == (2, 3)


def test_kv_cache_sizes_and_read_back():
    kv = PagedKVCache(
        num_layers=3, num_blocks=10, block_size=4, num_kv_heads=2, head_dim=8, dtype=torch.bfloat16
    )
    assert kv.bytes_per_token == 2 * 3 * 2 * 8 * 2
    assert kv.total_bytes == kv.bytes_per_token * 40 == kv.k.nbytes + kv.v.nbytes
    k, v = torch.randn(6, 2, 8).bfloat16(), torch.randn(6, 2, 8).bfloat16()
    table = [7, 2]
    slots = torch.tensor([table[p // 4] * 4 + p % 4 for p in range(6)])
    kv.write(1, slots, k, v)
    k_back, v_back = kv.read(1, table, 6)
    assert torch.equal(k_back, k) and torch.equal(v_back, v)
    assert PagedKVCache.for_model(SPEC, 8).bytes_per_token == SPEC.kv_bytes_per_token("fp32")


def test_seeded_weights_are_reproducible_and_tied_head_works():
    tied = ModelSpec(**{**SPEC.__dict__, "name": "tied", "tie_embeddings": True, "attention_bias": True})
    a, b = build_model(tied, seed=3), build_model(tied, seed=3)
    assert a.lm_head is None
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    logits = recompute(a, [1, 2, 3])
    assert torch.isfinite(logits).all()
    assert sum(p.numel() for p in a.parameters()) == tied.num_params


def test_int8_quantised_model_is_close_and_four_times_smaller(model):
    quantised = build_model(SPEC, seed=1, std=0.15)
    before = weight_bytes(quantised, linear_only=True)
    quantize_int8(quantised)
    after = weight_bytes(quantised, linear_only=True)
    scales = sum(m.scale.nbytes for m in quantised.modules() if isinstance(m, Int8Linear))
    assert after - scales == before / 4  # int8 weights; plus one fp32 scale per output channel
    assert before / after > 3.5
    assert all(isinstance(m, Int8Linear) for m in (quantised.lm_head, quantised.layers[0].mlp.down_proj))
    assert weight_bytes(quantised) < weight_bytes(model)

    tokens = list(range(40, 75))
    reference = recompute(model, tokens, all_logits=True)
    for logits in (recompute(quantised, tokens, all_logits=True), recompute(quantised, tokens)):
        ref = reference[-len(logits) :]
        assert ((logits - ref).norm() / ref.norm()).item() < 0.03
    dequant = quantize_int8(build_model(SPEC, seed=1, std=0.15), kernel="dequant")
    ref = reference[-1:]
    assert ((recompute(dequant, tokens) - ref).norm() / ref.norm()).item() < 0.03


def test_device_and_dtype_names():
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("bf16") is torch.bfloat16 and resolve_dtype(torch.float16) is torch.float16
    assert dtype_name(torch.float32) == "fp32"
    with pytest.raises(ConfigError, match="unknown dtype"):
        resolve_dtype("fp12")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu:9")


def test_half_precision_decode_matches_recompute():
    model = build_model(SPEC, seed=2, std=0.15, dtype="bf16")
    kv = model.make_kv_cache(num_blocks=16, block_size=BLOCK)
    tokens = list(range(5, 25))
    model(StepBatch([tokens[:-1]], [0], [[3, 8, 1, 12, 6]]), kv)
    step = model(StepBatch([tokens[-1:]], [len(tokens) - 1], [[3, 8, 1, 12, 6]]), kv)
    expected = recompute(model, tokens)
    assert ((step.float() - expected.float()).norm() / expected.float().norm()).item() < 0.02

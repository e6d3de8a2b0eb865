"""The native CPU kernels: each matches its torch reference, refuses what would read or write out of
bounds, and the model gives the same logits with and without them."""

import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from backend import native
from backend.fused_decode import LayerPlan
from backend.kv_cache import PagedKVCache
from backend.model import StepBatch, apply_rope, build_model, rope_tables
from simulator.spec import ModelSpec

if native.library() is None:
    if shutil.which("cc") or shutil.which("gcc"):
        raise AssertionError(f"a C compiler is here but the native kernels are not: {native.status()}")
    pytest.skip(f"no C compiler: {native.status()}", allow_module_level=True)


@pytest.fixture(params=[1, 2], ids=["1 thread", "2 threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 17, 32])
@pytest.mark.parametrize("n,k", [(1, 16), (17, 100), (96, 768), (131, 70)])
def test_skinny_linear_matches_f_linear(threads, rows, n, k):
    gen = torch.Generator().manual_seed(n * k + rows)
    x, w, b = (
        torch.randn(rows, k, generator=gen),
        torch.randn(n, k, generator=gen),
        torch.randn(n, generator=gen),
    )
    torch.testing.assert_close(native.skinny_linear(x, w), F.linear(x, w), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(native.skinny_linear(x, w, b), F.linear(x, w, b), atol=1e-4, rtol=1e-4)
    # a non-contiguous input (a column slice) is read correctly
    wide = torch.randn(rows, k + 8, generator=gen)
    torch.testing.assert_close(
        native.skinny_linear(wide[:, 3 : 3 + k], w), F.linear(wide[:, 3 : 3 + k], w), atol=1e-4, rtol=1e-4
    )


def test_skinny_linear_refuses_too_many_rows_or_mismatched_shapes():
    with pytest.raises(ValueError, match="1 to 32 rows"):
        native.skinny_linear(torch.randn(native.MAX_ROWS + 1, 8), torch.randn(4, 8))
    with pytest.raises(ValueError, match="columns"):
        native.skinny_linear(torch.randn(1, 8), torch.randn(4, 9))


def paged_case(lengths, heads=6, kv_heads=2, head_dim=32, block=4, seed=0):
    """A cache with random K/V, scattered block tables, and the same contexts gathered densely."""
    gen = torch.Generator().manual_seed(seed)
    width = max(-(-n // block) for n in lengths)
    num_blocks = len(lengths) * width + 3
    kv = PagedKVCache(1, num_blocks, block, kv_heads, head_dim)
    kv.k.copy_(torch.randn(kv.k.shape, generator=gen))
    kv.v.copy_(torch.randn(kv.v.shape, generator=gen))
    tables = torch.randperm(num_blocks, generator=gen)[: len(lengths) * width].view(len(lengths), width)
    q = torch.randn(len(lengths), heads, head_dim, generator=gen)
    return kv, tables, torch.tensor(lengths), q


def reference_decode_attention(q, kv, tables, lengths):
    out = []
    for b, n in enumerate(lengths.tolist()):
        k, v = kv.gather(0, tables[b])
        k, v = k[:n].transpose(0, 1), v[:n].transpose(0, 1)  # [kv_heads, n, d]
        out.append(F.scaled_dot_product_attention(q[b].unsqueeze(1), k, v, enable_gqa=True).squeeze(1))
    return torch.stack(out)


@pytest.mark.parametrize("head_dim", [16, 32, 64])
def test_paged_decode_attention_matches_dense_attention(threads, head_dim):
    kv, tables, lengths, q = paged_case([1, 4, 5, 17, 33], head_dim=head_dim)
    got = native.paged_decode_attention(q, kv.k[0], kv.v[0], tables, lengths)
    torch.testing.assert_close(got, reference_decode_attention(q, kv, tables, lengths), atol=1e-5, rtol=1e-4)


def test_paged_decode_attention_softmax_survives_large_scores():
    kv, tables, lengths, q = paged_case([9, 30])
    kv.k.mul_(40)  # scores in the hundreds: a softmax without the max subtracted would overflow
    got = native.paged_decode_attention(q, kv.k[0], kv.v[0], tables, lengths)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, reference_decode_attention(q, kv, tables, lengths), atol=1e-4, rtol=1e-3)


def test_paged_decode_attention_refuses_out_of_range_tables():
    kv, tables, lengths, q = paged_case([5, 8])
    with pytest.raises(ValueError, match="outside"):
        native.paged_decode_attention(q, kv.k[0], kv.v[0], tables, torch.tensor([5, 999]))
    bad = tables.clone()
    bad[1, 0] = kv.num_blocks  # one past the last block
    with pytest.raises(ValueError, match="outside"):
        native.paged_decode_attention(q, kv.k[0], kv.v[0], bad, lengths)
    with pytest.raises(ValueError, match="multiple of 16"):
        kv12 = PagedKVCache(1, 4, 4, 2, 12)
        native.paged_decode_attention(
            torch.randn(1, 4, 12), kv12.k[0], kv12.v[0], tables[:1], torch.tensor([3])
        )


@pytest.mark.parametrize("rows", [1, 3, 200])
def test_add_rms_norm_adds_in_place_and_normalises(threads, rows):
    gen = torch.Generator().manual_seed(rows)
    residual, delta = torch.randn(rows, 384, generator=gen), torch.randn(rows, 384, generator=gen)
    weight = torch.rand(384, generator=gen) + 0.5
    expected_sum = residual + delta
    out = native.add_rms_norm(residual, delta, weight, 1e-5)
    torch.testing.assert_close(residual, expected_sum)
    torch.testing.assert_close(out, F.rms_norm(expected_sum, (384,), weight, 1e-5), atol=1e-5, rtol=1e-5)
    alone = native.add_rms_norm(residual, None, weight, 1e-5)  # no delta: residual untouched
    torch.testing.assert_close(residual, expected_sum)
    torch.testing.assert_close(alone, out)


def test_rope_and_cache_matches_torch_rotation_and_cache_write(threads):
    heads, kv_heads, d, tokens = 4, 2, 32, 70
    gen = torch.Generator().manual_seed(3)
    cos, sin = rope_tables(d, 256, 10000.0)
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * d, generator=gen)
    positions = torch.randint(0, 256, (tokens,), generator=gen)
    slots = torch.randperm(128, generator=gen)[:tokens]
    expected = PagedKVCache(1, 32, 4, kv_heads, d)
    qk = apply_rope(
        qkv[:, : (heads + kv_heads) * d].view(tokens, heads + kv_heads, d),
        cos[positions, None],
        sin[positions, None],
    )
    v = qkv[:, (heads + kv_heads) * d :].view(tokens, kv_heads, d)
    expected.write(0, slots, qk[:, heads:], v)

    got = PagedKVCache(1, 32, 4, kv_heads, d)
    native.rope_and_cache_(qkv, heads, kv_heads, positions, cos, sin, slots, got.k[0], got.v[0])
    torch.testing.assert_close(qkv[:, : (heads + kv_heads) * d].view_as(qk), qk, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.k, expected.k, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.v, expected.v)


def test_rope_and_cache_writes_nothing_for_an_out_of_range_slot():
    cos, sin = rope_tables(16, 8, 10000.0)
    kv = PagedKVCache(1, 2, 4, 1, 16)
    qkv = torch.randn(2, 3 * 16)
    before = qkv.clone()
    with pytest.raises(ValueError, match="outside"):
        native.rope_and_cache_(
            qkv, 1, 1, torch.tensor([0, 1]), cos, sin, torch.tensor([0, 8]), kv.k[0], kv.v[0]
        )
    with pytest.raises(ValueError, match="outside"):
        native.rope_and_cache_(
            qkv, 1, 1, torch.tensor([0, 8]), cos, sin, torch.tensor([0, 1]), kv.k[0], kv.v[0]
        )
    assert torch.equal(qkv, before) and not kv.k.any() and not kv.v.any()


def test_silu_mul_matches_torch_including_large_inputs(threads):
    gen = torch.Generator().manual_seed(5)
    gate_up = torch.randn(7, 2 * 100, generator=gen) * 4  # width 100: a vector tail of 4
    gate_up[0, :6] = torch.tensor([-200.0, -90.0, -30.0, 30.0, 90.0, 200.0])
    gate, up = gate_up.chunk(2, dim=-1)
    got = native.silu_mul(gate_up)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, F.silu(gate) * up, atol=1e-5, rtol=1e-5)


SPEC = ModelSpec(
    "tiny-native", num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, intermediate_size=96,
    vocab_size=61, max_context=64, rope_theta=500.0,
)  # fmt: skip


def test_model_gives_the_same_logits_with_and_without_native_kernels(monkeypatch):
    """A prefill chunk after a cached prefix, decodes and a fresh prefill in one step, then a
    decode-only step (the whole-layer kernel): the native path, every kernel used and counted,
    against torch's."""
    model = build_model(SPEC, seed=2, std=0.15)
    used = {}

    def count(owner, name):
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            used[name] = used.get(name, 0) + 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    kernels = ("skinny_linear", "paged_decode_attention", "add_rms_norm", "rope_and_cache_", "silu_mul")
    for name in kernels:
        count(native, name)
    count(LayerPlan, "run")

    def run():
        kv = model.make_kv_cache(num_blocks=40, block_size=4)
        tables = [[3, 9, 1, 20], [5, 6], [30, 31, 32], [11, 12, 13, 14]]
        first = model(
            StepBatch([list(range(1, 10)), [4, 5, 6], [7], list(range(2, 12))], [0, 0, 0, 0], tables), kv
        )
        mixed = model(StepBatch([[3, 4, 5, 6], [8], [9]], [9, 3, 1], tables[:3]), kv)
        decode = model(StepBatch([[1], [2], [3]], [13, 4, 2], tables[:3]), kv)
        return torch.cat([first, mixed, decode])

    with_native = run()
    assert set(used) == {*kernels, "run"}
    monkeypatch.setattr(native, "available", lambda: False)
    calls = sum(used.values())
    torch_only = run()
    assert sum(used.values()) == calls  # the second run used none of them
    torch.testing.assert_close(with_native, torch_only, atol=1e-4, rtol=1e-4)


def test_build_is_cached_and_a_missing_compiler_is_named(tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    first = native.build(tmp_path, compiler)
    stamp = first.stat().st_mtime_ns
    assert native.build(tmp_path, compiler) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary left behind
    with pytest.raises(native.NativeBuildError, match="no-such-cc"):
        native.build(tmp_path / "other", "no-such-cc")


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("LLMSIM_NATIVE_KERNELS", "0")
    native.library.cache_clear()
    try:
        assert native.library() is None and not native.available()
        assert "LLMSIM_NATIVE_KERNELS=0" in native.status()
    finally:
        monkeypatch.delenv("LLMSIM_NATIVE_KERNELS")
        native.library.cache_clear()
    assert native.available()


def test_ctypes_signatures_match_the_c_prototypes():
    """A wrong argument type here would pass garbage to C: check the table against the source."""
    source = Path(native.SOURCE).read_text()
    codes = {"int64_t": "i", "float": "f", "int": "n"}
    for name, signature in native._SIGNATURES.items():
        match = re.search(rf"\n(int|void) {name}\(([^)]*)\)", source)
        assert match, name
        declared = re.sub(r"/\*.*?\*/", "", match.group(2), flags=re.DOTALL)  # comments between parameters
        params = [p.strip() for p in declared.split(",") if p.strip() not in ("", "void")]
        found = ("n" if match.group(1) == "int" else "-") + "".join(
            "p" if "*" in p else codes[p.split()[0]] for p in params
        )
        assert found == signature, name


def decode_step_of(model, kv, rows):
    """StepMetadata and StepArgs of a decode-only step: rows of (token, cached, block table)."""
    from backend.attention import prepare_step
    from backend.fused_decode import StepArgs

    step = prepare_step(
        StepBatch.of([([t], c, table) for t, c, table in rows]), kv.block_size, torch.device("cpu")
    )
    return step, StepArgs.of(step, model.rope_cos, model.rope_sin, kv)


def test_layer_plan_is_remade_when_a_weight_is_replaced_and_dropped_for_int8():
    from backend.quant import quantize_int8

    model = build_model(SPEC, seed=3)
    layer = model.layers[0]
    first = layer.native_plan()
    assert first is not None and layer.native_plan() is first  # cached
    layer.mlp.down_proj.weight = torch.nn.Parameter(torch.zeros_like(layer.mlp.down_proj.weight))
    second = layer.native_plan()
    assert second is not first and second.args != first.args
    quantize_int8(model)
    assert layer.native_plan() is None  # int8 layers take the torch path
    kv = model.make_kv_cache(num_blocks=8, block_size=4)
    assert torch.isfinite(model(StepBatch([[1, 2, 3]], [0], [[0]]), kv)).all()
    assert torch.isfinite(model(StepBatch([[4]], [3], [[0]]), kv)).all()


def test_fused_layer_refuses_what_would_leave_the_cache_and_writes_nothing():
    model = build_model(SPEC, seed=4)
    kv = model.make_kv_cache(num_blocks=6, block_size=4)
    model(StepBatch([[1, 2, 3]], [0], [[2]]), kv)  # a 3-token prompt in block 2
    plan = model.layers[0].native_plan()
    x = torch.randn(1, SPEC.hidden_size)
    before_x, before_k = x.clone(), kv.k.clone()
    _, good = decode_step_of(model, kv, [(7, 3, [2])])
    with pytest.raises(ValueError, match="fused decode layer"):
        plan.run(torch.randn(2, SPEC.hidden_size), good, kv)  # two rows for a one-sequence step
    for bad_table in ([6], [-1]):  # one past the last block; a negative id
        _, bad = decode_step_of(model, kv, [(7, 3, bad_table)])
        with pytest.raises(ValueError, match="outside"):
            plan.run(x, bad, kv)
    assert torch.equal(x, before_x) and torch.equal(kv.k, before_k)
    plan.run(x, good, kv)  # the same call with a valid table goes through
    assert not torch.equal(x, before_x)


def test_fused_decode_of_many_sequences_matches_torch(monkeypatch):
    """Nine sequences decoding together (the tiled matmul, attention over many pairs) give the same
    logits through the fused layer as through torch's ops."""
    model = build_model(SPEC, seed=5, std=0.15)

    def run():
        kv = model.make_kv_cache(num_blocks=64, block_size=4)
        tables = [[2 * i, 2 * i + 1, 40 + i] for i in range(9)]
        prompts = [list(range(1 + i, 3 + i + 2 * i % 7)) for i in range(9)]  # 2 to 8 tokens
        model(StepBatch(prompts, [0] * 9, tables), kv)
        return model(StepBatch([[5 + i] for i in range(9)], [len(p) for p in prompts], tables), kv)

    runs = []
    original = LayerPlan.run
    monkeypatch.setattr(LayerPlan, "run", lambda *a: (runs.append(1), original(*a))[1])
    fused = run()
    assert runs  # the decode step went through the fused layer
    monkeypatch.setattr(native, "available", lambda: False)
    torch.testing.assert_close(fused, run(), atol=1e-4, rtol=1e-4)

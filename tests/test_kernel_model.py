"""The kernel-table step model: interpolation on hand-made tables, shapes, composition, provenance,
fallbacks, decode runs, and the aiconfigurator converter on hand-made files of its layout."""

import importlib.util
from collections import Counter

import numpy as np
import pytest
from aiconfigurator_tree import new_system, write_table

from calibration.fitting.aiconfigurator import convert, write
from simulator.common.errors import ConfigError
from simulator.execution import RooflineModel
from simulator.execution.kernels.gemm import GemmCurves, SpeedOfLight
from simulator.execution.kernels.interpolate import Provenance
from simulator.execution.kernels.op_table import (
    AttentionSlice,
    AttentionTable,
    CollectiveCurve,
    CollectiveTable,
    ElementwiseModel,
    GemmSite,
    GemmTable,
    KernelTables,
    Source,
    format_numbers,
    load_kernel_tables,
)
from simulator.execution.kernels.overhead import HostOverhead
from simulator.execution.kernels.resolve import find_tables
from simulator.execution.kernels.shapes import rank_shapes
from simulator.execution.kernels.step_model import KernelTableModel
from simulator.scenario import execution_model, parse_scenario, run
from simulator.spec import HardwareSpec, ModelSpec, get_hardware, get_model

# A tiny model whose per-rank GEMMs at TP 1 are 512x256 (qkv), 256x256 (o), 1024x256 (gate/up),
# 256x512 (down) and 1024x256 (LM head).
TINY = ModelSpec("tiny", num_layers=2, hidden_size=256, num_heads=4, num_kv_heads=2, intermediate_size=512,
                 vocab_size=1024, max_context=4096, head_dim=64)
GPU = HardwareSpec("tiny-gpu", memory_bytes=8e10, memory_bandwidth=2e12, flops={"fp16": 5e14, "bf16": 5e14},
                   interconnect_bandwidth=3e11)
M = np.array([1.0, 16.0, 256.0, 4096.0])
NO_HOST = HostOverhead(step_s=0.0, per_sequence_s=0.0, launch_s=0.0)
BATCH = np.array([1.0, 2.0, 4.0])
KV_LEN = np.array([16.0, 256.0, 1024.0])


def power_law_us(n, k):
    """10 us x sqrt(M) x (n k / 256^2): exact under log-log interpolation along M and across N x K."""
    return 10.0 * np.sqrt(M) * (n * k / 65536.0)


def decode_us(b, length):
    return 5.0 + 0.01 * b * length  # a floor plus the KV read: affine in L, as the model interpolates


def prefill_us(b, s):
    return 1e-4 * b * s**2  # pure causal work: sqrt(time) is linear in s


def attention(kind, heads=4, kv_heads=2, drop=None):
    grid = np.array([[(decode_us if kind == "decode" else prefill_us)(b, s) for s in KV_LEN] for b in BATCH])
    if drop is not None:
        grid[drop] = np.nan
    return AttentionTable(batch=format_numbers(BATCH), seq=format_numbers(KV_LEN), slices=[
        AttentionSlice(heads=heads, kv_heads=kv_heads, head_dim=64, kv_dtype="bf16", kernel="hand", us=format_numbers(
            grid.ravel(), 12))])


def tables(sites=((512, 256), (256, 256), (1024, 256), (256, 512)), allreduce_us_per_byte=1e-4, **overrides):
    gemm = GemmTable(dtype="bf16", kernel="hand", m=format_numbers(M), n_max=1024, k_max=512,
                     sites=[GemmSite(n=n, k=k, us=format_numbers(power_law_us(n, k), 12)) for n, k in sites])
    sizes = np.array([1024.0, 2**20, 2**26])
    collectives = CollectiveTable(bytes=format_numbers(sizes), curves=[
        CollectiveCurve(op=op, implementation=impl, ranks=2, kernel="hand",
                        us=format_numbers(sizes * allreduce_us_per_byte, 12))
        for op, impl in (("all_reduce", "custom_graph"), ("all_reduce", "custom_eager"), ("all_gather", "nccl"))])
    data = {
        "model": "tiny", "hardware": "tiny-gpu", "engine": "vllm", "engine_version": "0.0.1", "tensor_parallel": [1, 2],
        "source": Source(package="hand-made", package_version="1", licence="Apache-2.0", system="tiny",
                         backend="vllm", backend_version="0.0.1"),
        "gemm": [gemm], "context_attention": attention("prefill"), "generation_attention": attention("decode"),
        "collectives": collectives, "elementwise": ElementwiseModel(bandwidth_efficiency=1.0, floor_us=0.0),
    }
    data.update(overrides)
    return KernelTables(**data)


def model(tp=1, overhead=NO_HOST, **kw):
    return KernelTableModel(kw.pop("t", None) or tables(), TINY, GPU, tp=tp, overhead=overhead, **kw)


WORKLOAD = {"arrival": {"process": "poisson", "rate": 1.0}, "num_requests": 5,
            "classes": [{"name": "c", "prompt_tokens": {"dist": "constant", "value": 100},
                         "output_tokens": {"dist": "constant", "value": 10}}]}
SOL = SpeedOfLight(GPU.memory_bandwidth, GPU.flops["bf16"], 2.0)


# --- interpolation on hand-made tables -------------------------------------------------------
def test_gemm_inside_on_the_edge_and_beyond_the_measured_m():
    curves = GemmCurves(tables().gemm[0])
    t, codes = curves.times(256, 256, [16.0, 64.0, 4096.0, 8192.0], SOL)
    np.testing.assert_allclose(t * 1e6, [40.0, 80.0, 640.0, 1280.0])  # measured, log-log, edge, x M beyond
    assert list(codes) == [Provenance.MEASURED] * 3 + [Provenance.EXTRAPOLATED]


def test_gemm_shape_between_measured_ones_is_interpolated_in_log_n():
    curves = GemmCurves(tables(sites=[(256, 256), (1024, 256)]).gemm[0])
    t, codes = curves.times(512, 256, M, SOL)
    np.testing.assert_allclose(t * 1e6, power_law_us(512, 256))
    assert set(codes) == {Provenance.INTERPOLATED}


def test_gemm_wider_than_measured_runs_as_column_blocks():
    curves = GemmCurves(tables(sites=[(1024, 256)]).gemm[0])
    t, codes = curves.times(2048, 256, M, SOL)
    np.testing.assert_allclose(t, 2 * power_law_us(1024, 256) * 1e-6)
    assert set(codes) == {Provenance.INTERPOLATED}


def test_gemm_outside_every_measured_shape_is_carried_by_work_and_flagged():
    curves = GemmCurves(tables(sites=[(256, 256)]).gemm[0])
    compute_bound = SpeedOfLight(bandwidth=1e18, flops=5e14, weight_bytes=2.0)
    t, codes = curves.times(256, 1024, [4096.0], compute_bound)  # k beyond every measured k
    assert t[0] == pytest.approx(640e-6 * 4, rel=1e-9)  # 4x the FLOPs at the measured efficiency
    assert codes[0] == Provenance.EXTRAPOLATED


def test_decode_attention_is_exact_on_affine_tables_and_prices_ragged_rows():
    m = model()
    kv = np.array([[100.0, 700.0, 1024.0, 16.0]])
    per_layer = m.decode.seconds(4, kv)[0]
    expected = sum(decode_us(4, L) / 4 for L in kv[0]) * 1e-6  # T(4, L) / 4 per row, linear in L
    assert per_layer == pytest.approx(expected, rel=1e-9)
    w = np.log(1.5) / np.log(2.0)  # 3 rows: log-log between batches 2 and 4 at the measured lengths,
    knots = decode_us(2, KV_LEN) ** (1 - w) * decode_us(4, KV_LEN) ** w  # then linear in L between them
    blended = np.interp(kv[0, :3], KV_LEN, knots).sum() / 3 * 1e-6
    assert m.decode.seconds(3, kv[:, :3])[0] == pytest.approx(blended, rel=1e-9)
    assert m.decode.provenance(3, 100, 1024) == Provenance.MEASURED
    assert m.decode.provenance(3, 100, 1025) == Provenance.EXTRAPOLATED


def test_prefill_chunk_after_a_cached_prefix_pays_the_new_share_of_causal_work():
    m = model()
    seconds, code = m.prefill.seconds(np.array([600.0]), np.array([400.0]))
    assert seconds == pytest.approx((prefill_us(1, 1000) - prefill_us(1, 400)) * 1e-6, rel=1e-9)
    assert code == Provenance.MEASURED
    short, _ = m.prefill.seconds(np.array([100.0]), np.array([300.0]))  # causal share 7 us < reading its KV
    assert short == pytest.approx(decode_us(1, 400) * 1e-6, rel=1e-9)


def test_unmeasured_cell_holds_the_per_sequence_cost_of_the_largest_measured_batch():
    m = model(t=tables(generation_attention=attention("decode", drop=(2, 2))))  # batch 4 at L 1024 missing
    per_layer = m.decode.seconds(4, np.full((1, 4), 1024.0))[0]
    assert per_layer == pytest.approx(decode_us(2, 1024) / 2 * 4 * 1e-6, rel=1e-9)
    assert m.decode.provenance(4, 16, 1024) == Provenance.EXTRAPOLATED


def test_heads_missing_from_the_table_are_a_smaller_slice_at_a_larger_batch():
    t = tables(generation_attention=attention("decode", heads=2, kv_heads=1))
    m = KernelTableModel(t, TINY, GPU, tp=1, overhead=NO_HOST)  # tiny has 4 heads / 2 KV heads
    assert m.decode.pricer.multiplier == 2 and m.decode.pricer.provenance == Provenance.INTERPOLATED
    per_layer = m.decode.seconds(1, np.array([[256.0]]))[0]
    assert per_layer == pytest.approx(decode_us(2, 256) * 1e-6, rel=1e-9)  # 2 heads x batch 2 = 1 row's work x 2


# --- shapes and composition -----------------------------------------------------------------
@pytest.mark.parametrize("tp,qkv_n,o_k,gate_up_n,down_k,kv_heads", [
    (1, 6144, 4096, 28672, 14336, 8), (2, 3072, 2048, 14336, 7168, 4),
    (4, 1536, 1024, 7168, 3584, 2), (8, 768, 512, 3584, 1792, 1)])
def test_tensor_parallel_shards_the_gemms_and_heads(tp, qkv_n, o_k, gate_up_n, down_k, kv_heads):
    s = rank_shapes(get_model("llama-3-8b"), tp)
    qkv, o, gate_up, down = s.layer_gemms
    assert (qkv.n, qkv.k, o.n, o.k) == (qkv_n, 4096, 4096, o_k)
    assert (gate_up.n, gate_up.k, down.n, down.k) == (gate_up_n, 4096, 4096, down_k)
    assert (s.heads, s.kv_heads, s.lm_head.n) == (32 // tp, kv_heads, 128256 // tp)


def test_bad_tensor_parallelism_is_a_config_error():
    with pytest.raises(ConfigError, match="num_heads"):
        rank_shapes(get_model("qwen2.5-7b"), 8)


def test_all_reduces_per_step_carry_the_step_activations():
    m = model(tp=2)
    tokens = 300
    parts = m.breakdown(np.array([tokens]), np.array([0]))
    per_call = tokens * 256 * 2 * 1e-4 * 1e-6  # tokens x hidden x 2 bytes at 1e-4 us per byte
    assert parts["allreduce"] == pytest.approx((2 * TINY.num_layers + 1) * per_call, rel=1e-9)
    assert model(tp=1).breakdown(np.array([tokens]), np.array([0]))["allreduce"] == 0.0


def test_a_decode_step_is_the_sum_of_its_kernels():
    m = model()
    rows, kv = 2, np.array([255.0, 511.0])
    parts = m.breakdown(np.ones(rows), kv)
    gemm = sum(power_law_us(n, k)[0] for n, k in ((512, 256), (256, 256), (1024, 256), (256, 512)))
    gemm_at_2 = gemm * np.sqrt(2.0)  # log-log between M=1 and M=16 on a square-root law
    assert sum(parts[g] for g in ("qkv", "o", "gate_up", "down")) == pytest.approx(2 * gemm_at_2 * 1e-6, rel=1e-9)
    attention = 2 * sum(decode_us(2, L + 1) / 2 for L in kv) * 1e-6
    assert parts["decode_attention"] == pytest.approx(attention, rel=1e-9)
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"), rel=1e-12)


def test_host_overhead_adds_synchronously_and_overlaps_asynchronously():
    bare = model().step_time(np.ones(4), np.full(4, 100))
    sync = model(overhead=HostOverhead(step_s=1e-3, per_sequence_s=1e-4)).step_time(np.ones(4), np.full(4, 100))
    overlapped = model(overhead=HostOverhead(step_s=1e-3, per_sequence_s=1e-4, async_scheduling=True))
    assert sync == pytest.approx(bare + 1e-3 + 4e-4)
    assert overlapped.step_time(np.ones(4), np.full(4, 100)) == pytest.approx(max(bare, 1.4e-3))


def test_eager_steps_wait_for_the_host_to_launch_their_kernels():
    eager = HostOverhead(step_s=0.0, per_sequence_s=0.0, launch_s=1e-3, graph_max=512)
    m = model(overhead=eager)
    small, large = m.step_time(np.array([512]), np.array([0])), m.step_time(np.array([513]), np.array([0]))
    assert small == model().step_time(np.array([512]), np.array([0]))  # replayed as a graph: kernels only
    assert large == pytest.approx(m._launches * 1e-3)  # eager and launch-bound
    assert large > 2 * small


# --- decode runs, provenance, determinism ---------------------------------------------------
@pytest.mark.parametrize("tp,batch,steps", [(1, 137, 300), (2, 40, 2500)])
def test_decode_run_times_equal_step_by_step(tp, batch, steps):
    path, _ = find_tables("vllm", None, "h100-sxm", "llama-3-8b")
    m = KernelTableModel(load_kernel_tables(path), get_model("llama-3-8b"), get_hardware("h100-sxm"), tp=tp,
                         overhead=HostOverhead())
    cached = np.random.default_rng(0).integers(0, 6000, size=batch)
    ones = np.ones(batch, dtype=int)
    loop = np.array([m.step_time(ones, cached + j) for j in range(steps)])
    np.testing.assert_array_equal(m.decode_run_times(cached, steps), loop)
    by_step = sum((m.step_sources(ones, cached + j) for j in range(steps)), Counter())
    assert m.step_sources(ones, cached, steps) == by_step


def test_a_decode_run_counts_its_steps_past_the_table_as_extrapolated():
    m = model()
    sources = m.step_sources(np.ones(2), np.array([1000.0, 1020.0]), 10)  # KV 1021..1030, table ends at 1024
    assert sources == Counter({"measured-range": 4, "extrapolated": 6})


def tiny_scenario(tmp_path, **execution):
    path = tmp_path / "tiny.yaml"
    write(tables(), path)
    data = {
        "name": "tiny", "seed": 1,
        "model": {"name": "tiny", **{k: getattr(TINY, k) for k in ("num_layers", "hidden_size", "num_heads",
                                                                  "num_kv_heads", "intermediate_size", "vocab_size",
                                                                  "max_context", "head_dim")}},
        "hardware": {"name": "tiny-gpu", "memory_gib": 80, "memory_bandwidth_gbps": 2000,
                     "tflops": {"fp16": 500, "bf16": 500}, "interconnect_gbps": 300},
        "deployment": {"weight_dtype": "bf16", "kv_dtype": "bf16"},
        "execution": {"kernel_tables": str(path), **execution},
        "workload": {"arrival": {"process": "poisson", "rate": 20.0}, "num_requests": 60,
                     "classes": [{"name": "c", "prompt_tokens": {"dist": "uniform", "low": 20, "high": 600},
                                  "output_tokens": {"dist": "uniform", "low": 5, "high": 900}}]},
    }
    return parse_scenario(data)


def test_a_run_counts_every_step_by_provenance_and_is_deterministic(tmp_path):
    a, b = run(tiny_scenario(tmp_path)), run(tiny_scenario(tmp_path))
    sources = a.info["step_sources"]
    assert sum(sources.values()) == a.info["steps"]
    assert set(sources) <= {"measured-range", "extrapolated"}  # every shape is measured; long contexts leave it
    assert sources.get("extrapolated", 0) > 0 and sources.get("measured-range", 0) > 0
    assert a.info["execution"]["provenance"] == "kernel-tables"
    assert a.summary.to_dict() == b.summary.to_dict()
    assert a.requests.equals(b.requests)


def test_a_gpu_without_tables_runs_on_the_roofline_and_says_so():
    s = parse_scenario({"model": "llama-3-8b", "hardware": "a10g",
                        "workload": WORKLOAD})
    ex = execution_model(s)
    assert isinstance(ex, RooflineModel)
    assert "no vllm kernel tables for llama-3-8b on a10g" in ex.describe()["notice"]


def test_a_weight_dtype_without_tables_runs_on_the_roofline_and_says_so():
    s = parse_scenario({"model": "llama-3-8b", "hardware": "h100-sxm", "deployment": {"weight_dtype": "int8"},
                        "workload": WORKLOAD})
    ex = execution_model(s)
    assert isinstance(ex, RooflineModel) and "no int8 GEMM table" in ex.describe()["notice"]


def test_scenario_errors_name_the_value_and_what_is_allowed(tmp_path):
    base = {"model": "llama-3-8b", "hardware": "h100-sxm",
            "workload": WORKLOAD}
    with pytest.raises(ConfigError, match="shipped versions: 0.24.0"):
        execution_model(parse_scenario({**base, "execution": {"engine_version": "0.1.0"}}))
    with pytest.raises(ConfigError, match="roofline"):
        parse_scenario({**base, "execution": {"kernel_tables": "x.yaml", "roofline": {"compute_dtype": "fp16"}}})
    with pytest.raises(ConfigError, match="is for model 'tiny'"):
        path = tmp_path / "t.yaml"
        write(tables(), path)
        execution_model(parse_scenario({**base, "execution": {"kernel_tables": str(path)}}))


def test_roofline_settings_keep_the_roofline():
    s = parse_scenario({"model": "llama-3-8b", "hardware": "h100-sxm",
                        "execution": {"roofline": {"efficiency": {"memory_bandwidth": 0.7}}},
                        "workload": WORKLOAD})
    assert isinstance(execution_model(s), RooflineModel)


def test_every_shipped_file_loads_and_prices_its_model():
    files = sorted(find_tables.__globals__["TABLES_DIR"].glob("*/*/*.yaml"))
    assert len(files) >= 25
    for path in files:
        t = load_kernel_tables(path)
        assert t.source.package == "aiconfigurator-core" and t.source.licence == "Apache-2.0"
        assert path.stat().st_size < 300_000
        if t.moe:  # a mixture of experts' file: tests/test_moe_tables.py
            continue
        for tp in t.tensor_parallel:
            m = KernelTableModel(t, get_model(t.model), get_hardware(t.hardware), tp=tp, overhead=NO_HOST)
            weights = rank_shapes(get_model(t.model), tp)
            assert m.step_time(np.ones(1), np.array([100])) > 0 and not m.notes, (path, tp, weights)


# --- converter ------------------------------------------------------------------------------
def fixture_tree(root):
    """A hand-made aiconfigurator systems folder (CSV files of its columns, times in ms)."""
    data, common = new_system(root, "h100_sxm", "NVIDIA H100 80GB HBM3", nccl="2.27.3")
    rows = [{**common, "op_name": "gemm", "kernel_source": "torch", "gemm_dtype": "bfloat16", "m": m, "n": n, "k": k,
             "latency": 1e-3 * (m * n * k) ** 0.25}
            for m in (1, 64, 4096) for n in (512, 1024, 4096, 16384, 65536) for k in (1024, 4096, 16384)]
    write_table(data, "gemm", "vllm", "0.24.0", "gemm", rows)
    for phase in ("context", "generation"):
        att = [{**common, "op_name": f"{phase}_attention", "kernel_source": "fa", "batch_size": b,
                "isl": 1 if phase == "generation" else s, "num_heads": q, "num_key_value_heads": kv, "head_dim": 128,
                "beam_width": 1, "attn_dtype": "bfloat16", "kv_cache_dtype": "bfloat16",
                "step": s - 1 if phase == "generation" else 0, "window_size": 0, "latency": 0.01 * b * s / 1000}
               for q, kv in ((32, 8), (16, 4), (8, 2), (4, 1), (64, 8)) for b in (1, 8) for s in (16, 4096)]
        write_table(data, "attention", "vllm", "0.24.0", f"{phase}_attention", att)
    for backend, version, stem, extra in (("vllm", "0.24.0", "custom_allreduce", {"allreduce_dtype": "bfloat16"}),
                                          ("nccl", "2.27.3", "nccl", {"nccl_dtype": "half"})):
        comm = [{**common, "op_name": op, "kernel_source": src, "num_gpus": g, "message_size": size,
                 "latency": 0.005 + size * 1e-9, **extra}
                for op, src in ((("all_reduce", "vLLM_custom_graph"), ("all_reduce", "vLLM_custom_eager"))
                                if backend == "vllm" else (("all_reduce", "NCCL"), ("all_gather", "NCCL")))
                for g in (2, 4, 8) for size in (128, 65536, 33554432)]
        write_table(data, "comm", backend, version, stem, comm)
    return root


def test_converter_writes_what_it_read_and_names_its_source(tmp_path):
    root = fixture_tree(tmp_path / "systems")
    t = convert("h100-sxm", "vllm", "llama-3-8b", aiconfigurator_root=str(root))
    s = t.source
    assert (s.package, s.package_version, s.licence, s.system, s.backend, s.backend_version) == (
        "aiconfigurator-core", "0.12.0", "Apache-2.0", "h100_sxm", "vllm", "0.24.0")
    assert (t.hardware, t.tensor_parallel, s.device) == ("h100-sxm", [1, 2, 4, 8], "NVIDIA H100 80GB HBM3")
    gemm = t.gemm_for("bf16")
    sites = {(g.n, g.k) for g in gemm.sites}
    assert (4096, 4096) in sites and (16384, 4096) in sites and (65536, 4096) in sites  # o, gate/up bracket, head
    assert (512, 1024) not in sites  # no model shape needs it
    site = next(g for g in gemm.sites if (g.n, g.k) == (4096, 4096))
    np.testing.assert_allclose(np.array(site.us.split(), float), [1e-3 * (m * 4096 * 4096) ** 0.25 * 1e3
                                                                  for m in (1, 64, 4096)], rtol=1e-4)
    gen = t.generation_attention
    assert {(x.heads, x.kv_heads) for x in gen.slices} == {(32, 8), (16, 4), (8, 2), (4, 1)}
    assert gen.seq == "16 4096"  # isl + step
    coll = t.collectives
    assert coll.bytes.split() == ["256", "131072", "67108864"]  # elements x 2 bytes
    assert {(c.op, c.implementation) for c in coll.curves} == {
        ("all_reduce", "custom_graph"), ("all_reduce", "custom_eager"), ("all_reduce", "nccl"), ("all_gather", "nccl")}
    assert t.elementwise.floor_us == pytest.approx(3.0) and t.elementwise.bandwidth_efficiency == 0.8
    out = write(t, tmp_path / "out.yaml")
    again = load_kernel_tables(out)
    KernelTableModel(again, get_model("llama-3-8b"), get_hardware("h100-sxm"), tp=2, overhead=NO_HOST)
    assert again.model_dump() == t.model_dump()


def test_converter_refuses_bad_input(tmp_path, monkeypatch):
    root = str(fixture_tree(tmp_path / "systems"))
    with pytest.raises(ConfigError, match="unknown system 'a10g'; allowed: a100-80gb"):
        convert("a10g", "vllm", "llama-3-8b", aiconfigurator_root=root)
    with pytest.raises(ConfigError, match="unknown backend 'tgi'"):
        convert("h100-sxm", "tgi", "llama-3-8b", aiconfigurator_root=root)
    with pytest.raises(ConfigError, match="--version 0.9.0: h100_sxm has vllm tables for 0.24.0"):
        convert("h100-sxm", "vllm", "llama-3-8b", version="0.9.0", aiconfigurator_root=root)
    (tmp_path / "notes.yaml").write_text("mine: true\n")
    with pytest.raises(ConfigError, match="not replacing it"):
        write(tables(), tmp_path / "notes.yaml")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"llmsim\[aiconfigurator\]"):
        convert("h100-sxm", "vllm", "llama-3-8b")


@pytest.mark.skipif(importlib.util.find_spec("aiconfigurator_core") is None, reason="aiconfigurator-core not installed")
def test_the_real_converter_reproduces_the_shipped_tables():
    path, _ = find_tables("vllm", None, "h100-sxm", "llama-3-8b")
    shipped = load_kernel_tables(path)
    fresh = convert("h100-sxm", "vllm", "llama-3-8b")
    for part in ("gemm", "context_attention", "generation_attention", "collectives", "elementwise"):
        assert getattr(fresh, part) == getattr(shipped, part), part

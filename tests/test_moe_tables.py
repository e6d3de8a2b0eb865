"""MoE layers priced from measured tables: interpolation, the roofline outside the tables, provenance,
MLA layers from the module tables, and resolution (the converter: test_moe_converter.py)."""


import numpy as np
import pytest
import yaml
from aiconfigurator_tree import mla_prefill_us, mla_us

from calibration.fitting.aiconfigurator import write
from simulator.common.errors import ConfigError
from simulator.execution.kernels.interpolate import Provenance
from simulator.execution.kernels.moe import MoECurve
from simulator.execution.kernels.moe_step_model import MoEKernelTableModel
from simulator.execution.kernels.op_table import (
    ElementwiseModel,
    GemmSite,
    GemmTable,
    KernelTables,
    MoELayout,
    MoETable,
    Source,
    format_numbers,
    load_kernel_tables,
)
from simulator.execution.kernels.provenance import source_of
from simulator.execution.kernels.resolve import TABLES_DIR, find_tables
from simulator.execution.moe_roofline import MoERooflineModel
from simulator.scenario import execution_model, parse_scenario, run
from simulator.spec import get_hardware, get_model
from simulator.spec.parallel import Parallelism

QWEN = get_model("qwen3-30b-a3b")  # hidden 2048, experts of 768, top-8 of 128, 48 MoE layers
H200 = get_hardware("h200")
PLAIN = Parallelism()
TOKENS = np.array([1.0, 16.0, 256.0, 4096.0])


def layer_us(tokens, ep=1):
    """20 us x sqrt(T) / ep: exact under log-log interpolation along tokens."""
    return 20.0 * np.sqrt(tokens) / ep


def moe_table(layouts=((1, 1), (1, 2), (2, 1)), distribution="balanced", dtype="bf16", drop_last=False):
    out = []
    for tp, ep in layouts:
        us = layer_us(TOKENS, ep)
        if drop_last:
            us = np.append(us[:-1], np.nan)
        out.append(MoELayout(tp=tp, ep=ep, kernel="hand", us=format_numbers(us, 12)))
    return MoETable(dtype=dtype, source_dtype="bfloat16", hidden=2048, inter=768, topk=8, experts=128,
                    distribution=distribution, tokens=format_numbers(TOKENS), layouts=out)


def tables(moe=None, gemm=None):
    return KernelTables(
        model="qwen3-30b-a3b", hardware="h200", engine="vllm", engine_version="0.0.1", tensor_parallel=[1, 2],
        source=Source(package="hand-made", package_version="1", licence="Apache-2.0", system="h200_sxm",
                      backend="vllm", backend_version="0.0.1"),
        elementwise=ElementwiseModel(bandwidth_efficiency=1.0, floor_us=0.0),
        moe=[moe_table()] if moe is None else moe, gemm=gemm or [])


def model(layout=PLAIN, t=None, **kw):
    return MoEKernelTableModel(t or tables(), QWEN, H200, layout=layout, weight_dtype="bf16", kv_dtype="bf16",
                               where="hand.yaml", **kw)


def experts_s(m, tokens: int) -> float:
    """The MoE layers' seconds of one step of `tokens` single-token rows."""
    return m.roofline_breakdown(np.ones(tokens, dtype=int), np.full(tokens, 100))["experts"]


# --- interpolation along tokens ------------------------------------------------------------------

def test_inside_the_table_the_layer_is_read_off_the_curve():
    m = model()
    for tokens in (16, 64, 256, 1000):  # measured points and between them (log-log exact on a power law)
        assert experts_s(m, tokens) == pytest.approx(48 * layer_us(tokens) * 1e-6, rel=1e-9)
        assert m.step_sources(np.ones(tokens, dtype=int), np.full(tokens, 100), 3) == {"roofline": 3}  # no GEMMs


def test_on_the_edge_and_below_the_table_the_measured_points_hold():
    curve = MoECurve(moe_table(), 1, 1)
    seconds, codes = curve.seconds_at(np.array([4096.0, 1.0, 0.5]))
    np.testing.assert_allclose(seconds, [layer_us(4096.0) * 1e-6, layer_us(1.0) * 1e-6, layer_us(1.0) * 1e-6])
    assert list(codes) == [Provenance.MEASURED] * 3


def test_past_the_table_the_roofline_carries_the_last_point_and_the_step_is_counted_extrapolated():
    m = model(t=tables(gemm=[gemm_table()]))
    roof = MoERooflineModel(QWEN, H200, weight_dtype="bf16", kv_dtype="bf16")
    last = experts_s(m, 4096)
    new, cached = np.ones(8192, dtype=int), np.full(8192, 10)
    grown = roof.roofline_breakdown(new, cached)["experts"] / roof.roofline_breakdown(new[:4096], cached[:4096])["experts"]
    assert experts_s(m, 8192) == pytest.approx(last * grown, rel=1e-9)
    assert m.step_sources(new, cached, 2) == {"extrapolated": 2} and m.is_extrapolated(new, cached)
    assert m.step_sources(new[:4096], cached[:4096]) == {"measured-range": 1}


def test_a_layout_the_table_lacks_falls_back_to_the_roofline_and_is_counted():
    layout = Parallelism(tp=4)
    m = model(layout, t=tables(gemm=[gemm_table()]))
    roof = MoERooflineModel(QWEN, H200, layout=layout, weight_dtype="bf16", kv_dtype="bf16")
    assert experts_s(m, 64) == pytest.approx(experts_s(roof, 64), rel=1e-12)
    assert m.step_sources(np.ones(64, dtype=int), np.full(64, 10), 5) == {"roofline": 5}
    assert "no bf16 MoE measurement at moe_tp 4 x ep 1 (measured: 1x1, 1x2, 2x1)" in m.notes[0]
    line = source_of(m.describe())
    assert "MoE layers from the roofline" in line and "dense GEMMs and LM head" in line


def test_expert_parallel_ranks_read_their_layout_and_the_busiest_rank_sets_the_pace():
    layout = Parallelism(tp=1, dp=2, ep=2)
    plain, skewed = model(layout), model(layout, routing_imbalance=1.5)
    assert experts_s(plain, 64) == pytest.approx(48 * layer_us(64, ep=2) * 1e-6, rel=1e-9)
    assert experts_s(skewed, 64) == pytest.approx(48 * layer_us(96, ep=2) * 1e-6, rel=1e-9)
    # a table measured under skewed routing already holds its imbalance
    held = model(layout, t=tables(moe=[moe_table(distribution="power_law_1.2")]), routing_imbalance=1.5)
    assert experts_s(held, 64) == pytest.approx(48 * layer_us(64, ep=2) * 1e-6, rel=1e-9)


def test_unmeasured_points_are_skipped_and_the_curve_ends_at_the_last_measured_one():
    curve = MoECurve(moe_table(drop_last=True), 1, 1)
    assert curve.tokens[-1] == 256
    _, codes = curve.seconds_at(np.array([1000.0]))
    assert codes[0] == Provenance.EXTRAPOLATED


def test_decode_runs_are_priced_as_a_grid_equal_to_step_by_step():
    m = model(Parallelism(tp=1, dp=2, ep=2), t=tables(gemm=[gemm_table()]), routing_imbalance=1.2)
    cached = np.array([10, 500, 33, 2000, 7, 80])
    run_times = m.decode_run_times(cached, 40)
    single = [m.step_time(np.ones(6, dtype=int), cached + i) for i in range(40)]
    np.testing.assert_allclose(run_times, single, rtol=1e-12)


# --- dense GEMMs from the file's GEMM table ---------------------------------------------------------

GEMM_M = np.array([1.0, 64.0, 8192.0])


def gemm_table():
    """Sites at Qwen3-30B's qkv (5120 x 2048), o (2048 x 4096) and LM head (151936 x 2048) at tp 1."""
    sites = [(5120, 2048), (2048, 4096), (151936, 2048)]
    return GemmTable(dtype="bf16", kernel="hand", m=format_numbers(GEMM_M), n_max=151936, k_max=4096,
                     sites=[GemmSite(n=n, k=k, us=format_numbers(1e-6 * n * k * np.sqrt(GEMM_M), 12))
                            for n, k in sites])


def test_dense_gemms_come_from_the_gemm_table_where_the_file_has_one():
    m = model(t=tables(gemm=[gemm_table()]))
    parts = m.roofline_breakdown(np.ones(64, dtype=int), np.full(64, 10))
    gemms_us = 48 * (5120 * 2048 + 2048 * 4096) * 1e-6 * 8.0  # sqrt(64) = 8
    high = m._stages[0]["high_read_s"]
    assert parts["linear"] == pytest.approx(gemms_us * 1e-6 + high, rel=1e-9)
    assert parts["lm_head"] == pytest.approx(151936 * 2048 * 1e-6 * 8.0 * 1e-6, rel=1e-9)
    assert m.describe()["from_tables"] == "MoE layers, dense GEMMs and LM head"


# --- the format --------------------------------------------------------------------------------------

def test_bad_moe_tables_are_errors_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match="at least one layout"):
        moe_table(layouts=())
    with pytest.raises(ValueError, match="repeat a tp x ep pair"):
        moe_table(layouts=((1, 1), (1, 1)))
    path = tmp_path / "bad.yaml"
    data = yaml.safe_load(tables().to_yaml())
    data["moe"][0]["layouts"][0]["ep"] = 0
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"moe.*ep"):
        load_kernel_tables(path)
    with pytest.raises(ValueError, match="3 times for 4 token counts"):
        MoECurve(moe_table().model_copy(update={"layouts": [MoELayout(tp=1, ep=1, us="1 2 3")]}), 1, 1)


def test_a_dense_file_keeps_its_yaml_and_gains_no_moe_key():
    path, _ = find_tables("vllm", None, "h100-sxm", "llama-3-8b")
    t = load_kernel_tables(path)
    assert t.moe == [] and "moe:" not in t.to_yaml()


# --- resolution ----------------------------------------------------------------------------------------

WORKLOAD = {"arrival": {"process": "poisson", "rate": 4.0}, "num_requests": 30,
            "classes": [{"name": "c", "prompt_tokens": {"dist": "uniform", "low": 20, "high": 3000},
                         "output_tokens": {"dist": "uniform", "low": 5, "high": 300}}]}


def test_a_moe_model_without_tables_runs_on_the_roofline_and_says_so():
    ex = execution_model(parse_scenario({"model": "mixtral-8x7b", "hardware": "a100-80gb", "workload": WORKLOAD}))
    assert type(ex) is MoERooflineModel
    assert "no vllm kernel tables for mixtral-8x7b on a100-80gb" in ex.describe()["notice"]


def test_an_expert_dtype_the_file_lacks_runs_on_the_roofline_and_says_so():
    s = parse_scenario({"model": "deepseek-v3", "hardware": "h200", "workload": WORKLOAD,
                        "deployment": {"tensor_parallel": 8, "weight_dtype": "bf16"}})
    ex = execution_model(s)
    assert type(ex) is MoERooflineModel and "no bf16 MoE table (the file holds fp8)" in ex.describe()["notice"]


def test_the_shipped_file_is_picked_by_default_and_named_in_the_source_line():
    s = parse_scenario({"model": "deepseek-v3", "hardware": "h200", "workload": WORKLOAD,
                        "deployment": {"data_parallel_attention": 8, "expert_parallel": 8, "weight_dtype": "fp8",
                                       "kv_dtype": "fp8"}})
    ex = execution_model(s)
    assert isinstance(ex, MoEKernelTableModel) and ex.curve is not None and ex.mla is not None
    line = source_of(ex.describe())
    assert line.startswith("measured kernel tables of vllm 0.24.0 from aiconfigurator-core 0.12.0 "
                           "(calibration/kernel_tables/vllm-0.24.0/h200/deepseek-v3.yaml) for MoE layers")
    assert "MLA decode and prefill layers; exchange, pipeline sends, host overhead from the roofline" in line
    off = parse_scenario({**s.model_dump(mode="json", exclude_none=True), "execution": {"kernel_tables": False}})
    assert type(execution_model(off)) is MoERooflineModel


def tiny_scenario(tmp_path):
    path = tmp_path / "qwen.yaml"
    write(tables(gemm=[gemm_table()]), path)
    return parse_scenario({"name": "moe-tables", "seed": 3, "model": "qwen3-30b-a3b", "hardware": "h200",
                           "deployment": {"weight_dtype": "bf16", "kv_dtype": "bf16"},
                           "execution": {"kernel_tables": str(path)}, "workload": WORKLOAD})


def test_a_run_counts_every_step_by_provenance_and_is_deterministic(tmp_path):
    a, b = run(tiny_scenario(tmp_path)), run(tiny_scenario(tmp_path))
    sources = a.info["step_sources"]
    assert sum(sources.values()) == a.info["steps"] and sources.get("measured-range", 0) > 0
    assert a.info["execution"]["provenance"] == "kernel-tables"
    assert a.summary.to_dict() == b.summary.to_dict()
    assert a.requests.equals(b.requests)


def test_a_named_file_for_another_model_is_refused(tmp_path):
    path = tmp_path / "qwen.yaml"
    write(tables(), path)
    with pytest.raises(ConfigError, match="is for model 'qwen3-30b-a3b'"):
        execution_model(parse_scenario({"model": "qwen3-235b-a22b", "hardware": "h200", "workload": WORKLOAD,
                                        "execution": {"kernel_tables": str(path)}}))


def test_every_shipped_moe_file_prices_its_model_at_its_layouts():
    files = [p for p in sorted(TABLES_DIR.glob("*/*/*.yaml")) if load_kernel_tables(p).moe]
    assert files
    for path in files:
        t = load_kernel_tables(path)
        spec, gpu = get_model(t.model), get_hardware(t.hardware)
        assert t.source.files.get("moe") and path.stat().st_size < 300_000
        for table in t.moe:
            for x in table.layouts:
                ranks = x.tp * x.ep
                for tp in (tp for tp in t.tensor_parallel if ranks % tp == 0):
                    layout = Parallelism(tp=tp, dp=ranks // tp, ep=x.ep)
                    try:
                        layout.validate(spec)
                    except ConfigError:
                        continue
                    m = MoEKernelTableModel(t, spec, gpu, layout=layout, weight_dtype=table.dtype, kv_dtype="fp8")
                    assert m.curve is not None, (path, table.dtype, layout)
                    assert m.step_time(np.ones(4, dtype=int), np.full(4, 100)) > 0


# --- MLA decode layers from the module table -------------------------------------------------------------

V3 = get_model("deepseek-v3")
MLA_BATCH, MLA_LEN = np.array([1.0, 8.0, 64.0]), np.array([2.0, 1024.0, 16384.0])


MLA_PROMPT = np.array([16.0, 256.0, 4096.0])


def mla_tables(with_mla=True, heads=16, prefill=False):
    from calibration.fitting.aiconfigurator_moe import moe_model_gemms
    from simulator.execution.kernels.op_table import AttentionSlice, AttentionTable, MLAModuleTable

    gemms = {(g.n, g.k) for g in moe_model_gemms(V3, [8])}
    gemm = GemmTable(dtype="fp8", kernel="hand", m=format_numbers(GEMM_M), n_max=max(n for n, _ in gemms),
                     k_max=max(k for _, k in gemms),
                     sites=[GemmSite(n=n, k=k, us=format_numbers(1e-7 * n * k * np.sqrt(GEMM_M), 12)) for n, k in gemms])
    moe = MoETable(dtype="fp8", hidden=7168, inter=2048, topk=8, experts=256, distribution="balanced",
                   tokens=format_numbers(TOKENS), layouts=[MoELayout(tp=8, ep=1, us=format_numbers(layer_us(TOKENS)))])
    grid = np.array([[mla_us(b, s) for s in MLA_LEN] for b in MLA_BATCH])
    table = AttentionTable(batch=format_numbers(MLA_BATCH), seq=format_numbers(MLA_LEN), slices=[
        AttentionSlice(heads=heads, kv_heads=1, head_dim=576, kv_dtype="fp8", kernel="hand",
                       us=format_numbers(grid.ravel(), 12))])
    mla = [MLAModuleTable(phase="generation", gemm_dtype="fp8", table=table)] if with_mla else []
    if prefill:
        grid = np.array([[mla_prefill_us(b, p) for p in MLA_PROMPT] for b in MLA_BATCH])
        mla.append(MLAModuleTable(phase="context", gemm_dtype="fp8", table=AttentionTable(
            batch=format_numbers(MLA_BATCH), seq=format_numbers(MLA_PROMPT), slices=[
                AttentionSlice(heads=heads, kv_heads=1, head_dim=576, kv_dtype="fp8", kernel="hand",
                               us=format_numbers(grid.ravel(), 12))])))
    return tables(moe=[moe], gemm=[gemm]).model_copy(update={"model": "deepseek-v3", "mla": mla})


def v3_model(t, layout=None):
    return MoEKernelTableModel(t, V3, H200, layout=layout or Parallelism(tp=8), weight_dtype="fp8", kv_dtype="fp8",
                               where="hand.yaml")


def test_mla_decode_rows_are_priced_by_the_module_and_leave_their_projections_to_it():
    with_mla, without = v3_model(mla_tables()), v3_model(mla_tables(with_mla=False))
    assert with_mla.mla is not None and without.mla is None
    cached = np.array([100, 700, 3000, 20, 5000, 64, 900, 1])
    new = np.ones(8, dtype=int)
    a, b = with_mla.roofline_breakdown(new, cached), without.roofline_breakdown(new, cached)
    per_row_us = (40.0 / 8 + 0.002 * (cached + 1)).sum()  # T(8, L) / 8 per row, 61 layers
    assert a["attention"] == pytest.approx(61 * per_row_us * 1e-6, rel=1e-9)
    projections = without._lookup(without._stages[0], "attn_grid", np.array(8.0))
    assert b["linear"] - a["linear"] == pytest.approx(float(projections), rel=1e-9)
    assert "MLA decode layers" in source_of(with_mla.describe())
    # a prefill row keeps the roofline's attention and pays its projections in the GEMM part
    mixed_new, mixed_cached = np.array([1, 1, 300]), np.array([100, 200, 0])
    m = with_mla.roofline_breakdown(mixed_new, mixed_cached)
    r = without.roofline_breakdown(mixed_new, mixed_cached)
    assert m["attention"] > 0 and m["linear"] < r["linear"]


def test_mla_prefill_chunks_pay_the_new_share_of_the_module_and_leave_their_projections_to_it():
    m, decode_only = v3_model(mla_tables(prefill=True)), v3_model(mla_tables())
    assert m.mla_prefill is not None and "MLA decode and prefill layers" in source_of(m.describe())
    new, cached = np.array([300, 1000]), np.array([0, 1000])
    parts = m.roofline_breakdown(new, cached)
    full = new + cached
    per_row_us = mla_prefill_us(2, full) / 2 * (1 - (cached / full) ** 2)  # two rows: T(2, s) / 2 each
    assert parts["attention"] == pytest.approx(61 * per_row_us.sum() * 1e-6, rel=1e-9)
    projections = decode_only._lookup(decode_only._stages[0], "attn_grid", np.array(float(new.sum())))
    assert decode_only.roofline_breakdown(new, cached)["linear"] - parts["linear"] == pytest.approx(
        float(projections), rel=1e-9)
    assert m.step_sources(new, cached) == {"measured-range": 1}
    assert m.step_sources(np.array([5000]), np.array([0])) == {"extrapolated": 1}  # past the longest prompt


def test_mla_decode_runs_are_a_grid_and_count_the_steps_past_the_measured_lengths():
    m = v3_model(mla_tables())
    cached = np.array([10, 500, 33, 2000, 7, 80, 16000, 300])
    grid = m.decode_run_times(cached, 50)
    single = [m.step_time(np.ones(8, dtype=int), cached + i) for i in range(50)]
    np.testing.assert_allclose(grid, single, rtol=1e-12)
    # the longest row reaches 16,384 (the last measured length) after 384 steps
    counts = m.step_sources(np.ones(8, dtype=int), cached, 500)
    assert counts == {"measured-range": 384, "extrapolated": 116}


def test_mla_heads_the_table_lacks_fall_back_to_the_roofline_attention():
    m = v3_model(mla_tables(heads=32))  # tp 8 holds 16 heads; 32 alone cannot price them
    assert m.mla is None and "MLA decode: no slice for 16 heads" in m.notes[0]
    assert "prefill attention" not in source_of(m.describe())

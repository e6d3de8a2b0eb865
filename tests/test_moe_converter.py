"""`llmsim calibrate --from-aiconfigurator` for mixtures of experts, on hand-made aiconfigurator-like
folders: the MoE slice of the model's shape, fp8 kernel choice, MLA modules, bad input."""

import importlib.util

import numpy as np
import pytest
from aiconfigurator_tree import mla_prefill_us, mla_us, new_system, write_table

from calibration.fitting.aiconfigurator import convert, write
from simulator.common.errors import ConfigError
from simulator.execution.kernels.moe_step_model import MoEKernelTableModel
from simulator.execution.kernels.op_table import load_kernel_tables
from simulator.execution.kernels.resolve import find_tables
from simulator.spec import get_hardware, get_model
from simulator.spec.parallel import Parallelism

QWEN, V3 = get_model("qwen3-30b-a3b"), get_model("deepseek-v3")
H200 = get_hardware("h200")

# --- the converter ---------------------------------------------------------------------------------------

def fixture_tree(root):
    """A hand-made aiconfigurator systems folder: GEMMs and MoE layers (CSV of its columns, times in ms)."""
    data, common = new_system(root, "h200_sxm", "NVIDIA H200")
    gemm = [{**common, "op_name": "gemm", "kernel_source": kernel, "gemm_dtype": dtype, "m": m, "n": n, "k": k,
             "latency": scale * 1e-3 * (m * n * k) ** 0.25}
            for dtype, kernel, scale in (("bfloat16", "torch", 1.0), ("nvfp4", "cutedsl", 0.5))
            for m in (1, 64, 4096) for n in (1024, 4096, 16384, 65536, 262144) for k in (1024, 4096)]
    write_table(data, "gemm", "vllm", "0.24.0", "gemm", gemm)
    moe = []
    for dtype, kernel, layouts in (("fp8_block", "cutlass", ((1, 2), (1, 4), (1, 8), (1, 16))),
                                   ("fp8_block", "triton", ((1, 1), (2, 1))),
                                   ("fp8_block", "slow", ((1, 1),)),
                                   ("fp8", "pertensor", ((1, 1), (8, 1))),
                                   ("bfloat16", "unquantized", ((1, 1),)),
                                   ("nvfp4", "trtllm_nvfp4", ((1, 1), (1, 2)))):
        for tp, ep in layouts:
            for dist, skew in (("balanced", 1.0), ("power_law_1.01", 1.3)):
                for t in (1, 8, 64, 512):
                    if kernel == "slow" and t == 512:
                        continue  # fewer points: the triton kernel is kept for 1x1
                    moe.append({**common, "op_name": "moe", "kernel_source": kernel, "moe_dtype": dtype,
                                "num_tokens": t, "hidden_size": 2048, "inter_size": 768, "topk": 8,
                                "num_experts": 128, "moe_tp_size": tp, "moe_ep_size": ep, "distribution": dist,
                                "latency": skew * 0.01 * (1 + t) ** 0.5 / (tp * ep)})
    moe.append({**moe[0], "hidden_size": 4096})  # another model's shape: left out
    write_table(data, "moe", "vllm", "0.24.0", "moe", moe)
    return root


def test_converter_writes_the_moe_slice_of_the_models_shape_and_names_its_source(tmp_path):
    root = fixture_tree(tmp_path / "systems")
    t = convert("h200", "vllm", "qwen3-30b-a3b", aiconfigurator_root=str(root), command="test")
    s = t.source
    assert (s.package, s.package_version, s.licence, s.system, s.backend, s.backend_version) == (
        "aiconfigurator-core", "0.12.0", "Apache-2.0", "h200_sxm", "vllm", "0.24.0")
    assert s.files["moe"] == ("data/h200_sxm/moe/vllm/0.24.0/moe_perf (cutlass; triton; trtllm_nvfp4; unquantized, "
                              "version 0.24.0)")
    assert t.context_attention is None and t.collectives is None and t.tensor_parallel == [1, 2, 4, 8]
    assert [(x.dtype, x.source_dtype) for x in t.moe] == [("bf16", "bfloat16"), ("fp8", "fp8_block"), ("fp4", "nvfp4")]
    assert t.gemm_dtypes == ["bf16", "fp4"] and t.gemm_for("fp4").kernel == "cutedsl"
    block = t.moe[1]
    assert (block.hidden, block.inter, block.topk, block.experts, block.distribution) == (2048, 768, 8, 128, "balanced")
    assert block.tokens == "1 8 64 512"
    layouts = {(x.tp, x.ep): x for x in block.layouts}
    assert set(layouts) == {(1, 1), (2, 1), (1, 2), (1, 4), (1, 8)}  # 16 ranks exceed a node
    assert layouts[(1, 1)].kernel == "triton"
    np.testing.assert_allclose(np.array(layouts[(1, 4)].us.split(), float),
                               [10.0 * (1 + x) ** 0.5 / 4 for x in (1, 8, 64, 512)], rtol=1e-4)
    assert {(g.n, g.k) for g in t.gemm_for("bf16").sites} >= {(1024, 4096), (4096, 1024)}
    out = write(t, tmp_path / "out.yaml")
    assert "# MoE layers: data/h200_sxm/moe/vllm/0.24.0/moe_perf" in out.read_text()
    again = load_kernel_tables(out)
    assert again.model_dump() == t.model_dump()
    m = MoEKernelTableModel(again, QWEN, H200, layout=Parallelism(tp=1, dp=4, ep=4), weight_dtype="fp8")
    assert m.curve.table.source_dtype == "fp8_block" and m.curve.kernel == "cutlass"
    # fp4 weights read the NVFP4 MoE layer and NVFP4 GEMMs, and the step counts as measured
    m = MoEKernelTableModel(again, QWEN, get_hardware("b200"), layout=Parallelism(tp=1, dp=2, ep=2),
                            weight_dtype="fp4", kv_dtype="fp8")
    assert m.curve.kernel == "trtllm_nvfp4" and m.gemm.table.dtype == "fp4" and not m.notes
    assert m.step_sources(np.ones(16, dtype=int), np.full(16, 100)) == {"interpolated": 1}
    # a layout only the per-tensor kernel measured is not read from it: the roofline prices it
    m = MoEKernelTableModel(again, QWEN, H200, layout=Parallelism(tp=8), weight_dtype="fp8", kv_dtype="fp8")
    assert m.curve is None and "no fp8 MoE measurement at moe_tp 8 x ep 1" in m.notes[0]


def test_converter_takes_per_tensor_fp8_only_for_a_shape_without_block_scaled_measurements(tmp_path):
    import pandas as pd

    root = fixture_tree(tmp_path / "systems")
    path = root / "data" / "h200_sxm" / "moe" / "vllm" / "0.24.0" / "moe_perf.csv"
    frame = pd.read_csv(path)
    frame[frame["moe_dtype"] != "fp8_block"].to_csv(path, index=False)
    t = convert("h200", "vllm", "qwen3-30b-a3b", aiconfigurator_root=str(root))
    fp8 = t.moe_for("fp8")
    assert [(x.source_dtype, sorted((y.tp, y.ep) for y in x.layouts)) for x in fp8] == [("fp8", [(1, 1), (8, 1)])]


def test_converter_refuses_bad_input(tmp_path):
    import pandas as pd

    root = fixture_tree(tmp_path / "systems")
    with pytest.raises(ConfigError, match=r"no MoE measurements of qwen3-235b-a22b's shape \(hidden 4096"):
        convert("h200", "vllm", "qwen3-235b-a22b", aiconfigurator_root=str(root))
    path = root / "data" / "h200_sxm" / "moe" / "vllm" / "0.24.0" / "moe_perf.csv"
    pd.read_csv(path).drop(columns=["distribution"]).to_csv(path, index=False)
    with pytest.raises(ConfigError, match="missing column.s. distribution"):
        convert("h200", "vllm", "qwen3-30b-a3b", aiconfigurator_root=str(root))
    path.unlink()
    with pytest.raises(ConfigError, match="no vllm MoE table at or below 0.24.0"):
        convert("h200", "vllm", "qwen3-30b-a3b", aiconfigurator_root=str(root))


@pytest.mark.skipif(importlib.util.find_spec("aiconfigurator_core") is None, reason="aiconfigurator-core not installed")
def test_the_real_converter_reproduces_the_shipped_moe_tables():
    path, _ = find_tables("vllm", None, "h200", "deepseek-v3")
    shipped = load_kernel_tables(path)
    fresh = convert("h200", "vllm", "deepseek-v3")
    assert fresh.moe == shipped.moe and fresh.gemm == shipped.gemm and fresh.mla == shipped.mla


def add_deepseek(root):
    """DeepSeek-V3's MoE shape and MLA decode modules in the hand-made folder."""
    import pandas as pd

    data = root / "data" / "h200_sxm"
    path = data / "moe" / "vllm" / "0.24.0" / "moe_perf.csv"
    frame = pd.read_csv(path)
    extra = frame[frame["moe_dtype"] == "fp8_block"].assign(hidden_size=7168, inter_size=2048, num_experts=256)
    pd.concat([frame, extra]).to_csv(path, index=False)
    common = {"framework": "VLLM", "version": "0.24.0", "device": "NVIDIA H200", "op_name": "mla_generation_module",
              "architecture": "DeepseekV3ForCausalLM", "mla_dtype": "bfloat16", "tp_size": 1, "isl": 1}
    rows = [{**common, "kernel_source": kernel, "model": model, "kv_cache_dtype": kv, "gemm_type": gemm,
             "num_heads": h, "batch_size": b, "step": s, "latency": 1e-3 * mla_us(b, s + 1)}
            for model in ("deepseek-ai/DeepSeek-V3", "someone/Other")
            for kernel, kv in (("FLASHMLA", "fp8"), ("FLASH_ATTN_MLA", "bfloat16"))
            for gemm in ("bfloat16", "fp8_block") for h in (1, 16, 32, 64, 128) for b in (1, 8) for s in (1, 1023)]
    write_table(data, "mla", "vllm", "0.24.0", "mla_generation_module", rows)
    # prefill: kernels switch with the prompt length, and the 128-heads slice lacks 128 tokens
    context = [{**common, "op_name": "mla_context_module", "kernel_source": kernel, "model": "deepseek-ai/DeepSeek-V3",
                "kv_cache_dtype": "fp8", "gemm_type": "fp8_block", "num_heads": h, "batch_size": b, "isl": p, "step": 0,
                "latency": 1e-3 * mla_prefill_us(b, p)}
               for kernel, prompts in (("FLASHMLA", (16, 128)), ("FLASH_ATTN", (256, 4096)))
               for h in (16, 32, 64, 128) for b in (1, 8) for p in prompts if not (h == 128 and p == 128)]
    write_table(data, "mla", "vllm", "0.24.0", "mla_context_module", context)
    return root


def test_converter_writes_the_mla_decode_modules_of_the_models_heads(tmp_path):
    root = add_deepseek(fixture_tree(tmp_path / "systems"))
    t = convert("h200", "vllm", "deepseek-v3", aiconfigurator_root=str(root))
    assert [(x.phase, x.gemm_dtype, x.source_gemm_dtype) for x in t.mla] == [
        ("generation", "bf16", "bfloat16"), ("generation", "fp8", "fp8_block"), ("context", "fp8", "fp8_block")]
    prefill = t.mla_for("fp8", "context").table
    assert prefill.seq == "16 256 4096"  # the lengths every slice measured
    assert {x.kernel for x in prefill.slices} == {"FLASHMLA / FLASH_ATTN"} and len(prefill.slices) == 4
    table = t.mla_for("fp8").table
    assert table.seq == "2 1024" and table.batch == "1 8"  # KV length = isl + step
    assert {(x.heads, x.kv_heads, x.head_dim, x.kv_dtype, x.kernel) for x in table.slices} == {
        (h, 1, 576, kv, k) for h in (128, 64, 32, 16) for kv, k in (("fp8", "FLASHMLA"), ("bf16", "FLASH_ATTN_MLA"))}
    assert "FLASHMLA; FLASH_ATTN_MLA" in t.source.files["mla_generation_module"]
    out = write(t, tmp_path / "v3.yaml")
    assert "# MLA decode layers: data/h200_sxm/mla/vllm/0.24.0/mla_generation_module_perf" in out.read_text()
    assert "# MLA prefill layers: data/h200_sxm/mla/vllm/0.24.0/mla_context_module_perf" in out.read_text()
    assert load_kernel_tables(out).model_dump() == t.model_dump()
    m = MoEKernelTableModel(load_kernel_tables(out), V3, H200, layout=Parallelism(tp=1, dp=8, ep=8),
                            weight_dtype="fp8", kv_dtype="fp8")
    # the folder has no fp8 GEMMs, so the module (which holds the projections) is not used alone
    assert m.mla is None and "MLA module table unused without a GEMM table" in m.notes[-1]

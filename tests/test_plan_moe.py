"""Plans over parallel layouts of a mixture of experts: layouts that cannot hold the model are
rejected before any simulation, with the bytes needed and available."""

import yaml

from simulator.spec import get_hardware
from simulator.studies.plan import run_plan

PLAN = {
    "name": "moeplan",
    "model": "qwen3-235b-a22b",
    "hardware": "h100-sxm",
    "deployment": {"weight_dtype": "fp8", "kv_dtype": "fp8"},
    "scheduler": {"max_num_seqs": 64},
    "workload": {
        "arrival": {"process": "poisson", "rate": 1.0},
        "num_requests": 50,
        "classes": [{"name": "chat", "prompt_tokens": {"dist": "constant", "value": 500},
                     "output_tokens": {"dist": "constant", "value": 100}}],
    },
    "plan": {
        "slo": {"p90_ttft_ms": 2000, "p90_tpot_ms": 100},
        "search": {"hardware": ["h100-sxm"],
                   "layouts": [{"tensor_parallel": 2}, {"data_parallel_attention": 2, "expert_parallel": 2},
                               {"tensor_parallel": 4, "expert_parallel": 3}],
                   "weight_dtype": ["fp8"], "replicas": {"min": 1, "max": 2}},
        "seeds": 1,
    },
}


def test_layouts_that_cannot_hold_the_model_are_rejected_with_the_bytes(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(PLAN))
    result = run_plan(path, workers=1, progress=False)
    assert not result.feasible and result.simulations == 0
    reasons = result.rejected_groups
    assert set(reasons) == {"h100-sxm tp=2 fp8 seqs=64", "h100-sxm tp=1 dp=2 ep=2 fp8 seqs=64",
                            "h100-sxm tp=4 ep=3 fp8 seqs=64"}
    tp2 = reasons["h100-sxm tp=2 fp8 seqs=64"]
    # 235B parameters in fp8 over 2 GPUs: about 118 GB each, against 0.9 x 85.5 GB.
    assert "117.9 GB weights" in tp2
    assert tp2.startswith("memory:") and "does not fit" in tp2 and "GB weights" in tp2
    available = get_hardware("h100-sxm").memory_bytes * 0.9 / 1e9
    assert f"{available:.1f} GB are available" in tp2 and "tp=4 would fit" in tp2
    assert reasons["h100-sxm tp=1 dp=2 ep=2 fp8 seqs=64"].startswith("memory:")
    bad = reasons["h100-sxm tp=4 ep=3 fp8 seqs=64"]
    assert bad.startswith("layout:") and "expert_parallel" in bad
    c = result.candidates
    assert (c["status"] == "rejected").all() and len(c) == 3 * 2
    assert sorted(c["gpus"].unique()) == [2, 4, 8]  # tp x dp x pp x replicas


def test_shipped_moe_scenarios_build_with_their_layouts():
    from pathlib import Path

    from simulator.scenario import build_deployment, load_scenario

    root = Path(__file__).resolve().parent.parent / "scenarios"
    ep = build_deployment(load_scenario(root / "deepseek_v3_h200.yaml"))
    tp = build_deployment(load_scenario(root / "deepseek_v3_h200.yaml", [
        "deployment.tensor_parallel=8", "deployment.data_parallel_attention=1", "deployment.expert_parallel=1"]))
    assert ep.entry.gpus_per_replica == tp.entry.gpus_per_replica == 8
    assert ep.usd_per_hour == tp.usd_per_hour
    # Data-parallel attention caches each sequence once; TP 8 copies the MLA latent to every rank.
    assert ep.entry.kv_tokens_per_replica > 5 * tp.entry.kv_tokens_per_replica
    assert ep.entry.execution.describe()["parallelism"]["expert_parallel"] == 8
    plan = load_scenario(root / "plan_moe.yaml").plan
    layouts = plan.search.layout_dicts()
    assert {"tensor_parallel": 4, "data_parallel_attention": 1, "expert_parallel": 1, "pipeline_parallel": 2} in layouts

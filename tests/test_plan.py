"""`llmsim plan`: the cheapest deployment meeting every SLO, pruning, rejections and bad input."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from simulator.cli import main
from simulator.studies.plan import run_plan

ROOT = Path(__file__).resolve().parent.parent

PLAN = {
    "name": "tinyplan",
    "model": "llama-3-8b",
    "hardware": "a100-80gb",
    "scheduler": {"max_num_seqs": 32},
    "run": {"window": {"warmup_s": 5, "measure_s": 20, "cooldown_s": 5, "max_extensions": 0}},
    "workload": {
        "arrival": {"process": "poisson", "rate": 1.0},
        "num_requests": 150,
        "classes": [{"name": "chat", "prompt_tokens": {"dist": "lognormal", "mean": 500, "std": 300},
                     "output_tokens": {"dist": "lognormal", "mean": 120, "std": 80}}],
    },
    "plan": {
        "slo": {"p90_ttft_ms": 500, "p90_tpot_ms": 60, "attainment_pct": 90},
        "target": {"rate": 12},
        "search": {"hardware": ["a10g", "a100-80gb"], "tensor_parallel": [1, 3],
                   "weight_dtype": ["fp16", "fp32"], "replicas": {"min": 1, "max": 6}},
        "seeds": 2,
        "headroom_steps": 1,
    },
}


def write(tmp_path, data=PLAN):
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def changed(**plan):
    data = json.loads(json.dumps(PLAN))
    data["plan"].update(plan)
    return data


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return run_plan(write(tmp_path_factory.mktemp("plan")), workers=1, progress=False)


def test_answer_is_the_cheapest_candidate_meeting_every_slo(result):
    c = result.candidates
    assert result.feasible
    w = c.loc[result.winner]
    assert w["status"] == "met" and w["p_slo_met"] == 1.0 and w["seeds_run"] == 2
    assert w["ttft_p90_ms"] <= 500 and w["tpot_p90_ms"] <= 60
    cheaper = c[c["usd_per_hour"] < w["usd_per_hour"]]
    assert not (cheaper["status"] == "met").any()
    # the candidate space is every group x replica count, with a cost for each simulated one
    assert len(c) == 2 * 2 * 2 * 6
    sim = c[c["status"].isin(["met", "missed"])]
    expected = sim["tensor_parallel"] * sim["replicas"] * sim["hardware"].map({"a10g": 1.006, "a100-80gb": 1.79})
    assert sim["usd_per_hour"].to_numpy() == pytest.approx(expected.to_numpy())


def test_memory_and_tp_rejections_name_the_reason_before_simulating(result):
    c = result.candidates
    rejected = c[c["status"] == "rejected"]
    tp3 = rejected[rejected["tensor_parallel"] == 3]
    assert len(tp3) == 2 * 2 * 6 and tp3["reason"].str.contains("num_heads").all()
    fp32_a10g = rejected[(rejected["hardware"] == "a10g") & (rejected["weight_dtype"] == "fp32")
                         & (rejected["tensor_parallel"] == 1)]
    assert len(fp32_a10g) == 6 and fp32_a10g["reason"].str.contains("does not fit").all()
    assert rejected["ttft_p90_ms"].isna().all()  # never simulated


def test_replica_search_prunes_and_stays_consistent(result):
    c = result.candidates
    assert (c["status"] == "pruned").any()
    for _, group in c[c["status"] != "rejected"].groupby(["hardware", "weight_dtype"]):
        met = group[group["status"] == "met"]["replicas"]
        missed = group[group["status"] == "missed"]["replicas"]
        if len(met) and len(missed):
            assert missed.max() < met.min()  # latency falls as replicas are added
        more = group[group["reason"].str.startswith("more replicas", na=False)]
        if len(met):
            assert (more["replicas"] > met.min()).all()


def test_headroom_of_each_answer_is_at_least_one(result):
    c = result.candidates
    best = c[c["headroom"].notna()]
    assert len(best) >= 1 and (best["headroom"] >= 1).all()


def test_plan_outputs(result, tmp_path):
    out = result.save(tmp_path / "plan")
    doc = json.loads((out / "plan.json").read_text())
    assert doc["feasible"] and doc["answer"]["hardware"] in ("a10g", "a100-80gb")
    assert "p90 TTFT <= 500 ms" in doc["slo_rule"] and doc["seeds"] == 2
    assert any("does not fit" in r for r in doc["rejected_groups"].values())
    assert len(pd.read_csv(out / "candidates.csv")) == len(result.candidates)
    assert (out / "pareto.png").stat().st_size > 0


def test_n_plus_one_needs_a_spare_replica(tmp_path):
    base = run_plan(write(tmp_path, changed(seeds=1, headroom_steps=0)), workers=1, progress=False)
    spare = run_plan(write(tmp_path, changed(seeds=1, headroom_steps=0, n_plus_one=True)), workers=1, progress=False)
    a, b = base.candidates.loc[base.winner], spare.candidates.loc[spare.winner]
    assert b["replicas"] >= 2 and b["usd_per_hour"] > a["usd_per_hour"]
    assert (spare.candidates[spare.candidates["replicas"] == 1]["status"] == "rejected").all()


def test_a_replayed_trace_runs_one_seed(tmp_path):
    data = json.loads(json.dumps(PLAN))
    data.pop("run")
    data["workload"] = {"arrival": {"process": "trace", "format": "azure", "limit": 200,
                                    "path": str(ROOT / "scenarios/traces/azure_conv_2023.csv")},
                        "classes": [{"name": "conversation"}]}
    data["plan"].update(target={"growth": 1.0}, headroom_steps=0)
    data["plan"]["search"].update(hardware=["a100-80gb"], tensor_parallel=[1], weight_dtype=["fp16"])
    res = run_plan(write(tmp_path, data), workers=1, progress=False)
    assert res.seeds == 1 and any("1 seed" in n for n in res.notes)


def test_screening_on_the_busiest_window_then_verifying_on_the_whole_trace(tmp_path):
    data = json.loads(json.dumps(PLAN))
    data.pop("run")
    data["workload"] = {"arrival": {"process": "trace", "format": "azure", "limit": 800,
                                    "path": str(ROOT / "scenarios/traces/azure_conv_2023.csv")},
                        "classes": [{"name": "conversation"}]}
    data["plan"].update(target={"growth": 2.0}, headroom_steps=0, screening_requests=200, finalists=2)
    data["plan"]["search"].update(hardware=["a10g", "l4", "a100-80gb"], tensor_parallel=[1], weight_dtype=["fp16"])
    res = run_plan(write(tmp_path, data), workers=1, progress=False)
    assert any("busiest 200 requests" in n for n in res.notes)
    w = res.candidates.loc[res.winner]
    assert w["stage"] == "full" and w["status"] == "met"  # the answer was checked on the whole workload
    assert (res.candidates["stage"] == "screen").any()  # the other groups were only screened


def test_cli_plan_exit_codes_and_messages(tmp_path, capsys):
    code = main(["plan", str(write(tmp_path, changed(seeds=1, headroom_steps=0))), "--workers", "1",
                 "--out", str(tmp_path / "ok")])
    out = capsys.readouterr().out
    assert code == 0 and "answer:" in out and (tmp_path / "ok" / "plan.json").exists()

    impossible = changed(seeds=1, search={"hardware": ["a10g"], "replicas": {"min": 1, "max": 1}})
    code = main(["plan", str(write(tmp_path, impossible)), "--workers", "1", "--out", str(tmp_path / "no")])
    out = capsys.readouterr().out
    assert code == 1
    assert "no candidate meets every SLO" in out and "closest:" in out and "x the limit" in out
    assert json.loads((tmp_path / "no" / "plan.json").read_text())["closest"] is not None


@pytest.mark.parametrize(
    "plan, expected",
    [
        ({"search": {"hardware": []}}, ["plan.search.hardware", "at least 1"]),
        ({"search": {"hardware": ["a10g"], "replicas": {"min": 4, "max": 2}}}, ["min (4)", "empty"]),
        ({"slo": {"p90_ttfb_ms": 100}}, ["plan.slo", "unknown SLO metric 'p90_ttfb_ms'", "p90_ttft_ms"]),
        ({"slo": {"p42_ttft_ms": 100}}, ["unknown SLO metric 'p42_ttft_ms'"]),
        ({"search": {"hardware": ["h100"]}}, ["unknown hardware 'h100'"]),
    ],
    ids=["empty-hardware", "empty-replicas", "unknown-metric", "unknown-percentile", "unknown-gpu"],
)
def test_bad_plans_exit_2_with_one_message(tmp_path, capsys, plan, expected):
    data = json.loads(json.dumps(PLAN))
    data["plan"].update(plan)
    code = main(["plan", str(write(tmp_path, data)), "--workers", "1", "--out", str(tmp_path / "res")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    for fragment in expected:
        assert fragment in err, err
    assert not (tmp_path / "res").exists()


def test_when_every_candidate_is_rejected_the_plan_says_why(tmp_path, capsys):
    data = json.loads(json.dumps(PLAN))
    data["plan"]["search"].update(hardware=["a10g"], weight_dtype=["fp32"], tensor_parallel=[1])
    code = main(["plan", str(write(tmp_path, data)), "--workers", "1", "--out", str(tmp_path / "res")])
    out = capsys.readouterr().out
    assert code == 1 and "every group was rejected" in out and "does not fit" in out
    assert json.loads((tmp_path / "res" / "plan.json").read_text())["feasible"] is False


def test_a_scenario_without_plan_section_is_a_clear_error(tmp_path, capsys):
    data = {k: v for k, v in PLAN.items() if k != "plan"}
    assert main(["plan", str(write(tmp_path, data))]) == 2
    assert "no plan: section" in capsys.readouterr().err

"""`llmsim sweep`: value parsing, the grid, load-latency outputs and the highest rate meeting SLOs."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from simulator.cli import main
from simulator.common.errors import ConfigError
from simulator.metrics.objectives import SLORule, SLOTarget
from simulator.scenario import parse_scenario, run
from simulator.studies.search_space import grid, parse_axes, parse_set
from simulator.studies.sweep import run_sweep

SCENARIO = {
    "name": "tiny",
    "model": "llama-3-8b",
    "hardware": "a100-80gb",
    "scheduler": {"max_num_seqs": 32},
    "workload": {
        "arrival": {"process": "poisson", "rate": 2.0},
        "num_requests": 150,
        "classes": [{"name": "chat", "prompt_tokens": {"dist": "lognormal", "mean": 500, "std": 300},
                     "output_tokens": {"dist": "lognormal", "mean": 120, "std": 80},
                     "slo": {"ttft_ms": 500, "tpot_ms": 50}}],
    },
}


def write(tmp_path, data=SCENARIO):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "item, key, values",
    [
        ("workload.arrival.rate=1:9:2", "workload.arrival.rate", (1, 3, 5, 7, 9)),
        ("workload.arrival.rate=1:40:2", "workload.arrival.rate", tuple(range(1, 40, 2))),
        ("a.b=0.5:1.5:0.25", "a.b", (0.5, 0.75, 1.0, 1.25, 1.5)),
        ("deployment.replicas=1,2,4", "deployment.replicas", (1, 2, 4)),
        ("scheduler.policy=vllm, static", "scheduler.policy", ("vllm", "static")),
        ("deployment.weight_dtype=fp8", "deployment.weight_dtype", ("fp8",)),
        ("workload.classes=[1, 2]", "workload.classes", ([1, 2],)),
    ],
)
def test_set_values_parse_as_ranges_lists_or_plain_values(item, key, values):
    assert parse_set(item) == (key, values)


@pytest.mark.parametrize("item", ["rate=5:1:1", "rate=1:5:0", "rate", "rate=1,,2"])
def test_bad_sweep_values_are_config_errors(item):
    with pytest.raises(ConfigError, match="--set"):
        parse_set(item)


def test_grid_varies_the_first_axis_slowest():
    points = grid(parse_axes(["a=1,2", "b=x,y,z"]))
    assert [(p["a"], p["b"]) for p in points] == [(1, "x"), (1, "y"), (1, "z"), (2, "x"), (2, "y"), (2, "z")]


def test_sweep_runs_every_point_and_seed_and_marks_saturation(tmp_path):
    res = run_sweep(write(tmp_path), ["workload.arrival.rate=2,60", "scheduler.max_num_seqs=16,64"], seeds=2,
                    workers=1, max_rate=False, progress=False)
    assert res.keys == ["workload.arrival.rate", "scheduler.max_num_seqs"]
    assert len(res.points) == 4 and (res.points["seeds"] == 2).all()
    assert len(res.runs[res.runs["stage"] == "sweep"]) == 8
    light = res.points[res.points["workload.arrival.rate"] == 2]
    heavy = res.points[res.points["workload.arrival.rate"] == 60]
    assert light["slo_met"].all() and not light["saturated"].any()
    assert heavy["saturated"].all() and not heavy["slo_met"].any()
    assert (heavy["ttft_p90_ms"].to_numpy() > light["ttft_p90_ms"].to_numpy()).all()
    out = res.save(tmp_path / "out")
    table = pd.read_csv(out / "sweep.csv")
    assert {"ttft_p90_ms", "tpot_p99_ms", "p_slo_met", "saturated", "ttft_p90_std_ms"} <= set(table.columns)
    assert (out / "load_latency.png").stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_max_rate_lies_between_a_rate_that_meets_and_one_that_misses(tmp_path):
    res = run_sweep(write(tmp_path), ["workload.arrival.rate=2:26:8"], seeds=2, workers=1, progress=False)
    [found] = res.max_rate
    lo, hi = found["bracket"]
    assert lo == found["max_rate"] and 2 <= lo < hi <= 26
    assert (hi - lo) <= 0.02 * hi
    runs = res.runs
    at_lo = runs[runs["workload.arrival.rate"] == lo]
    at_hi = runs[runs["workload.arrival.rate"] == hi]
    assert len(at_lo) == 2 and at_lo["slo_met"].all()  # every seed meets the SLOs at the answer
    assert not at_hi["slo_met"].all()
    assert "p90 TTFT <= 500 ms" in res.rule and "attainment >= 90%" in res.rule


def test_a_stricter_slo_target_lowers_the_max_rate(tmp_path):
    loose = run_sweep(write(tmp_path), ["workload.arrival.rate=2:26:8"], workers=1, progress=False)
    strict_data = SCENARIO | {"slo_target": {"percentile": 99, "attainment_pct": 99.5}}
    strict = run_sweep(write(tmp_path, strict_data), ["workload.arrival.rate=2:26:8"], workers=1, progress=False)
    assert strict.max_rate[0]["max_rate"] <= loose.max_rate[0]["max_rate"]
    assert "p99" in strict.rule


def test_slo_rule_checks_each_class_percentile_and_attainment():
    scenario = parse_scenario(SCENARIO)
    summary = run(scenario).summary
    rule = SLORule.from_classes({"chat": scenario.workload.classes[0].slo}, SLOTarget(percentile=90))
    verdict = rule.evaluate(summary)
    assert [c.name for c in verdict.checks] == ["chat p90 ttft", "chat p90 tpot", "chat attainment"]
    assert verdict.checks[0].value == pytest.approx(summary.classes["chat"].latency["ttft"].p90 * 1000)
    tight = SLORule.from_limits({"p50_ttft_ms": 1.0})
    missed = tight.evaluate(summary)
    assert not missed.met and "x the limit" in missed.misses()[0]


def test_cli_sweep_writes_outputs_and_reports_the_max_rate(tmp_path, capsys):
    code = main(["sweep", str(write(tmp_path)), "--set", "workload.arrival.rate=2:26:8", "--workers", "1",
                 "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert "highest rate meeting the SLOs" in out and "SLO rule" in out
    doc = json.loads((tmp_path / "out" / "max_rate.json").read_text())
    assert doc["results"][0]["max_rate"] > 2


def test_cli_sweep_bad_input_exits_2(tmp_path, capsys):
    no_slo = json.loads(json.dumps(SCENARIO))
    del no_slo["workload"]["classes"][0]["slo"]
    code = main(["sweep", str(write(tmp_path, no_slo)), "--set", "workload.arrival.rate=1,2", "--max-rate",
                 "--workers", "1"])
    assert code == 2 and "needs SLOs" in capsys.readouterr().err
    code = main(["sweep", str(write(tmp_path)), "--set", "deployment.replicas=1,two", "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "deployment.replicas" in err and "two" in err
    code = main(["sweep", str(write(tmp_path)), "--set", "deployment.replicas=2"])
    assert code == 2 and "nothing to sweep" in capsys.readouterr().err


def test_a_sweep_point_prices_steps_as_run_does(tmp_path):
    """Sweeps and plans send scenarios to workers as dumped data: the step-time model chosen (kernel
    tables here, a calibration file below) must survive the round trip."""
    from simulator.scenario import load_scenario, run
    from simulator.studies.trials import Trial, run_trial

    root = Path(__file__).resolve().parent.parent / "scenarios"
    for name in ("azure_conv_a100.yaml", "cpu_llama100m.yaml"):
        scenario = load_scenario(root / name, ["workload.arrival.limit=200"] if name.startswith("azure")
                                 else ["workload.num_requests=20"])
        row = run_trial(Trial.of(scenario, scenario.seed).task())
        info = run(scenario).info
        assert row["step_sources"] == info["step_sources"] and row["step_sources"]
        assert "roofline" not in row["step_model"]

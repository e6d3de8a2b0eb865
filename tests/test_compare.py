"""Paired comparisons: common random numbers, confidence intervals, variants, the CLI."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from simulator.cli import main
from simulator.common.errors import ConfigError
from simulator.scenario import parse_scenario
from simulator.studies.compare import (
    METRICS,
    Variant,
    compare,
    paired_difference,
    parse_variant,
    policy_variant,
)

TINY = {
    "name": "tiny",
    "model": "llama-3-8b",
    "hardware": "a100-80gb",
    "scheduler": {"policy": "vllm", "max_num_seqs": 32},
    "workload": {
        "arrival": {"process": "poisson", "rate": 4.0},
        "num_requests": 120,
        "classes": [
            {
                "name": "chat",
                "prompt_tokens": {"dist": "lognormal", "mean": 400, "std": 200},
                "output_tokens": {"dist": "lognormal", "mean": 100, "std": 60},
                "slo": {"ttft_ms": 1000, "tpot_ms": 50},
            }
        ],
    },
}


@pytest.fixture(scope="module")
def vllm_vs_static():
    return compare(parse_scenario(TINY), [policy_variant("vllm"), policy_variant("static")], replications=5)


def test_every_variant_serves_the_same_requests_in_a_replication(vllm_vs_static):
    c = vllm_vs_static
    assert c.common_random_numbers
    a, b = c.requests["vllm"], c.requests["static"]
    pd.testing.assert_frame_equal(a[["id", "arrival", "prompt_tokens"]], b[["id", "arrival", "prompt_tokens"]])
    # ...and replications differ from each other (one seed each)
    assert c.runs.groupby("variant")["workload"].nunique().eq(5).all()
    assert c.seeds == [0, 1, 2, 3, 4]
    assert list(c.runs.seed) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_table_holds_means_and_paired_differences(vllm_vs_static):
    c = vllm_vs_static
    t = c.table.set_index(["variant", "metric"])
    assert len(t) == 2 * len(METRICS)
    runs = c.runs.set_index(["variant", "replication"])
    base, other = runs.loc["vllm", "ttft_p90_ms"].to_numpy(), runs.loc["static", "ttft_p90_ms"].to_numpy()
    row = t.loc[("static", "ttft_p90_ms")]
    assert row["mean"] == pytest.approx(other.mean())
    assert row["diff"] == pytest.approx((other - base).mean())
    assert row["rel_diff_pct"] == pytest.approx(100 * (other.mean() / base.mean() - 1))
    assert row["rel_ci_low_pct"] < row["rel_diff_pct"] < row["rel_ci_high_pct"]
    # static batching makes new requests wait for the whole batch: much worse TTFT
    assert row["significant"] and row["verdict"] == "worse" and row["ci_low"] > 0
    assert t.loc[("vllm", "ttft_p90_ms"), "diff"] == 0.0


def test_intervals_are_paired_bootstraps_and_p_values_paired_t_tests():
    rng = np.random.default_rng(7)
    base = rng.normal(100, 10, size=8)
    other = base + rng.normal(3, 2, size=8)
    d = paired_difference(base, other)
    ref = stats.ttest_rel(other, base)
    boot = stats.bootstrap((other - base,), np.mean, n_resamples=9999, method="percentile",
                           random_state=np.random.default_rng(20240601))
    assert d["n"] == 8
    assert d["diff"] == pytest.approx(np.mean(other - base), rel=1e-12)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((boot.confidence_interval.low,
                                                         boot.confidence_interval.high), rel=1e-9)
    assert d["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    # the ratio's interval carries the baseline's spread: it is not the difference's interval / mean
    assert d["ratio"] == pytest.approx(other.mean() / base.mean())
    assert d["ratio_low"] < d["ratio"] < d["ratio_high"]
    assert paired_difference(base, other) == d  # a fixed bootstrap seed: deterministic


def test_holm_adjustment_by_hand():
    from simulator.studies.compare_stats import holm

    # sorted 0.01, 0.02, 0.03, 0.04 -> 4 x 0.01, 3 x 0.02, max(previous, 2 x 0.03), max(previous, 0.04)
    assert holm([0.04, 0.01, 0.03, 0.02]).tolist() == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, np.nan, 0.9]).tolist()[0] == pytest.approx(1.0)
    assert np.isnan(holm([0.5, np.nan])[1])


def test_float_noise_of_identical_runs_is_no_difference():
    base = np.array([345.0, 350.0, 360.0])
    d = paired_difference(base, base + np.array([1.6e-11, -8e-12, 3e-12]))
    assert d["diff"] == 0.0 and d["ci_low"] == 0.0 and d["ci_high"] == 0.0 and d["p_value"] == 1.0


def test_numbers_are_formatted_to_three_significant_figures():
    from simulator.studies.compare_report import sig

    assert [sig(v) for v in (3.83e-05, 0.0383, 3.8349, 38.349, 383.49, 38349.0, 0.0, -12.34)] == [
        "0.0000383", "0.0383", "3.83", "38.3", "383", "38,300", "0", "-12.3"]


def test_paired_difference_edge_cases():
    same = paired_difference([1.0, 2.0], [1.0, 2.0])
    assert (same["diff"], same["ci_low"], same["ci_high"], same["p_value"], same["ratio"]) == (0, 0, 0, 1, 1)
    one = paired_difference([1.0], [3.0])
    assert one["diff"] == 2.0 and np.isnan(one["ci_low"])
    skipped = paired_difference([1.0, np.nan, 2.0], [2.0, 5.0, 4.0])  # a missing value drops its pair
    assert skipped["n"] == 2 and skipped["diff"] == 1.5


def test_a_variant_compared_with_itself_differs_by_exactly_zero():
    c = compare(parse_scenario(TINY), [Variant("a"), Variant("b", ("scheduler.policy=vllm",))], replications=2)
    others = c.table[c.table.variant == "b"]
    measured = others.dropna(subset=["diff"])
    assert len(measured) == len(METRICS)
    assert (measured["diff"] == 0).all() and (measured["ci_low"] == 0).all() and (measured["ci_high"] == 0).all()
    assert not measured["significant"].any()
    assert set(measured["verdict"]) == {"no significant difference"}


def test_policy_names_a_batching_policy_or_a_router():
    assert policy_variant("static") == Variant("static", ("scheduler.policy=static",))
    assert policy_variant("power_of_two") == Variant("power_of_two", ("router=power_of_two",))
    with pytest.raises(ConfigError, match="--policy 'fastest'.*vllm.*round_robin"):
        policy_variant("fastest")


def test_parse_variant():
    v = parse_variant("disagg:disaggregation.prefill.replicas=1, disaggregation.decode.replicas=2")
    assert v == Variant("disagg", ("disaggregation.prefill.replicas=1", "disaggregation.decode.replicas=2"))
    assert parse_variant("asis") == Variant("asis") == parse_variant("asis:")
    # a comma inside a YAML value does not start a new override
    assert parse_variant("x:a.b=[1,2],c=3").overrides == ("a.b=[1,2]", "c=3")
    for bad in (":a=1", "x:a", "bad name:a=1"):
        with pytest.raises(ConfigError, match="--variant"):
            parse_variant(bad)


def test_variants_are_validated_before_any_run():
    sc = parse_scenario(TINY)
    with pytest.raises(ConfigError, match="(?s)variant 'typo'.*schedulr: unknown key"):
        compare(sc, [Variant("a"), Variant("typo", ("schedulr.policy=static",))])
    with pytest.raises(ConfigError, match="at least two"):
        compare(sc, [Variant("a")])
    with pytest.raises(ConfigError, match="unique, repeated: a"):
        compare(sc, [Variant("a"), Variant("a")])


def test_cli_writes_the_comparison(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY | {"workload": TINY["workload"] | {"num_requests": 60}}))
    out = tmp_path / "out"
    code = main(["compare", str(path), "--variant", "small:scheduler.max_num_seqs=4", "--policy", "vllm",
                 "--replications", "2", "--workers", "1", "--out", str(out)])
    assert code == 0
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["baseline"] == "small"  # the first variant given, whichever flag gave it
    assert [v["name"] for v in saved["variants"]] == ["small", "vllm"]
    assert saved["seeds"] == [0, 1] and saved["common_random_numbers"] is True
    table = pd.read_csv(out / "comparison.csv")
    assert set(table.variant) == {"small", "vllm"} and len(table) == 2 * len(METRICS)
    assert len(pd.read_csv(out / "runs.csv")) == 4
    for name in ("ttft_cdf", "tpot_cdf", "e2e_cdf", "differences"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "vllm - small" in printed and "paired-bootstrap" in printed and "Holm" in printed


def test_cli_bad_policy_is_exit_2_with_one_clear_message(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    assert main(["compare", str(path), "--policy", "vllm", "--policy", "fifo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llmsim: error: --policy 'fifo'") and "static" in err and "round_robin" in err
    assert "Traceback" not in err

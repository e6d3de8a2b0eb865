"""Published findings on batching and cluster layout, reproduced in direction and rough size by the
scenarios in scenarios/research/ (each file names its paper)."""

from pathlib import Path

import pytest

from simulator.metrics.objectives import SLORule
from simulator.scenario import Scenario, load_scenario, run
from simulator.studies.compare import Variant, compare

RESEARCH = Path(__file__).resolve().parent.parent / "scenarios" / "research"
DISAGGREGATED = Variant(
    "disaggregated", ("disaggregation.prefill.replicas=1", "disaggregation.decode.replicas=1")
)


def meets_objectives(scenario: Scenario, rate: float) -> bool:
    """The scenario's own rule (every class's p90 limits and attainment, not saturated) at `rate`."""
    scenario = Variant("r", (f"workload.arrival.rate={rate}",)).apply(scenario)
    rule = SLORule.from_classes({c.name: c.slo for c in scenario.workload.classes}, scenario.slo_target)
    return rule.evaluate(run(scenario).summary).met


def highest_rate(scenario: Scenario, rates: list[float]) -> float:
    """The highest rate of an ascending grid meeting the objectives, stopping at the first miss."""
    best = 0.0
    for rate in rates:
        if not meets_objectives(scenario, rate):
            break
        best = rate
    return best


@pytest.mark.parametrize("path", sorted(RESEARCH.glob("*.yaml")), ids=lambda p: p.stem)
def test_research_scenarios_name_their_paper(path):
    scenario = load_scenario(path)
    assert " et al." in scenario.description  # a citation: authors, venue, year


def test_continuous_batching_sustains_several_times_the_load_of_static_batching():
    """Orca, vLLM: at equal p90 latency (E2E within 20 s) iteration-level batching sustains 2-4x
    (vLLM) to over 10x (Orca, against FasterTransformer) the request rate of static batching."""
    base = load_scenario(RESEARCH / "continuous_vs_static.yaml")
    rates = [1, 2, 3, 4, 6, 8, 10, 12, 14, 16]
    static = highest_rate(Variant("s", ("scheduler.policy=static",)).apply(base), rates)
    continuous = highest_rate(Variant("c", ("scheduler.policy=vllm",)).apply(base), rates)
    assert static >= 1  # the baseline does serve some load
    assert continuous >= 3 * static


def test_disaggregation_raises_goodput_under_tight_ttft_and_tpot_objectives():
    """DistServe: with long prompts and tight TTFT and TPOT objectives, one prefill plus one decode
    GPU serve about twice the rate two colocated GPUs can, and more good requests per second."""
    colocated = load_scenario(RESEARCH / "disaggregated_long_prompts.yaml")
    disaggregated = DISAGGREGATED.apply(colocated)
    assert disaggregated.price_per_hour() == colocated.price_per_hour()  # the same two GPUs
    rates = [0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5]
    assert highest_rate(disaggregated, rates) >= 2 * max(highest_rate(colocated, rates), 0.5)

    # At the scenario's rate, paired over three seeds: more goodput, significantly
    c = compare(colocated, [Variant("colocated"), DISAGGREGATED], replications=3)
    assert c.common_random_numbers  # both layouts served the very same requests
    row = c.table.set_index(["variant", "metric"]).loc[("disaggregated", "goodput_rps")]
    assert row["verdict"] == "better" and row["rel_diff_pct"] > 30
    tpot = c.table.set_index(["variant", "metric"]).loc[("disaggregated", "tpot_p90_ms")]
    assert tpot["verdict"] == "better"  # no prefill stalls the decodes
    ttft = c.table.set_index(["variant", "metric"]).loc[("disaggregated", "ttft_p90_ms")]
    assert ttft["diff"] > 0  # the price: all prompts queue for one prefill GPU

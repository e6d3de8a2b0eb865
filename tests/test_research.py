"""Published findings on batching policies and KV-cache reuse, reproduced in direction and rough
size by the scenarios in scenarios/research/ (each file names its paper)."""

from pathlib import Path

from simulator.scenario import load_scenario, run

RESEARCH = Path(__file__).resolve().parent.parent / "scenarios" / "research"


def test_chunked_prefill_lowers_tail_tpot_under_mixed_long_prompt_load():
    """Sarathi-Serve: stall-free batching with 512-token chunks cuts p99 TPOT against prefill-first
    scheduling (the paper reports several-fold lower tail latency at equal load); TTFT rises a
    little, since a prompt is now computed over several steps. The prefill-first baseline is vLLM
    v0's scheduler (`vllm-v0`), the one the paper measured against."""
    path = RESEARCH / "sarathi_chunked_prefill.yaml"
    vllm = run(load_scenario(path, ["scheduler.policy=vllm-v0"])).summary
    sarathi = run(load_scenario(path, ["scheduler.policy=sarathi"])).summary
    assert not vllm.saturated and not sarathi.saturated
    assert sarathi.latency["tpot"].p99 < 0.75 * vllm.latency["tpot"].p99
    assert sarathi.latency["itl"].p99 < 0.3 * vllm.latency["itl"].p99  # no step waits for a whole prompt
    assert sarathi.slo_attainment > vllm.slo_attainment
    assert sarathi.latency["ttft"].p50 > vllm.latency["ttft"].p50  # the trade-off the paper discusses


def test_prefix_caching_cuts_ttft_on_the_mooncake_trace():
    """Mooncake, RadixAttention: reusing shared prefixes saves prefill work; here about a third of
    the prompt tokens are found cached and median TTFT falls by more than 40%."""
    path = RESEARCH / "mooncake_prefix_caching.yaml"
    off = run(load_scenario(path, ["scheduler.enable_prefix_caching=false"]))
    on = run(load_scenario(path, ["scheduler.enable_prefix_caching=true"]))
    assert not off.summary.saturated and not on.summary.saturated
    assert 0.25 < on.info["prefix_cache_hit_rate"] < 0.6
    assert "prefix_cache_hit_rate" not in off.info
    for stat in ("p50", "mean"):
        assert getattr(on.summary.latency["ttft"], stat) < 0.6 * getattr(off.summary.latency["ttft"], stat)
    assert on.summary.goodput > off.summary.goodput

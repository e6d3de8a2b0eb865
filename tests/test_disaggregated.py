"""Disaggregated prefill and decode pools: timeline, KV transfer, conservation, cost, validation."""

import numpy as np
import pytest

from simulator.common.errors import ConfigError
from simulator.scenario import build_deployment, parse_scenario, run
from simulator.scheduling import POLICIES
from simulator.scheduling.kv_blocks import blocks_for
from simulator.spec import get_hardware


def scenario(disaggregation=None, workload=None, **over):
    data = {
        "name": "pd",
        "model": "llama-3-8b",
        "hardware": "a100-80gb",
        "scheduler": {"policy": "vllm", "max_num_seqs": 64},
        "disaggregation": {"prefill": {"replicas": 1}, "decode": {"replicas": 1}} | (disaggregation or {}),
        "workload": workload
        or {
            "arrival": {"process": "poisson", "rate": 3.0},
            "num_requests": 300,
            "classes": [
                {
                    "name": "c",
                    "prompt_tokens": {"dist": "lognormal", "mean": 1500, "std": 800},
                    "output_tokens": {"dist": "lognormal", "mean": 150, "std": 100},
                    "slo": {"ttft_ms": 500, "tpot_ms": 40},
                }
            ],
        },
    }
    data.update(over)
    return parse_scenario(data)


def one_request(prompt, output, **disagg):
    workload = {
        "arrival": {"process": "constant", "rate": 1.0},
        "num_requests": 1,
        "classes": [
            {"name": "c", "prompt_tokens": {"dist": "constant", "value": prompt},
             "output_tokens": {"dist": "constant", "value": output}}
        ],
    }
    return scenario(disagg, workload)


def test_single_request_timeline_by_hand():
    sc = one_request(1000, 5, link_gbps=25, link_latency_us=50)
    pools = build_deployment(sc)
    prefill, decode = (pool.execution for pool in pools.pools)
    kv_bytes = 2 * 32 * 8 * 128 * 2  # layers x kv heads x head_dim x fp16, K and V (Llama-3-8B)
    assert pools.link.bytes_per_token == kv_bytes
    transfer = 1000 * kv_bytes / 25e9 + 50e-6

    first = prefill.step_time(np.array([1000]), np.array([0]))  # the prompt, then token 1
    expected = [first]
    t = first + transfer
    for k in range(4):  # decode steps over 1000, 1001, ... cached tokens
        t += decode.step_time(np.array([1]), np.array([1000 + k]))
        expected.append(t)
    res = run(sc)
    times = res.records[0].token_times
    np.testing.assert_allclose(times, expected, rtol=1e-12)
    row = res.requests.iloc[0]
    assert row.ttft == pytest.approx(first, rel=1e-12)  # the prefill pool produced the first token
    assert row.e2e == pytest.approx(expected[-1], rel=1e-12)  # the transfer is inside E2E
    assert res.info["disaggregation"]["transfer_s_mean"] == pytest.approx(transfer, rel=1e-12)
    assert row.replica == 1  # finished on the decode replica (ids after the prefill pool's)


def test_ttft_excludes_the_transfer_and_e2e_includes_it():
    fast = run(one_request(2000, 20, link_latency_us=1)).requests.iloc[0]
    slow = run(one_request(2000, 20, link_latency_us=1_000_001)).requests.iloc[0]  # one second more
    assert slow.ttft == fast.ttft
    assert slow.e2e - fast.e2e == pytest.approx(1.0, abs=1e-9)
    assert slow.tpot > fast.tpot  # TPOT spans the gap between first and second token


def test_one_token_requests_finish_on_the_prefill_pool_without_a_transfer():
    res = run(one_request(500, 1))
    assert res.requests.iloc[0].status == "ok" and res.requests.iloc[0].replica == 0
    assert res.info["disaggregation"]["transfers"] == 0


def test_prefill_blocks_are_held_until_the_transfer_ends():
    sc = one_request(1000, 3, link_gbps=1, link_latency_us=0)  # 131 ms to send 1000 tokens
    pools = build_deployment(sc)
    res = run(sc)
    ts = res.timeseries[res.timeseries.replica == 0]
    first = res.records[0].token_times[0]
    held = blocks_for(1000, 16) / pools.pools[0].num_blocks
    at_first = ts[ts.time == first].kv_usage.iloc[-1]
    assert at_first == pytest.approx(held)
    after = ts[ts.time > first]
    assert after.time.iloc[0] == pytest.approx(first + 1000 * pools.link.bytes_per_token / 1e9)
    assert after.kv_usage.iloc[0] == 0.0


def test_conservation_and_every_block_returned():
    sc = scenario({"prefill": {"replicas": 2}, "decode": {"replicas": 2}}, router="least_outstanding_requests")
    res = run(sc)
    counts = res.summary.to_dict()["counts"]
    assert counts["total"] == 300 and counts["completed"] == 300
    from simulator.workload import generate

    wl = generate(sc.workload, seed=sc.seed, max_context=sc.max_model_len()).to_frame().set_index("request_id")
    df = res.requests.set_index("id")
    assert (df.output_tokens == wl.output_tokens.loc[df.index]).all()
    assert set(df.replica) <= {2, 3}  # every multi-token request ended on a decode replica
    assert res.info["disaggregation"]["transfers"] == int((wl.output_tokens > 1).sum())
    last = res.timeseries.groupby("replica").tail(1)
    assert set(last.replica) == {0, 1, 2, 3}
    assert (last.kv_usage == 0).all() and (last.waiting == 0).all() and (last.running == 0).all()


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_merged_decode_steps_match_single_steps_on_both_pools(policy):
    merged = run(scenario(scheduler={"policy": policy, "max_num_seqs": 64}))
    single = run(scenario(scheduler={"policy": policy, "max_num_seqs": 64}, run={"merge_decode_steps": False}))
    for col in ("ttft", "tpot", "e2e", "itl_max"):
        np.testing.assert_allclose(merged.requests[col], single.requests[col], rtol=1e-9, atol=1e-12)


def test_each_pool_has_its_own_hardware_capacity_and_cost():
    sc = scenario({"prefill": {"replicas": 2, "hardware": "h100-sxm", "price_per_gpu_hour": 4.0},
                   "decode": {"replicas": 3, "tensor_parallel": 2}},
                  deployment={"price_per_gpu_hour": 1.5})
    pools = build_deployment(sc)
    assert pools.pools[0].hardware == "h100-sxm"
    assert pools.pools[1].num_blocks > 2 * pools.pools[0].num_blocks  # tp=2 halves KV bytes per GPU
    assert sc.price_per_hour() == pytest.approx(2 * 4.0 + 3 * 2 * 1.5)
    res = run(sc.model_copy(update={"workload": one_request(100, 3).workload}))
    assert res.summary.cost_per_hour == pytest.approx(17.0)
    assert res.info["gpus"] == 8
    # default link: the prefill hardware's interconnect
    assert pools.link.bandwidth == get_hardware("h100-sxm").interconnect_bandwidth


def test_same_seed_gives_the_same_results():
    sc = scenario({"prefill": {"router": "power_of_two", "replicas": 2}, "decode": {"router": "random", "replicas": 2}})
    assert run(sc).summary.to_dict() == run(sc).summary.to_dict()


@pytest.mark.parametrize(
    "section, message",
    [
        ({"prefill": {"hardware": "tpu9"}}, "disaggregation.prefill.hardware: unknown hardware 'tpu9'"),
        ({"decode": {"policy": "fifo"}}, "disaggregation.decode.policy: unknown policy 'fifo'"),
        ({"decode": {"router": "nearest"}}, "disaggregation.decode.router: unknown router 'nearest'"),
        ({"prefill": {"replicas": 0}}, "disaggregation.prefill.replicas"),
        ({"link_gbps": -1}, "disaggregation.link_gbps"),
        ({"decode": {"replica": 2}}, "disaggregation.decode.replica: unknown key"),
    ],
)
def test_bad_sections_name_the_field(section, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        scenario(section)


def test_disaggregation_and_autoscaling_exclude_each_other():
    with pytest.raises(ConfigError, match="cannot be combined"):
        scenario(autoscaling={"target": 4, "max_replicas": 2})

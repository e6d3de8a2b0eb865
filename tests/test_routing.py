"""Routers on tiny fake replicas: each decision, determinism with a seed, balance."""

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from simulator.common.errors import ConfigError
from simulator.scheduling import Sequence
from simulator.serving.routing import ROUTERS, make_router


@dataclass
class FakeReplica:
    outstanding: int = 0
    kv_usage: float = 0.0


def seq(i=0, hashes=None):
    return Sequence(seq_id=i, prompt_len=10, max_output=5, arrival=0.0, block_hashes=hashes)


def router(name, n=4, seed=0):
    return make_router(name, n, np.random.default_rng(seed))


def test_registry_holds_every_router():
    assert set(ROUTERS) == {
        "round_robin", "random", "least_outstanding_requests", "least_kv_usage", "power_of_two", "prefix_affinity",
    }


def test_unknown_router_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match="unknown router 'fastest'.*power_of_two"):
        router("fastest")


def test_round_robin_cycles():
    r, reps = router("round_robin"), [FakeReplica() for _ in range(3)]
    assert [r.choose(reps, seq()) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_least_outstanding_picks_the_emptiest_lowest_index_on_ties():
    reps = [FakeReplica(3), FakeReplica(1), FakeReplica(1), FakeReplica(5)]
    assert router("least_outstanding_requests").choose(reps, seq()) == 1


def test_least_kv_usage_picks_the_emptiest_cache_then_fewest_outstanding():
    r = router("least_kv_usage")
    reps = [FakeReplica(0, 0.5), FakeReplica(9, 0.1), FakeReplica(0, 0.3)]
    assert r.choose(reps, seq()) == 1  # usage first, even with a longer queue
    idle = [FakeReplica(4, 0.0), FakeReplica(2, 0.0), FakeReplica(3, 0.0)]
    assert r.choose(idle, seq()) == 1  # all caches empty: the shorter queue


@pytest.mark.parametrize("name", ["random", "power_of_two"])
def test_randomised_routers_repeat_with_the_same_seed_and_differ_with_another(name):
    reps = [FakeReplica(i % 3) for i in range(8)]

    def decisions(seed):
        r = router(name, 8, seed)
        return [r.choose(reps, seq()) for _ in range(200)]

    assert decisions(1) == decisions(1)
    assert decisions(1) != decisions(2)


def test_random_spreads_evenly():
    reps = [FakeReplica() for _ in range(4)]
    r = router("random")
    counts = Counter(r.choose(reps, seq()) for _ in range(8000))
    assert set(counts) == {0, 1, 2, 3}
    assert max(counts.values()) / min(counts.values()) < 1.15


def test_power_of_two_takes_the_less_loaded_of_two_distinct_probes():
    reps = [FakeReplica(5), FakeReplica(0)]
    r = router("power_of_two", 2)
    # with two replicas both are always probed: the idle one always wins
    assert {r.choose(reps, seq()) for _ in range(50)} == {1}
    # the busiest of three is never chosen: it loses to whichever other one is probed with it
    reps = [FakeReplica(1), FakeReplica(9), FakeReplica(2)]
    r = router("power_of_two", 3)
    counts = Counter(r.choose(reps, seq()) for _ in range(3000))
    assert counts[1] == 0
    # replica 0 wins both pairs it is in (2/3 of draws), replica 2 only the pair {1, 2}
    assert counts[0] / 3000 == pytest.approx(2 / 3, abs=0.03)
    assert router("power_of_two", 1).choose([FakeReplica(7)], seq()) == 0


def test_power_of_two_balances_a_stream_of_long_lived_requests():
    reps = [FakeReplica() for _ in range(10)]
    r = router("power_of_two", 10, seed=3)
    for i in range(1000):  # every request stays: the outstanding counts are the load
        reps[r.choose(reps, seq(i))].outstanding += 1
    loads = [x.outstanding for x in reps]
    assert max(loads) - min(loads) <= 6  # random placement would spread about +-30


def test_prefix_affinity_follows_the_longest_prefix_seen():
    reps = [FakeReplica() for _ in range(3)]
    r = router("prefix_affinity", 3)
    assert r.choose(reps, seq(0, [1, 2, 3])) == 0  # new prefix: least outstanding (all 0 -> index 0)
    reps[0].outstanding = 2
    assert r.choose(reps, seq(1, [7, 8])) == 1  # another new prefix: least outstanding
    reps[1].outstanding = 1
    assert r.choose(reps, seq(2, [1, 2, 9])) == 0  # shares blocks 1, 2 with request 0
    assert r.choose(reps, seq(3, [7, 8, 10])) == 1
    assert r.choose(reps, seq(4, [5])) == 2  # no shared prefix: least outstanding
    # a request whose first block matches nothing is new even if later hashes were seen
    assert r.choose(reps, seq(5, [11, 2])) == 2


def test_prefix_affinity_without_hashes_is_least_outstanding():
    reps = [FakeReplica(3), FakeReplica(0), FakeReplica(2)]
    r = router("prefix_affinity", 3)
    assert r.choose(reps, seq(0, None)) == 1
    assert r.choose(reps, seq(1, [])) == 1


def test_prefix_affinity_leaves_an_overloaded_target_and_the_prefix_moves():
    reps = [FakeReplica(), FakeReplica()]
    r = router("prefix_affinity", 2)
    assert r.choose(reps, seq(0, [1, 2])) == 0
    reps[0].outstanding = r.max_extra_outstanding  # still within the guard
    assert r.choose(reps, seq(1, [1, 2])) == 0
    reps[0].outstanding = 1 + r.max_extra_outstanding  # over it: go to the idle replica
    assert r.choose(reps, seq(2, [1, 2])) == 1
    reps[0].outstanding = 0
    assert r.choose(reps, seq(3, [1, 2])) == 1  # the prefix now lives on replica 1


def test_prefix_affinity_keeps_shared_prefixes_together_in_a_simulation():
    from simulator.scenario import parse_scenario, run

    def scenario(router_name):
        return parse_scenario({
            "model": "llama-3-8b", "hardware": "a100-80gb", "router": router_name,
            "deployment": {"replicas": 4},
            "workload": {
                "arrival": {"process": "trace", "path": "traces/mooncake_synthetic_trace.jsonl",
                            "format": "mooncake", "limit": 300, "rate": 5.0},
                "classes": [{"name": "default"}],
            },
        }, base_dir=__import__("pathlib").Path(__file__).resolve().parent.parent / "scenarios")

    def spread(res):
        # replicas per first prefix block, over prefixes used by several requests
        from simulator.workload import generate
        sc = scenario("prefix_affinity")
        wl = generate(sc.workload, seed=sc.seed, max_context=sc.max_model_len(), base_dir=sc.base_dir)
        first = {r.request_id: r.block_hashes[0] for r in wl if r.block_hashes}
        df = res.requests.assign(prefix=res.requests.id.map(first)).dropna(subset=["prefix"])
        groups = df.groupby("prefix").replica.agg(["nunique", "size"])
        shared = groups[groups["size"] >= 2]
        assert len(shared) >= 5
        return shared["nunique"].mean()

    affinity = run(scenario("prefix_affinity"))
    assert spread(affinity) < spread(run(scenario("round_robin")))
    assert spread(affinity) < 1.3

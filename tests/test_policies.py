"""Batching policies, swap preemption, prefix caching and speculative decoding: decisions on
hand-made cases, invariants on random workloads, and merged decode runs equal to single steps."""

import numpy as np
import pytest

from simulator.common.errors import ConfigError
from simulator.scenario import parse_scenario, run
from simulator.scheduling import (
    POLICIES,
    BlockManager,
    PrefixCachingBlockManager,
    SchedulerConfig,
    SeqStatus,
    Sequence,
    SpeculativeConfig,
    make_block_manager,
    make_scheduler,
)
from simulator.scheduling.prefix_cache import block_identities


def seq(i, prompt, out, arrival=0.0, **kw):
    return Sequence(seq_id=i, prompt_len=prompt, max_output=out, arrival=arrival, **kw)


def scheduler(
    policy="vllm", blocks=64, block_size=4, max_len=256, watermark=0.0, host_blocks=0, hash_tokens=None, **kw
):
    cfg = SchedulerConfig(policy=policy, block_size=block_size, watermark=watermark, **kw)
    return make_scheduler(cfg, make_block_manager(cfg, blocks, hash_tokens), max_len, host_blocks)


def ids(step):
    return [s.seq_id for s in step.seqs]


def run_to_end(s, now=0.0, dt=1.0, max_steps=100_000):
    steps = []
    while s.has_work and len(steps) < max_steps:
        step = s.schedule(now)
        assert step is not None
        now += dt
        s.complete(step, now)
        steps.append(step)
    return steps


# --- orca ------------------------------------------------------------------------------------
def test_orca_mixes_a_newcomers_prefill_with_running_decodes():
    s = scheduler("orca")
    s.add(seq(0, 10, 5))
    s.complete(s.schedule(0.0), 1.0)
    s.add(seq(1, 6, 3))
    step = s.schedule(1.0)  # one step: seq 0 decodes, seq 1 prefills its whole prompt
    assert ids(step) == [0, 1] and step.new_tokens == [1, 6] and step.cached_tokens == [10, 0]


def test_orca_reserves_prompt_plus_max_output_and_never_preempts():
    s = scheduler("orca", blocks=10, block_size=4)
    s.add(seq(0, 4, 16))  # 20 tokens: 5 blocks reserved at admission
    s.add(seq(1, 4, 16))
    s.add(seq(2, 4, 16))  # would need 5 more: waits
    step = s.schedule(0.0)
    assert ids(step) == [0, 1] and s.blocks.num_used == 10
    steps = run_to_end(s, 1.0)
    assert not any(st.preempted for st in steps)
    assert all(x.num_output == 16 for x in (step.seqs[0], step.seqs[1]))


def test_orca_token_budget_holds_back_a_prompt_that_does_not_fit_beside_the_decodes():
    s = scheduler("orca", max_num_batched_tokens=10, max_num_seqs=4)
    s.add(seq(0, 8, 5))
    s.complete(s.schedule(0.0), 1.0)
    s.add(seq(1, 9, 2))  # 1 decode + 9 = 10 tokens: fits exactly
    assert ids(s.schedule(1.0)) == [0, 1]
    s2 = scheduler("orca", max_num_batched_tokens=10)
    s2.add(seq(0, 8, 5))
    s2.complete(s2.schedule(0.0), 1.0)
    s2.add(seq(1, 10, 2))  # 11 tokens with the decode: waits
    assert ids(s2.schedule(1.0)) == [0]


# --- sarathi ---------------------------------------------------------------------------------
def test_sarathi_splits_a_long_prompt_into_chunks_beside_the_decodes():
    s = scheduler("sarathi", chunk_size=8, blocks=64)
    s.add(seq(0, 4, 10))
    s.complete(s.schedule(0.0), 1.0)  # seq 0 prefilled, now decoding
    s.add(seq(1, 20, 2))
    chunks = []
    for t in range(1, 4):
        step = s.schedule(float(t))
        assert step.seqs[0].seq_id == 0 and step.new_tokens[0] == 1  # the decode always comes first
        assert step.num_batched_tokens <= 8
        chunks.append(step.new_tokens[1])
        s.complete(step, t + 1.0)
    assert chunks == [7, 7, 6]  # 20 prompt tokens in budget-sized pieces
    assert s.running[1].num_output == 1  # the last chunk sampled its first token


def test_sarathi_continues_partial_prefills_before_admitting_new_ones():
    s = scheduler("sarathi", chunk_size=6)
    s.add(seq(0, 10, 2))
    s.add(seq(1, 3, 2))
    first = s.schedule(0.0)
    assert ids(first) == [0] and first.new_tokens == [6]  # FCFS: the budget goes to the older prompt
    s.complete(first, 1.0)
    second = s.schedule(1.0)
    assert ids(second) == [0, 1] and second.new_tokens == [4, 2]  # its rest first, then a newcomer
    assert second.cached_tokens == [6, 0]


def test_sarathi_preempts_the_newest_by_recompute_when_blocks_run_out():
    s = scheduler("sarathi", blocks=4, block_size=4, chunk_size=64)
    a, b = seq(0, 8, 5), seq(1, 8, 5)
    s.add(a)
    s.add(b)
    s.complete(s.schedule(0.0), 1.0)
    step = s.schedule(1.0)
    assert step.preempted == [b] and ids(step) == [0]
    assert b.status is SeqStatus.WAITING and b.num_computed == 0


# --- priority, shortest prompt first, earliest deadline first ------------------------------
def test_priority_orders_the_queue_by_priority_then_arrival():
    s = scheduler("priority", max_num_seqs=1)
    s.add(seq(0, 4, 1, arrival=0.0, priority=2))
    s.add(seq(1, 4, 1, arrival=1.0, priority=0))
    s.add(seq(2, 4, 1, arrival=2.0, priority=0))
    order = [ids(st)[0] for st in run_to_end(s)]
    assert order == [1, 2, 0]


def test_priority_preempts_strictly_lower_priority_newest_first_for_a_seat():
    s = scheduler("priority", max_num_seqs=2)
    low_old, low_new = seq(0, 4, 10, priority=1), seq(1, 4, 10, arrival=0.5, priority=1)
    s.add(low_old)
    s.add(low_new)
    s.complete(s.schedule(0.0), 1.0)
    s.add(seq(2, 4, 10, arrival=1.0, priority=1))  # same priority: waits, preempts nobody
    assert not s.schedule(1.0).preempted
    urgent = seq(3, 4, 5, arrival=2.0, priority=0)
    s.add(urgent)
    step = s.schedule(2.0)
    assert step.preempted == [low_new] and ids(step) == [3]
    assert low_new.status is SeqStatus.WAITING and low_old.status is SeqStatus.RUNNING


def test_priority_preempts_for_blocks_only_when_that_makes_room():
    def two_running():
        s = scheduler("priority", blocks=8, block_size=4)
        s.add(seq(0, 8, 10, priority=0))  # 2 blocks each once prefilled
        s.add(seq(1, 8, 10, priority=1))
        s.complete(s.schedule(0.0), 1.0)
        return s

    s = two_running()
    s.add(seq(2, 26, 2, arrival=1.0, priority=0))  # 7 blocks: 4 free + 2 from the low one is not enough
    step = s.schedule(1.0)
    assert not step.preempted and ids(step) == [0, 1]
    s = two_running()
    s.add(seq(2, 22, 2, arrival=1.0, priority=0))  # 6 blocks: enough once seq 1 leaves
    step = s.schedule(1.0)
    assert [x.seq_id for x in step.preempted] == [1] and ids(step) == [2]


def test_spf_admits_the_shortest_prompt_first():
    s = scheduler("spf", max_num_seqs=1)
    for i, p in enumerate([30, 5, 12]):
        s.add(seq(i, p, 1, arrival=float(i)))
    assert [ids(st)[0] for st in run_to_end(s)] == [1, 2, 0]


def test_edf_admits_the_earliest_deadline_first_and_deadline_free_requests_last():
    s = scheduler("edf", max_num_seqs=1)
    s.add(seq(0, 4, 1, arrival=0.0))  # no deadline
    s.add(seq(1, 4, 1, arrival=1.0, deadline=9.0))
    s.add(seq(2, 4, 1, arrival=2.0, deadline=3.0))
    assert [ids(st)[0] for st in run_to_end(s)] == [2, 1, 0]


def test_simulation_sets_deadlines_from_the_class_ttft_slo():
    from simulator.serving.simulate import sequences as _sequences
    from simulator.workload import generate

    sc = scenario_with(
        workload={
            "arrival": {"process": "poisson", "rate": 5.0},
            "num_requests": 20,
            "classes": [
                {
                    "name": "fast",
                    "prompt_tokens": {"dist": "constant", "value": 10},
                    "output_tokens": {"dist": "constant", "value": 5},
                    "slo": {"ttft_ms": 250},
                },
                {
                    "name": "batch",
                    "prompt_tokens": {"dist": "constant", "value": 10},
                    "output_tokens": {"dist": "constant", "value": 5},
                },
            ],
        }
    )
    seqs = _sequences(generate(sc.workload, seed=0, max_context=1000))
    for s in seqs:
        if s.request_class == "fast":
            assert s.deadline == pytest.approx(s.arrival + 0.25)
        else:
            assert s.deadline is None
    assert {s.request_class for s in seqs} == {"fast", "batch"}


# --- preemption by swap --------------------------------------------------------------------
def test_swap_keeps_progress_and_resumes_before_new_admissions():
    s = scheduler("vllm-v0", blocks=4, block_size=4, host_blocks=8, preemption_mode="swap")
    a, b = seq(0, 8, 5), seq(1, 8, 5)
    s.add(a)
    s.add(b)
    s.complete(s.schedule(0.0), 1.0)  # both prefilled: 9 tokens each, 2 blocks each
    step = s.schedule(1.0)
    assert step.preempted == [b] and b.status is SeqStatus.SWAPPED
    assert b.num_computed == 8 and b.block_table == []  # progress kept, device blocks freed
    assert step.swapped_out_tokens == 2 * 4 and len(step.swap_out_blocks) == 2
    s.complete(step, 2.0)
    s.add(seq(2, 2, 1))  # a newcomer that would fit, but b comes back first
    resumed = None
    for t in range(2, 10):
        st = s.schedule(float(t))
        assert 2 not in ids(st) or b.status is SeqStatus.RUNNING
        if st.swapped_in_tokens:
            resumed = st
            break
        s.complete(st, t + 1.0)
    assert resumed is not None and b in resumed.seqs
    assert resumed.new_tokens[resumed.seqs.index(b)] == 1  # it decodes on: nothing recomputed
    assert len(resumed.swap_in_blocks) == 2 and s.host.num_free == 8
    s.complete(resumed, 20.0)
    run_to_end(s, 21.0)
    assert a.num_output == b.num_output == 5 and b.num_preemptions == 1


def test_swap_falls_back_to_recompute_when_the_host_is_full():
    s = scheduler("vllm-v0", blocks=4, block_size=4, host_blocks=1, preemption_mode="swap")
    a, b = seq(0, 8, 5), seq(1, 8, 5)
    s.add(a)
    s.add(b)
    s.complete(s.schedule(0.0), 1.0)
    step = s.schedule(1.0)
    assert step.preempted == [b] and b.status is SeqStatus.WAITING and b.num_computed == 0
    assert step.swapped_out_tokens == 0 and s.waiting[0] is b


def test_swap_transfer_time_is_charged_by_the_replica():
    """Same run twice, swap costing 0 s or 1 ms per token: the clock differs by exactly the
    swapped tokens x 1 ms."""
    import simpy

    from simulator.serving.replica import Replica

    class OneMsStep:
        provenance = "test"

        def step_time(self, new, cached):
            return 1e-3

        def decode_run_times(self, cached, k):
            return np.full(k, 1e-3)

        def is_extrapolated(self, new, cached):
            return False

    def serve(s_per_token):
        env = simpy.Environment()
        s = scheduler("vllm-v0", blocks=4, block_size=4, host_blocks=8, preemption_mode="swap")
        steps = []
        build = s._step

        def recorded(rows):  # keep every step the replica is handed
            steps.append(build(rows))
            return steps[-1]

        s._step = recorded
        done = []
        rep = Replica(env, 0, s, OneMsStep(), done.append, swap_s_per_token=s_per_token)
        for i in range(2):
            rep.submit(seq(i, 8, 5))
        env.run()
        moved = sum(st.swapped_out_tokens + st.swapped_in_tokens for st in steps if st is not None)
        return env.now, moved, len(done)

    free, moved, n = serve(0.0)
    charged, moved_again, _ = serve(1e-3)
    assert n == 2 and moved == moved_again > 0
    assert charged - free == pytest.approx(moved * 1e-3)


# --- prefix caching --------------------------------------------------------------------------
def test_prefix_cache_shares_full_prompt_blocks_and_counts_references():
    bm = PrefixCachingBlockManager(16, block_size=4, watermark=0.0)
    a = seq(0, 10, 2, prompt_token_ids=list(range(10)))
    assert bm.prefix_match(a) == 0
    bm.claim_prefix(a)
    bm.allocate(a, 10)
    a.num_computed = 10
    bm.cache_computed(a)  # blocks [0..3], [4..7] are full and published; [8, 9] is not
    b = seq(1, 11, 2, prompt_token_ids=list(range(8)) + [99, 98, 97])
    assert bm.prefix_match(b) == 8
    assert bm.blocks_to_admit(b, 11) == 1  # two blocks shared, one fresh
    assert bm.claim_prefix(b) == 8 and b.block_table == a.block_table[:2]
    bm.allocate(b, 11)
    assert [bm.ref_count(x) for x in b.block_table] == [2, 2, 1]
    assert bm.num_used == 4  # 3 of a's + 1 of b's
    c = seq(2, 8, 2, prompt_token_ids=list(range(8)))  # fully cached prompt: the last block is recomputed
    assert bm.prefix_match(c) == 4


def test_prefix_cache_keeps_freed_blocks_until_evicted_least_recently_freed_first():
    bm = PrefixCachingBlockManager(4, block_size=2, watermark=0.0)

    def fill(i, tokens):
        s = seq(i, len(tokens), 1, prompt_token_ids=tokens)
        bm.claim_prefix(s)
        bm.allocate(s, len(tokens))
        s.num_computed = len(tokens)
        bm.cache_computed(s)
        return s

    old = fill(0, [1, 2, 3, 4])
    bm.free(old)
    new = fill(1, [7, 8, 9, 9])
    bm.free(new)
    assert bm.num_free == 4 and bm.num_cached == 4  # freed, still findable
    probe_old, probe_new = (
        seq(2, 5, 1, prompt_token_ids=[1, 2, 3, 4, 0]),
        seq(3, 5, 1, prompt_token_ids=[7, 8, 9, 9, 0]),
    )
    assert bm.prefix_match(probe_old) == 4 and bm.prefix_match(probe_new) == 4
    taker = seq(4, 4, 1)
    bm.allocate(taker, 4)  # two fresh blocks: evicts the oldest freed ones, the old prompt's
    assert bm.prefix_match(probe_old) == 0 and bm.prefix_match(probe_new) == 4


def test_mooncake_hash_ids_map_onto_smaller_blocks_by_sub_index():
    a = seq(0, 40, 1, block_hashes=[7, 8, 9])  # 16-token named blocks cut into 8-token blocks
    b = seq(1, 40, 1, block_hashes=[7, 5, 9])
    ia, ib = block_identities(a, 8, 16), block_identities(b, 8, 16)
    assert len(ia) == 5 and ia[0] == (0, 7) and ia[1] == (8, 7) and ia[2] == (0, 8)
    assert ia[:2] == ib[:2] and ia[2] != ib[2]
    assert block_identities(seq(2, 40, 1), 8, 16) == []  # nothing to share without identities
    odd = block_identities(a, 12, 16)  # a block straddling two named blocks names both
    assert odd[1] == (12, 7, 8)


@pytest.mark.parametrize("policy", ["vllm-v0", "vllm"])
def test_prefix_caching_skips_cached_tokens_and_reports_them_in_the_step(policy):
    s = scheduler(policy, blocks=64, block_size=4, enable_prefix_caching=True, hash_tokens=8)
    first = seq(0, 20, 2, block_hashes=[1, 2, 3])
    s.add(first)
    run_to_end(s)
    again = seq(1, 20, 2, block_hashes=[1, 2, 9])
    s.add(again)
    step = s.schedule(10.0)
    # blocks of 4 within named blocks of 8: tokens 0-15 share ids 1 and 2
    assert step.new_tokens == [4] and step.cached_tokens == [16]
    assert again.num_cached_prefix == 16
    plain = scheduler(
        policy, blocks=64, block_size=4, hash_tokens=8, enable_prefix_caching=False
    )  # no sharing
    plain.add(seq(0, 20, 2, block_hashes=[1, 2, 3]))
    run_to_end(plain)
    plain.add(seq(1, 20, 2, block_hashes=[1, 2, 3]))
    assert plain.schedule(10.0).new_tokens == [20]


# --- speculative decoding ------------------------------------------------------------------
SPEC = {"draft_model": "ngram", "num_speculative_tokens": 3, "acceptance_rate": 0.7}


def test_verify_steps_reserve_k_plus_one_slots_and_emit_the_accepted_run():
    s = scheduler("vllm", block_size=4, speculative=SPEC)
    a = seq(0, 8, 10)
    s.add(a)
    s.complete(s.schedule(0.0), 1.0)  # prefill: 9 tokens, 8 computed
    step = s.schedule(1.0)
    assert step.new_tokens == [4] and step.draft_tokens == [3] and step.cached_tokens == [8]
    assert len(a.block_table) == 3  # room for positions 8..11
    s.complete(step, 2.0, num_emitted=[3])  # 2 drafts accepted + 1 bonus token
    assert a.num_output == 4 and a.num_computed == 11 and a.token_times == [1.0, 2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="emits 5 tokens"):
        s.complete(s.schedule(2.0), 3.0, num_emitted=[5])


def test_drafts_never_exceed_what_a_sequence_may_still_emit():
    s = scheduler("vllm", speculative=SPEC)
    a = seq(0, 8, 3)
    s.add(a)
    s.complete(s.schedule(0.0), 1.0)
    step = s.schedule(1.0)
    assert step.draft_tokens == [1]  # 2 tokens left: one draft plus the bonus
    assert s.decode_run_length(step) == 1  # never merged under speculation
    s.complete(step, 2.0, num_emitted=[2])
    assert a.is_finished and a.num_output == 3


def test_engine_token_lists_give_the_emitted_tokens_and_stop_early():
    s = scheduler("vllm", speculative=SPEC)
    a = seq(0, 4, 10, stop_token_ids=frozenset({42}))
    s.add(a)
    s.complete(s.schedule(0.0), 1.0, token_ids=[5])
    s.complete(s.schedule(1.0), 2.0, token_ids=[[6, 42, 7]])  # stops at 42, drops what follows
    assert a.output_token_ids == [5, 6, 42] and a.finish_reason == "stop"


def spec_scenario(rate, k=4, draft="llama-3.2-1b", **workload):
    return scenario_with(
        scheduler={
            "policy": "vllm",
            "max_num_seqs": 32,
            "speculative": {"draft_model": draft, "num_speculative_tokens": k, "acceptance_rate": rate},
        },
        workload={
            "arrival": {"process": "poisson", "rate": 1.0},
            "num_requests": 60,
            "classes": [
                {
                    "name": "c",
                    "prompt_tokens": {"dist": "constant", "value": 200},
                    "output_tokens": {"dist": "constant", "value": 400},
                }
            ],
        }
        | workload,
    )


@pytest.mark.parametrize("rate,k", [(0.6, 4), (0.85, 3)])
def test_mean_tokens_per_verify_step_matches_the_closed_form(rate, k):
    res = run(spec_scenario(rate, k, draft="ngram"))
    measured = res.info["speculative"]["tokens_per_verify_step"]
    expected = (1 - rate ** (k + 1)) / (1 - rate)
    # the last steps of each request verify fewer drafts, which pulls the mean down a little
    assert measured == pytest.approx(expected, rel=0.03)
    assert res.info["speculative"]["verify_steps"] > 5000


def test_speculation_cuts_tpot_at_high_acceptance_and_costs_at_none():
    base = scenario_with(
        scheduler={"policy": "vllm", "max_num_seqs": 32},
        workload=spec_scenario(0.5).workload.model_dump(exclude_none=True),
    )
    plain = run(base).summary.latency["tpot"].p50
    high = run(spec_scenario(0.9)).summary.latency["tpot"].p50
    none = run(spec_scenario(0.0)).summary.latency["tpot"].p50
    assert high < 0.6 * plain  # about 4 tokens per verify step for 1 verify + 4 cheap draft steps
    assert none > 1.3 * plain  # every step pays the draft and emits one token


def test_same_request_sees_the_same_acceptance_under_any_policy():
    a = run(spec_scenario(0.7, draft="ngram")).info["speculative"]
    b = run(
        spec_scenario(0.7, draft="ngram").model_copy(
            update={
                "scheduler": SchedulerConfig(
                    policy="sarathi",
                    max_num_seqs=32,
                    speculative=SPEC | {"acceptance_rate": 0.7, "num_speculative_tokens": 4},
                )
            }
        )
    ).info["speculative"]
    assert a["draft_tokens_accepted"] == b["draft_tokens_accepted"]


# --- configuration errors -------------------------------------------------------------------
def scenario_with(**over):
    data = {
        "name": "t",
        "model": "llama-3-8b",
        "hardware": "a100-80gb",
        "workload": {
            "arrival": {"process": "poisson", "rate": 2.0},
            "num_requests": 50,
            "classes": [
                {
                    "name": "c",
                    "prompt_tokens": {"dist": "constant", "value": 100},
                    "output_tokens": {"dist": "constant", "value": 20},
                }
            ],
        },
    }
    data.update(over)
    return parse_scenario(data)


@pytest.mark.parametrize(
    "scheduler,fragment",
    [
        ({"preemption_mode": "drop"}, "scheduler.preemption_mode"),
        ({"swap_space_gb": -1}, "scheduler.swap_space_gb"),
        (
            {"speculative": {"draft_model": "ngram", "num_speculative_tokens": 2, "acceptance_rate": [0.5]}},
            "one per position",
        ),
        (
            {"speculative": {"draft_model": "ngram", "num_speculative_tokens": 2, "acceptance_rate": 1.5}},
            "between 0 and 1",
        ),
        (
            {"speculative": {"draft_model": "ngram", "num_speculative_tokens": 0, "acceptance_rate": 0.5}},
            "scheduler.speculative.num_speculative_tokens",
        ),
    ],
)
def test_bad_scheduler_settings_are_rejected_naming_the_field(scheduler, fragment):
    with pytest.raises(ConfigError, match=fragment):
        scenario_with(scheduler=scheduler)


def test_unknown_draft_model_and_missing_acceptance_are_named():
    with pytest.raises(ConfigError, match="scheduler.speculative.draft_model: unknown model 'lama-1b'"):
        run(
            scenario_with(
                scheduler={
                    "speculative": {
                        "draft_model": "lama-1b",
                        "num_speculative_tokens": 2,
                        "acceptance_rate": 0.5,
                    }
                }
            )
        )
    with pytest.raises(ConfigError, match="scheduler.speculative.acceptance_rate"):
        run(scenario_with(scheduler={"speculative": {"draft_model": "ngram", "num_speculative_tokens": 2}}))


def test_a_draft_model_takes_kv_memory_from_the_target():
    from simulator.scenario import build_deployment

    plain = build_deployment(scenario_with()).entry
    drafted = build_deployment(spec_scenario(0.5)).entry
    ngram = build_deployment(spec_scenario(0.5, draft="ngram")).entry
    assert ngram.num_blocks == plain.num_blocks
    # Llama-3.2-1B: 2.5 GB of weights and a KV entry 1/4 of Llama-3-8B's per token
    assert 0.7 * plain.num_blocks < drafted.num_blocks < 0.8 * plain.num_blocks


# --- every policy: invariants and merged runs ------------------------------------------------
FEATURES = {
    "plain": {"enable_prefix_caching": False},
    "swap": {"preemption_mode": "swap", "enable_prefix_caching": False},
    "prefix": {"enable_prefix_caching": True},
    "swap+prefix": {"preemption_mode": "swap", "enable_prefix_caching": True},
}
# vLLM V1 preempts by recompute only (it rejects swap settings, see test_vllm_v1.py).
POLICY_FEATURES = [
    (policy, feature)
    for policy in sorted(POLICIES)
    for feature in FEATURES
    if not (policy == "vllm" and "swap" in feature)
]


def random_requests(rng, n, with_hashes):
    out = []
    for i in range(n):
        prompt = int(rng.integers(1, 40))
        hashes = sorted(int(h) for h in rng.integers(0, 3, size=-(-prompt // 8))) if with_hashes else None
        out.append(
            seq(
                i,
                prompt,
                int(rng.integers(1, 60)),
                priority=int(rng.integers(0, 3)),
                deadline=float(rng.random() * 100),
                block_hashes=hashes,
            )
        )
    return out


def drive(policy, features, merge, seed=7, speculative=None, chunk_size=32):
    """Serve random requests arriving over time; merged decode runs stop at the first step
    boundary after an arrival, as in the replica. Checks block accounting at every step."""
    rng = np.random.default_rng(seed)
    s = scheduler(
        policy,
        blocks=40,
        block_size=4,
        max_len=512,
        watermark=0.01,
        max_num_seqs=6,
        chunk_size=chunk_size,
        host_blocks=12,
        hash_tokens=8,
        speculative=speculative,
        **features,
    )
    seqs = random_requests(rng, 40, features.get("enable_prefix_caching", False))
    accept = np.random.default_rng(seed + 1)
    arrivals = iter(np.cumsum(rng.exponential(5.0, len(seqs))).tolist())
    nxt, now, k = next(arrivals), 0.0, 0
    while k < len(seqs) or s.has_work:
        while k < len(seqs) and nxt <= now:
            s.add(seqs[k], now)
            k += 1
            nxt = next(arrivals, float("inf"))
        step = s.schedule(now)
        if step is None:
            now = nxt
            continue
        live = [x for x in seqs if x.block_table]
        assert s.blocks.num_used <= s.blocks.num_blocks
        assert {b for x in live for b in x.block_table} == set(range(s.blocks.num_blocks)) - free_blocks(
            s.blocks
        )
        if not isinstance(s.blocks, PrefixCachingBlockManager):
            assert sum(len(x.block_table) for x in live) == s.blocks.num_used  # nothing shared
        n = s.decode_run_length(step) if merge else 1
        if n > 1:
            ends = now + np.arange(1, n + 1, dtype=float)
            ends = ends[: min(n, int(np.searchsorted(ends, nxt)) + 1)]
            s.complete_decode_run(step, ends)
            now = float(ends[-1])
        else:
            now += 1.0
            emitted = (
                [1 + int(accept.integers(0, d + 1)) for d in step.draft_tokens] if step.draft_tokens else None
            )
            s.complete(step, now, num_emitted=emitted)
    return s, seqs


def free_blocks(bm):
    free = set(bm._free)
    if isinstance(bm, PrefixCachingBlockManager):
        free |= set(bm._evictable)
    return free


@pytest.mark.parametrize("policy, feature", POLICY_FEATURES)
def test_random_workload_conserves_tokens_and_blocks(policy, feature):
    s, seqs = drive(policy, FEATURES[feature], merge=False)
    assert all(x.status is SeqStatus.FINISHED for x in seqs)
    assert all(
        x.finish_reason == "length" and x.num_output == x.max_output == len(x.token_times) for x in seqs
    )
    assert s.blocks.num_free == s.blocks.num_blocks and s.host.num_free == s.host.num_blocks
    assert not s.has_work
    if feature != "plain" and policy not in ("static", "orca"):  # those two never preempt
        assert sum(x.num_preemptions for x in seqs) > 0  # the features were exercised
        if "swap" in feature:
            assert s.host.num_swap_ins == s.host.num_swap_outs > 0
    if "prefix" in feature:
        assert sum(x.num_cached_prefix for x in seqs) > 0


@pytest.mark.parametrize("policy, feature", POLICY_FEATURES)
def test_merged_decode_runs_match_single_steps(policy, feature):
    def outcome(merge):
        _, seqs = drive(policy, FEATURES[feature], merge)
        return [(x.token_times, x.num_preemptions, x.num_cached_prefix) for x in seqs]

    assert outcome(merge=True) == outcome(merge=False)


def test_sarathi_merged_runs_match_single_steps_when_decodes_outnumber_the_budget():
    def outcome(merge):
        _, seqs = drive("sarathi", {}, merge, chunk_size=4)  # up to 6 decodes, 4 run per step
        return [(x.token_times, x.num_preemptions) for x in seqs]

    assert outcome(merge=True) == outcome(merge=False)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_random_workload_with_speculation_emits_every_token(policy):
    spec = SpeculativeConfig(draft_model="ngram", num_speculative_tokens=3, acceptance_rate=0.6)
    mode = "recompute" if policy == "vllm" else "swap"
    s, seqs = drive(policy, {"preemption_mode": mode}, merge=True, speculative=spec)
    assert all(x.num_output == x.max_output == len(x.token_times) for x in seqs)
    assert s.blocks.num_free == s.blocks.num_blocks


def test_plain_block_manager_has_no_prefix_hooks_effect():
    bm = BlockManager(8, block_size=4)
    s = seq(0, 10, 1, prompt_token_ids=list(range(10)))
    assert bm.prefix_match(s) == 0 and bm.claim_prefix(s) == 0 and bm.blocks_to_admit(s, 10) == 3


# --- results -----------------------------------------------------------------------------------
def test_hit_rate_and_cached_tokens_reach_the_results():
    res = run(
        scenario_with(
            model="qwen2.5-7b",
            hardware="h100-sxm",
            scheduler={"enable_prefix_caching": True},
            workload={
                "arrival": {
                    "process": "trace",
                    "format": "mooncake",
                    "limit": 120,
                    "start_s": 900,
                    "time_scale": 3.0,
                    "path": "scenarios/traces/mooncake_synthetic_trace.jsonl",
                }
            },
        )
    )
    df = res.requests
    rate = res.info["prefix_cache_hit_rate"]
    assert 0.1 < rate < 1 and rate == pytest.approx(df.cached_prompt_tokens.sum() / df.prompt_tokens.sum())
    assert (df.cached_prompt_tokens < df.prompt_tokens).all()


# --- vllm-v0 keeps its schedules -------------------------------------------------------------
V0_SCHEDULE_DIGESTS = {  # vLLM v0's policy on drive()'s workload, as it scheduled when it was `vllm`
    "plain": "eba980cbcf202f8d",
    "swap": "161d44ec3c5d6983",
    "prefix": "8e7e58fcdeed36da",
    "swap+prefix": "ac7699ff49ba6385",
}


@pytest.mark.parametrize("feature", FEATURES)
def test_vllm_v0_makes_exactly_the_schedules_it_always_made(feature):
    import hashlib

    _, seqs = drive("vllm-v0", FEATURES[feature], merge=False)
    data = repr([(x.token_times, x.num_preemptions, x.num_cached_prefix) for x in seqs])
    assert hashlib.sha256(data.encode()).hexdigest()[:16] == V0_SCHEDULE_DIGESTS[feature]

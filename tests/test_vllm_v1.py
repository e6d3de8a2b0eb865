"""vLLM V1's scheduler (policy `vllm`) on hand-made cases: the token budget shared by running and
waiting requests, chunked prefill, the long-prefill cap, seats, the prefix cache with chained
block hashes, preemption from the end of the running list, admission rules and defaults."""

import os
import subprocess
import sys

import pytest

from simulator.common.errors import ConfigError
from simulator.scenario import parse_scenario
from simulator.scheduling import (
    BlockManager,
    DeviceClass,
    SchedulerConfig,
    SeqStatus,
    Sequence,
    SpeculativeConfig,
    V1PrefixCache,
    make_block_manager,
    make_scheduler,
    resolve,
    token_block_hashes,
)
from simulator.scheduling.block_hash import ROOT_HASH, hash_block
from simulator.studies.compare import Variant


def seq(i, prompt, out, tokens=None, **kw):
    return Sequence(seq_id=i, prompt_len=prompt, max_output=out, arrival=0.0, prompt_token_ids=tokens, **kw)


def v1(blocks=64, budget=16, seats=8, max_len=256, **kw):
    cfg = SchedulerConfig(
        policy="vllm", block_size=4, max_num_batched_tokens=budget, max_num_seqs=seats, **kw
    )
    return make_scheduler(cfg, make_block_manager(cfg, blocks), max_len)


def step_rows(step):
    return [(s.seq_id, n, c) for s, n, c in zip(step.seqs, step.new_tokens, step.cached_tokens)]


def advance(s, now):
    step = s.schedule(now)
    s.complete(step, now + 1.0)
    return step


# --- one budget: running first, then waiting ----------------------------------------------------
def test_running_requests_take_the_budget_first_and_a_newcomer_gets_a_chunk_of_the_rest():
    s = v1(budget=16)
    a, b = seq(0, 4, 5), seq(1, 4, 5)
    s.add(a)
    s.add(b)
    advance(s, 0.0)  # both prefilled
    s.add(seq(2, 30, 2))
    step = s.schedule(1.0)
    assert step_rows(step) == [(0, 1, 4), (1, 1, 4), (2, 14, 0)]  # 2 decodes, then 14 of 30
    assert step.num_batched_tokens == 16


def test_a_partial_prefill_continues_in_running_order_ahead_of_later_requests():
    s = v1(budget=16)
    long, short = seq(0, 40, 2), seq(1, 4, 3)
    s.add(long)
    s.add(short)
    rows = [step_rows(advance(s, float(t))) for t in range(4)]
    # The long prompt is admitted first and keeps its place: chunks of 16, 16, 8. The short one
    # only gets what the long one leaves, and decodes after it (not before, as in sarathi).
    assert rows[0] == [(0, 16, 0)]
    assert rows[1] == [(0, 16, 16)]
    assert rows[2] == [(0, 8, 32), (1, 4, 0)]
    assert rows[3] == [(0, 1, 40), (1, 1, 4)]


def test_several_prompts_can_be_partially_prefilled_in_one_step():
    s = v1(budget=16)
    s.add(seq(0, 10, 2))
    s.add(seq(1, 40, 2))
    assert step_rows(advance(s, 0.0)) == [(0, 10, 0), (1, 6, 0)]
    assert step_rows(advance(s, 1.0)) == [(0, 1, 10), (1, 15, 6)]


def test_max_num_partial_prefills_is_no_v1_setting():
    # vLLM v0.33.0 has no max_num_partial_prefills: V1 never limited concurrent partial prefills.
    with pytest.raises(ValueError, match="max_num_partial_prefills"):
        SchedulerConfig(policy="vllm", max_num_partial_prefills=1)


# --- long_prefill_token_threshold ----------------------------------------------------------------
def test_the_long_prefill_cap_leaves_budget_for_the_request_behind_a_long_prompt():
    def first_step(threshold):
        s = v1(budget=16, long_prefill_token_threshold=threshold)
        s.add(seq(0, 40, 2))
        s.add(seq(1, 4, 3))
        return step_rows(s.schedule(0.0))

    assert first_step(0) == [(0, 16, 0)]  # no cap: the long prompt takes the whole budget
    assert first_step(8) == [(0, 8, 0), (1, 4, 0)]  # capped at 8: the short one gets in


def test_the_long_prefill_cap_does_not_apply_to_a_request_alone():
    s = v1(budget=16, long_prefill_token_threshold=4)
    s.add(seq(0, 40, 2))
    assert step_rows(s.schedule(0.0)) == [(0, 16, 0)]  # nobody to starve
    s2 = v1(budget=16, long_prefill_token_threshold=4)
    s2.add(seq(0, 40, 2))
    s2.add(seq(1, 40, 2))
    assert step_rows(s2.schedule(0.0)) == [(0, 4, 0), (1, 4, 0)]


# --- seats --------------------------------------------------------------------------------------
def test_max_num_seqs_caps_the_running_requests():
    s = v1(budget=64, seats=2)
    for i in range(3):
        s.add(seq(i, 4, 3))
    assert [r[0] for r in step_rows(advance(s, 0.0))] == [0, 1]
    assert [r[0] for r in step_rows(advance(s, 1.0))] == [0, 1]  # still no seat for the third
    advance(s, 2.0)  # both finish
    assert [r[0] for r in step_rows(s.schedule(3.0))] == [2]


# --- prefix caching -----------------------------------------------------------------------------
def test_block_hashes_chain_full_blocks_and_a_partial_block_has_none():
    a = token_block_hashes(list(range(10)), 4)
    b = token_block_hashes([*range(8), 99, 98, 97, 96], 4)
    assert len(a) == 2 and len(b) == 3  # 10 tokens: 2 full blocks; the last 2 tokens are unnamed
    assert a == b[:2] and b[2] != a[1]
    assert token_block_hashes([*range(4, 8), *range(4)], 4)[1] != a[1]  # same tokens, other prefix
    assert a[0] == hash_block(ROOT_HASH, (0, 1, 2, 3))


def test_block_hashes_are_the_same_in_another_process_with_another_hash_seed():
    code = "from simulator.scheduling import token_block_hashes; print(token_block_hashes(list(range(9)), 4))"
    env = os.environ | {"PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == str(token_block_hashes(list(range(9)), 4))


def test_prefix_hits_from_token_ids_skip_full_cached_blocks_only():
    s = v1(budget=64)
    assert isinstance(s.blocks, V1PrefixCache)  # prefix caching is on by default
    first = seq(0, 10, 2, tokens=list(range(10)))
    s.add(first)
    advance(s, 0.0)
    advance(s, 1.0)  # done
    again = seq(1, 11, 2, tokens=[*range(10), 50])
    s.add(again)
    # Blocks 0-3 and 4-7 are cached; tokens 8-9 filled only part of a block, which is not.
    assert step_rows(s.schedule(2.0)) == [(1, 3, 8)]
    assert again.num_cached_prefix == 8 and first.num_cached_prefix == 0


def test_a_prompt_found_whole_in_the_cache_still_computes_its_last_block():
    s = v1(budget=64)
    s.add(seq(0, 12, 1, tokens=list(range(12))))
    advance(s, 0.0)
    s.add(seq(1, 12, 1, tokens=list(range(12))))
    assert step_rows(s.schedule(1.0)) == [(1, 4, 8)]  # its last token's logits are needed


def test_a_request_admitted_later_in_the_same_step_reuses_blocks_being_computed():
    s = v1(budget=64)
    shared = list(range(8))
    s.add(seq(0, 10, 2, tokens=[*shared, 1, 2]))
    s.add(seq(1, 10, 2, tokens=[*shared, 3, 4]))
    # The first request's blocks are named when its step is scheduled, so the second finds them.
    assert step_rows(s.schedule(0.0)) == [(0, 10, 0), (1, 2, 8)]


def test_prefix_caching_can_be_turned_off():
    s = v1(budget=64, enable_prefix_caching=False)
    assert type(s.blocks) is BlockManager
    s.add(seq(0, 12, 1, tokens=list(range(12))))
    advance(s, 0.0)
    s.add(seq(1, 12, 1, tokens=list(range(12))))
    assert step_rows(s.schedule(1.0)) == [(1, 12, 0)]


# --- preemption ---------------------------------------------------------------------------------
def test_preemption_takes_the_last_running_request_and_resets_its_progress():
    # 7 blocks of 4 tokens; three 8-token prompts take 2 blocks each.
    s = v1(blocks=7, budget=64, enable_prefix_caching=False)
    a, b, c = (seq(i, 8, 6) for i in range(3))
    for x in (a, b, c):
        s.add(x)
    advance(s, 0.0)
    step = advance(s, 1.0)  # each decode needs a third block: one is free
    assert step.preempted == [c] and step_rows(step) == [(0, 1, 8), (1, 1, 8)]
    assert c.status is SeqStatus.WAITING and c.num_computed == 0 and c.block_table == [] and c.num_output == 1
    for t in range(2, 5):
        assert not advance(s, float(t)).preempted
    step = advance(s, 5.0)  # a needs a fourth block: b, now the last, goes
    assert step.preempted == [b] and [x.seq_id for x in s.waiting] == [1, 2]  # b in front
    step = advance(s, 6.0)
    # b recomputes its prompt and the 5 tokens it had generated, then c (prompt + 1 token)
    assert step_rows(step) == [(1, 13, 0), (2, 9, 0)]
    assert b.num_preemptions == c.num_preemptions == 1


def test_a_preempted_request_finds_its_own_blocks_in_the_cache_when_it_resumes():
    s = v1(blocks=7, budget=64)  # prefix caching on: generated tokens' blocks are cached too
    seqs = [seq(i, 8, 6) for i in range(3)]
    for x in seqs:
        s.add(x)
    for t in range(6):
        advance(s, float(t))
    assert seqs[1].num_preemptions == 1
    # b left 3 full blocks (8 prompt + 4 generated tokens): 12 cached, 1 token to compute
    assert step_rows(s.schedule(6.0))[0] == (1, 1, 12)
    assert seqs[1].num_cached_prefix == 0  # hits count at the first admission only


# --- admission ----------------------------------------------------------------------------------
def test_a_newcomer_is_admitted_only_if_its_whole_prompt_fits():
    def first_step(reserve):
        s = v1(blocks=8, budget=8, scheduler_reserve_full_isl=reserve, enable_prefix_caching=False)
        s.add(seq(0, 4, 20))
        advance(s, 0.0)
        s.add(seq(1, 28, 2))  # 7 blocks: more than the 6 free, although a chunk of 7 tokens fits
        return step_rows(s.schedule(1.0))

    assert first_step(True) == [(0, 1, 4)]
    assert first_step(False) == [(0, 1, 4), (1, 7, 0)]


def test_the_watermark_holds_back_admissions_only_beside_running_requests():
    s = v1(blocks=8, budget=64, watermark=0.5, enable_prefix_caching=False)  # keep 4 blocks free
    s.add(seq(0, 20, 2))  # 5 blocks: more than 8 - 4, admitted since nothing runs
    s.add(seq(1, 4, 2))  # 1 block, but 3 free < 1 + 4
    assert [r[0] for r in step_rows(s.schedule(0.0))] == [0]


def test_a_draft_model_reserves_lookahead_slots_and_ngram_does_not():
    def blocks_after_prefill(draft):
        spec = SpeculativeConfig(draft_model=draft, num_speculative_tokens=4, acceptance_rate=0.5)
        s = v1(budget=64, speculative=spec)
        a = seq(0, 8, 10)
        s.add(a)
        s.schedule(0.0)
        return len(a.block_table)

    assert blocks_after_prefill("ngram") == 2  # 8 tokens
    assert blocks_after_prefill("llama-3.2-1b") == 3  # 8 + 4 slots for the draft's proposals


# --- defaults -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "device, tokens, seqs",
    [
        (DeviceClass("a10g", 22.49), 2048, 256),
        (DeviceClass("a100-80gb", 80.0), 2048, 256),  # vLLM keeps A100s on the small tier
        (DeviceClass("h100-sxm", 79.65), 8192, 1024),
        (DeviceClass("h200", 140.4), 8192, 1024),
        (DeviceClass("b200", 179.06), 16384, 1024),
        (DeviceClass("cpu", is_cpu=True, world_size=2), 4096, 256),
        (None, 2048, 256),  # unknown device
    ],
)
def test_v1_batch_defaults_follow_the_device(device, tokens, seqs):
    cfg = resolve(SchedulerConfig(policy="vllm"), device)
    assert (cfg.max_num_batched_tokens, cfg.max_num_seqs) == (tokens, seqs)
    assert cfg.enable_prefix_caching is True and cfg.watermark == 0.0
    assert cfg.long_prefill_token_threshold == 0 and cfg.scheduler_reserve_full_isl and cfg.async_scheduling


@pytest.mark.parametrize("policy", ["vllm-v0", "sarathi", "static", "orca", "priority"])
def test_other_policies_keep_their_defaults(policy):
    cfg = resolve(SchedulerConfig(policy=policy), DeviceClass("h100-sxm", 79.65))
    assert (cfg.max_num_seqs, cfg.watermark, cfg.enable_prefix_caching) == (256, 0.01, False)
    assert cfg.max_num_batched_tokens is None and cfg.token_budget(4096) == 4096
    assert cfg.async_scheduling is None and cfg.long_prefill_token_threshold is None


def test_explicit_settings_win_over_the_policy_defaults():
    cfg = resolve(
        SchedulerConfig(policy="vllm", max_num_seqs=64, enable_prefix_caching=False, watermark=0.02)
    )
    assert (cfg.max_num_seqs, cfg.enable_prefix_caching, cfg.watermark) == (64, False, 0.02)


def scenario(**scheduler):
    return parse_scenario({
        "name": "t", "model": "llama-3-8b", "hardware": "h100-sxm", "scheduler": scheduler,
        "workload": {"arrival": {"process": "poisson", "rate": 1.0}, "num_requests": 5,
                     "classes": [{"name": "c", "prompt_tokens": {"dist": "constant", "value": 10},
                                  "output_tokens": {"dist": "constant", "value": 3}}]},
    })  # fmt: skip


def test_a_variant_that_changes_the_policy_gets_the_new_policys_defaults():
    base = scenario(policy="vllm")
    other = Variant("s", ("scheduler.policy=sarathi",)).apply(base)
    assert other.scheduler.enable_prefix_caching is None  # unset stays unset through the round trip
    assert resolve(other.scheduler).enable_prefix_caching is False
    assert resolve(Variant("v", ("scheduler.policy=vllm",)).apply(other).scheduler).enable_prefix_caching


# --- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings, fragment",
    [
        (
            {"policy": "vllm", "preemption_mode": "swap"},
            "preemption_mode: 'swap' is not available with policy 'vllm'",
        ),
        ({"policy": "sarathi", "long_prefill_token_threshold": 64}, "long_prefill_token_threshold: got 64"),
        ({"policy": "vllm-v0", "async_scheduling": False}, "policy 'vllm' \\(vLLM V1\\) only"),
        ({"policy": "vllm", "long_prefill_token_threshold": -1}, "scheduler.long_prefill_token_threshold"),
    ],
)
def test_settings_the_policy_cannot_honour_are_rejected_naming_the_field(settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        scenario(**settings)


def test_a_budget_below_the_seats_or_a_cap_above_the_context_is_rejected():
    with pytest.raises(ConfigError, match="max_num_batched_tokens: got 128, below max_num_seqs"):
        v1(budget=128, seats=256)
    with pytest.raises(
        ConfigError, match="long_prefill_token_threshold: got 512; allowed: at most max_model_len"
    ):
        v1(long_prefill_token_threshold=512, max_len=256)

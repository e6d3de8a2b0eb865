"""Scheduler and KV block manager decisions on hand-made cases, and invariants on random ones."""

import numpy as np
import pytest

from simulator.scheduling import BlockManager, SchedulerConfig, SeqStatus, Sequence, make_scheduler


def seq(i, prompt, out, arrival=0.0):
    return Sequence(seq_id=i, prompt_len=prompt, max_output=out, arrival=arrival)


def scheduler(policy="vllm", blocks=64, block_size=4, max_len=256, watermark=0.0, **kw):
    cfg = SchedulerConfig(policy=policy, block_size=block_size, watermark=watermark, **kw)
    return make_scheduler(cfg, BlockManager(blocks, block_size, watermark), max_len)


def run_to_end(s, now=0.0, dt=1.0, max_steps=100_000):
    steps = []
    while s.has_work and len(steps) < max_steps:
        step = s.schedule(now)
        assert step is not None
        assert s.blocks.num_used <= s.blocks.num_blocks
        now += dt
        s.complete(step, now)
        steps.append(step)
    return steps


# --- block manager -------------------------------------------------------------------------
def test_block_manager_allocates_by_block_and_frees():
    bm = BlockManager(10, block_size=4)
    a = seq(0, 5, 3)
    bm.allocate(a, 5)
    assert len(a.block_table) == 2 and bm.num_free == 8
    bm.allocate(a, 8)  # still fits in two blocks
    assert len(a.block_table) == 2
    bm.allocate(a, 9)
    assert len(a.block_table) == 3 and bm.usage == pytest.approx(0.3)
    bm.free(a)
    assert bm.num_free == 10 and a.block_table == []


def test_block_manager_refuses_over_capacity_and_keeps_watermark():
    bm = BlockManager(100, block_size=1, watermark=0.1)
    assert bm.can_allocate(95) and not bm.can_allocate(95, admission=True)
    assert bm.can_allocate(90, admission=True)
    with pytest.raises(RuntimeError, match="over capacity"):
        bm.allocate(seq(0, 1, 1), 101)


# --- vLLM v0 (prefill first) -----------------------------------------------------------------
def test_vllm_v0_prefills_first_then_decodes_together():
    s = scheduler("vllm-v0")
    s.add(seq(0, 10, 3))
    s.add(seq(1, 6, 2))
    step = s.schedule(0.0)
    assert [x.seq_id for x in step.seqs] == [0, 1] and step.new_tokens == [10, 6]
    assert step.cached_tokens == [0, 0]
    s.complete(step, 1.0)
    assert all(x.num_output == 1 for x in step.seqs)  # a prefill samples the first token
    s.add(seq(2, 8, 2))
    step = s.schedule(1.0)  # the newcomer's prefill runs before anyone decodes
    assert [x.seq_id for x in step.seqs] == [2]
    s.complete(step, 2.0)
    step = s.schedule(2.0)
    assert [x.seq_id for x in step.seqs] == [0, 1, 2]
    assert step.new_tokens == [1, 1, 1] and step.cached_tokens == [10, 6, 8]


def test_vllm_v0_respects_token_budget_and_max_num_seqs():
    s = scheduler("vllm-v0", max_num_batched_tokens=2048, max_num_seqs=2)
    for i in range(3):
        s.add(seq(i, 100, 2))
    assert [x.seq_id for x in s.schedule(0.0).seqs] == [0, 1]
    s2 = scheduler("vllm-v0", max_num_batched_tokens=150)  # whole prompts only
    s2.add(seq(0, 100, 2))
    s2.add(seq(1, 100, 2))
    assert [x.seq_id for x in s2.schedule(0.0).seqs] == [0]


def test_vllm_v0_preempts_newest_by_recompute_when_blocks_run_out():
    # 4 blocks of 4 tokens. Two prompts of 8 tokens take 2 blocks each; the first decode
    # writes the 9th token, which needs a third block, so the newest is evicted.
    s = scheduler("vllm-v0", blocks=4, block_size=4)
    a, b = seq(0, 8, 5), seq(1, 8, 5)
    s.add(a)
    s.add(b)
    s.complete(s.schedule(0.0), 1.0)  # both prefilled, each has 9 tokens (8 + 1 sampled)
    assert s.blocks.num_free == 0
    step = s.schedule(1.0)
    assert step.preempted == [b] and step.seqs == [a]
    assert b.status is SeqStatus.WAITING and b.num_computed == 0 and b.block_table == []
    assert s.waiting[0] is b and b.num_preemptions == 1
    s.complete(step, 2.0)
    # b resumes later by prefilling its prompt and its generated token again
    steps = run_to_end(s, now=2.0)
    resumed = next(st for st in steps if b in st.seqs)
    assert resumed.new_tokens[resumed.seqs.index(b)] == 9
    assert a.num_output == 5 and b.num_output == 5
    assert s.blocks.num_free == 4


def test_requests_that_can_never_fit_are_rejected():
    s = scheduler(blocks=4, block_size=4, max_len=64)
    too_long = seq(0, 60, 10)  # over max_model_len
    too_big = seq(1, 15, 10)  # needs 7 blocks of 4, only 4 exist
    assert not s.add(too_long) and not s.add(too_big)
    assert too_long.finish_reason == "rejected" and not s.has_work


# --- static batching -----------------------------------------------------------------------
def test_static_batch_admits_nobody_until_the_batch_drains():
    s = scheduler("static")
    s.add(seq(0, 4, 3))
    s.add(seq(1, 4, 1))
    first = s.schedule(0.0)
    assert len(first.seqs) == 2
    s.complete(first, 1.0)  # seq 1 is done after its prefill
    s.add(seq(2, 4, 1))
    for t in (2.0, 3.0):
        step = s.schedule(t)
        assert [x.seq_id for x in step.seqs] == [0]
        s.complete(step, t + 1)
    step = s.schedule(4.0)
    assert [x.seq_id for x in step.seqs] == [2]


def test_static_reserves_the_whole_generation():
    s = scheduler("static", blocks=10, block_size=4)
    s.add(seq(0, 4, 16))  # 20 tokens -> 5 blocks reserved at admission
    s.schedule(0.0)
    assert s.blocks.num_used == 5


# --- invariants on random workloads ---------------------------------------------------------
@pytest.mark.parametrize("policy", ["vllm", "vllm-v0", "static"])
def test_random_workload_conserves_tokens_and_blocks(policy):
    rng = np.random.default_rng(1)
    s = scheduler(policy, blocks=60, block_size=8, max_len=512, max_num_seqs=8, watermark=0.01)
    seqs = [seq(i, int(rng.integers(1, 200)), int(rng.integers(1, 120))) for i in range(60)]
    now, k = 0.0, 0
    while k < len(seqs) or s.has_work:
        if k < len(seqs) and rng.random() < 0.3:
            s.add(seqs[k], now)
            k += 1
        step = s.schedule(now)
        now += 1.0
        if step is not None:
            assert s.blocks.num_used <= s.blocks.num_blocks
            owned = sum(len(x.block_table) for x in s.running)
            assert owned == s.blocks.num_used  # no leaked or double-counted block
            s.complete(step, now)
    assert all(x.status is SeqStatus.FINISHED for x in seqs)
    done = [x for x in seqs if x.finish_reason == "length"]
    assert all(x.num_output == x.max_output == len(x.token_times) for x in done)
    assert len(done) + sum(x.finish_reason == "rejected" for x in seqs) == len(seqs)
    assert s.blocks.num_free == s.blocks.num_blocks


@pytest.mark.parametrize("policy", ["vllm", "vllm-v0", "static"])
def test_merged_decode_runs_match_single_steps(policy):
    """The simulator's merged decode runs must give exactly the single-step results."""

    def drive(merge):
        rng = np.random.default_rng(7)
        s = scheduler(policy, blocks=40, block_size=4, max_len=512, max_num_seqs=6)
        seqs = [seq(i, int(rng.integers(1, 30)), int(rng.integers(1, 60))) for i in range(25)]
        arrivals = iter(np.cumsum(rng.exponential(5.0, len(seqs))).tolist())
        nxt = next(arrivals)
        now, k = 0.0, 0
        while k < len(seqs) or s.has_work:
            while k < len(seqs) and nxt <= now:
                s.add(seqs[k], now)
                k += 1
                nxt = next(arrivals, float("inf"))
            step = s.schedule(now)
            if step is None:
                now = nxt
                continue
            n = s.decode_run_length(step) if merge else 1
            if n > 1:
                ends = now + np.arange(1, n + 1, dtype=float)
                cut = int(np.searchsorted(ends, nxt))  # stop at the first boundary after an arrival
                ends = ends[: min(n, cut + 1)]
                s.complete_decode_run(step, ends)
                now = float(ends[-1])
            else:
                now += 1.0
                s.complete(step, now)
        return [(x.token_times, x.num_preemptions, x.finish_reason) for x in seqs]

    assert drive(merge=True) == drive(merge=False)

"""The real engine: the shared scheduler driving the torch model gives the model's own outputs."""

import random

import pandas as pd
import pytest
import torch

from backend.engine import Engine, to_request_records
from backend.model import StepBatch, build_model
from backend.runner import ModelRunner, token_slice
from backend.sampling import SamplingParams, uniforms
from simulator.common.errors import ConfigError
from simulator.metrics import summarize
from simulator.scheduling import SchedulerConfig, Sequence, Step
from simulator.spec import ModelSpec

SPEC = ModelSpec(
    "tiny",
    num_layers=2,
    hidden_size=64,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=128,
    vocab_size=97,
    max_context=256,
)
BLOCK = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Ops on a model this small are far shorter than a thread hand-off: on a shared machine,
    # a second intra-op thread only adds waiting.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    # A large init makes the logits peaked and varied, so wrong context shows in the tokens.
    return build_model(SPEC, seed=3, std=0.3)


def make_engine(model, num_blocks=256, **config) -> Engine:
    runner = ModelRunner(model, num_blocks=num_blocks, block_size=BLOCK)
    return Engine(runner, SchedulerConfig(block_size=BLOCK, **config))


def prompts(lengths, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(SPEC.vocab_size) for _ in range(n)] for n in lengths]


def greedy_reference(model, prompt, max_tokens):
    """A plain loop: recompute the whole sequence from scratch for every token."""
    tokens = list(prompt)
    for _ in range(max_tokens):
        kv = model.make_kv_cache(-(-len(tokens) // BLOCK), BLOCK)
        logits = model(StepBatch([tokens], [0], [list(range(kv.num_blocks))]), kv)
        tokens.append(int(logits[0].argmax()))
    return tokens[len(prompt) :]


LENGTHS = (3, 17, 9, 30, 1, 12)
MAX_TOKENS = (12, 5, 20, 8, 15, 10)


@pytest.fixture(scope="module")
def reference(model):
    return [greedy_reference(model, p, n) for p, n in zip(prompts(LENGTHS), MAX_TOKENS)]


def serve(engine, max_tokens=MAX_TOKENS, stagger=False, **options):
    """Add the standard prompts (optionally one per step, so batches keep changing) and run."""
    seqs = []
    for p, n in zip(prompts(LENGTHS), max_tokens):
        seqs.append(engine.add_request(p, n, **options))
        if stagger:
            engine.step()
    engine.run_until_idle()
    return seqs


def test_continuous_batching_gives_the_greedy_outputs_of_the_model_alone(model, reference):
    engine = make_engine(model)
    seqs = serve(engine, stagger=True)
    assert [s.output_token_ids for s in seqs] == reference
    assert [s.num_output for s in seqs] == list(MAX_TOKENS)  # max_tokens respected
    assert all(s.finish_reason == "length" for s in seqs)
    assert max(r.num_seqs for r in engine.records) > 1  # requests really shared steps
    assert engine.blocks.num_free == engine.runner.num_blocks  # every KV block returned


def test_records_have_one_row_per_step_with_positive_times(model, tmp_path):
    engine = make_engine(model)
    seqs = serve(engine)
    frame = engine.records_frame()
    assert len(frame) == len(engine.records) > 0
    assert (frame["execute_s"] > 0).all() and (frame["schedule_s"] > 0).all()
    assert frame["end"].is_monotonic_increasing
    # Every generated token is accounted for by a row that reached the end of its sequence.
    assert frame["num_batched_tokens"].sum() == sum(LENGTHS) + sum(MAX_TOKENS) - len(LENGTHS)
    first = frame.iloc[0]
    assert first["new_tokens"] == " ".join(map(str, LENGTHS))  # vllm: all prompts in one step
    path = engine.save_records(tmp_path / "steps.csv")
    assert len(pd.read_csv(path)) == len(frame)
    # Token times are the step end times, so the request records line up with the step records.
    ends = set(frame["end"])
    assert all(t in ends for s in seqs for t in s.token_times)
    summary = summarize(to_request_records(seqs))
    assert summary.completed == len(seqs)
    assert summary.output_tokens == sum(MAX_TOKENS)


def test_chunked_prefill_policy_gives_the_same_outputs(model, reference):
    engine = make_engine(model, policy="sarathi", chunk_size=5)
    seqs = serve(engine, stagger=True)
    assert [s.output_token_ids for s in seqs] == reference
    chunked = [r for r in engine.records if any(n > 1 for n in r.new_tokens) and r.num_batched_tokens <= 5]
    assert chunked and max(r.num_batched_tokens for r in engine.records) <= 5


def test_preemption_by_recompute_keeps_the_outputs(model, reference):
    # 16 blocks of 4 tokens: 64 tokens of KV for requests needing up to 38 each.
    engine = make_engine(model, num_blocks=16, watermark=0.0)
    seqs = serve(engine)
    assert sum(s.num_preemptions for s in seqs) > 0
    assert [s.output_token_ids for s in seqs] == reference
    assert engine.blocks.num_free == 16


def test_preemption_by_swap_keeps_the_outputs(model, reference):
    engine = make_engine(
        model, num_blocks=16, policy="vllm-v0", watermark=0.0, preemption_mode="swap", swap_space_gb=0.001
    )
    seqs = serve(engine)
    assert sum(s.num_preemptions for s in seqs) > 0
    assert engine.scheduler.host.num_swap_outs > 0
    assert [s.output_token_ids for s in seqs] == reference


def test_prefix_caching_reuses_blocks_and_keeps_the_outputs(model):
    shared = prompts([24], seed=5)[0]
    tails = prompts([3, 7, 5], seed=6)
    engine = make_engine(model, enable_prefix_caching=True)
    first = engine.add_request(shared + tails[0], 6)
    engine.run_until_idle()
    later = [engine.add_request(shared + t, 6) for t in tails[1:]]
    engine.run_until_idle()
    assert first.num_cached_prefix == 0
    assert all(s.num_cached_prefix == 24 for s in later)
    for seq in [first, *later]:
        assert seq.output_token_ids == greedy_reference(model, seq.prompt_token_ids, 6)
    assert engine.blocks.num_free == engine.runner.num_blocks


def test_eos_stops_a_request_unless_ignore_eos(model, reference):
    out = reference[2]
    eos = out[3]
    stop_at = out.index(eos)
    engine = make_engine(model)
    prompt = prompts(LENGTHS)[2]
    stopped = engine.add_request(prompt, 20, eos_token_id=eos)
    ignored = engine.add_request(prompt, 20, eos_token_id=eos, ignore_eos=True)
    engine.run_until_idle()
    assert stopped.output_token_ids == out[: stop_at + 1] and stopped.finish_reason == "stop"
    assert ignored.output_token_ids == out and ignored.finish_reason == "length"


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(model):
    p = prompts([10], seed=9)[0]
    options = {"temperature": 1.0, "top_p": 0.9, "seed": 1234}
    alone = make_engine(model).generate([p], 30, **options)[0]
    crowded = make_engine(model).generate([p, *prompts((5, 20, 8), seed=1)], 30, **options)[0]
    other_seed = make_engine(model).generate([p], 30, temperature=1.0, top_p=0.9, seed=99)[0]
    greedy = make_engine(model).generate([p], 30)[0]
    assert alone == crowded
    assert alone != other_seed and alone != greedy


def test_top_p_keeps_only_the_most_likely_tokens(model):
    # With top_p tiny only the most likely token survives: sampling equals greedy.
    p = prompts([10], seed=4)[0]
    sampled = make_engine(model).generate([p], 15, temperature=2.0, top_p=1e-6, seed=1)[0]
    assert sampled == make_engine(model).generate([p], 15)[0]


def test_uniform_draws_are_a_pure_function_of_seed_and_counter():
    u = uniforms([1, 1, 2], [0, 1, 0])
    assert ((u >= 0) & (u < 1)).all() and len(set(u.tolist())) == 3
    assert (uniforms([1, 2], [1, 0]) == u[1:]).all()
    many = uniforms([7] * 20000, range(20000))
    assert abs(many.mean() - 0.5) < 0.01


def test_abort_returns_the_blocks_at_once(model):
    engine = make_engine(model)
    seq = engine.add_request(prompts([20])[0], 50)
    engine.step()
    engine.step()
    assert seq.block_table and engine.blocks.num_free < engine.runner.num_blocks
    engine.abort(seq)
    assert seq.finish_reason == "abort" and engine.blocks.num_free == engine.runner.num_blocks
    assert not engine.has_work
    assert to_request_records([seq])[0].status == "error"


def test_requests_that_never_fit_are_rejected_and_bad_ones_refused(model):
    engine = make_engine(model, num_blocks=8)
    too_long = engine.add_request(prompts([30])[0], 10)  # 40 tokens > 8 blocks of 4
    assert too_long.finish_reason == "rejected" and not engine.has_work
    assert to_request_records([too_long])[0].status == "rejected"
    with pytest.raises(ConfigError, match="max_tokens"):
        engine.add_request([1, 2], 0)
    with pytest.raises(ConfigError, match="token id 97"):
        engine.add_request([1, 97], 3)
    with pytest.raises(ConfigError, match="empty"):
        engine.add_request([], 3)
    with pytest.raises(ConfigError, match="top_p"):
        engine.add_request([1], 3, temperature=1.0, top_p=0)
    with pytest.raises(ConfigError, match="block_size"):
        Engine(ModelRunner(model, num_blocks=8, block_size=BLOCK), SchedulerConfig(block_size=16))
    with pytest.raises(ConfigError, match="max_model_len"):
        Engine(ModelRunner(model, num_blocks=8, block_size=BLOCK), SchedulerConfig(block_size=BLOCK), 10_000)


def test_runner_executes_a_hand_made_step_and_reports_its_sizes(model):
    runner = ModelRunner(model, num_blocks=32, block_size=BLOCK)
    assert runner.kv_bytes_per_token == 2 * SPEC.num_layers * SPEC.num_kv_heads * SPEC.head_dim * 4
    assert runner.weight_bytes > runner.streamed_weight_bytes > 0
    # A prefill chunk that stops short of the prompt's end samples nothing; a full one samples.
    seqs = [Sequence(i, prompt_len=10, max_output=4, arrival=0.0, prompt_token_ids=list(range(10))) for i in range(2)]
    seqs[0].block_table, seqs[1].block_table = [0, 1], [2, 3, 4]
    out = runner.execute(Step(seqs, [6, 10], [0, 0]), [SamplingParams(), SamplingParams()])
    assert out[0] is None and isinstance(out[1], int)
    assert ModelRunner(model, kv_cache_gb=0.001, block_size=BLOCK).num_blocks == int(0.001 * 2**30) // (
        BLOCK * runner.kv_bytes_per_token
    )


def test_token_slice_spans_prompt_and_output():
    seq = Sequence(0, prompt_len=3, max_output=5, arrival=0.0, prompt_token_ids=[1, 2, 3])
    seq.output_token_ids, seq.num_output = [7, 8], 2
    assert token_slice(seq, 0, 5) == [1, 2, 3, 7, 8]
    assert token_slice(seq, 2, 4) == [3, 7]
    assert token_slice(seq, 4, 5) == [8]
    assert token_slice(seq, 0, 2) == [1, 2]


def test_runner_runs_reduced_precision_and_int8():
    torch.manual_seed(0)
    for options in ({"dtype": "bf16"}, {"quantization": "int8"}):
        runner = ModelRunner(SPEC, device="cpu", num_blocks=64, block_size=BLOCK, seed=2, **options)
        engine = Engine(runner, SchedulerConfig(block_size=BLOCK))
        outs = engine.generate(prompts((4, 9)), 6)
        assert [len(o) for o in outs] == [6, 6]
    fp32 = ModelRunner(SPEC, device="cpu", num_blocks=8, block_size=BLOCK)
    int8 = ModelRunner(SPEC, device="cpu", num_blocks=8, block_size=BLOCK, quantization="int8")
    assert int8.streamed_weight_bytes < 0.4 * fp32.streamed_weight_bytes
    with pytest.raises(ConfigError, match="quantization"):
        ModelRunner(SPEC, device="cpu", num_blocks=8, quantization="int4")

"""Engine speed on CPU: decode tokens/s by batch size, the batch-1 step against the memory-bandwidth
bound, Hugging Face transformers' generate side by side, continuous batching against serving
one request after another, and the effect of bf16 and int8 weights.

    .venv/bin/python benchmarks/bench_engine.py [--model llama-100m] [--threads 2] [--quick]

Decode speed is measured per step, the same way on both sides: the median interval between
consecutive decode steps (the engine's step records; a logits processor stamping each step of
transformers' generate), so prefill is excluded and a burst of load from another process moves
a few intervals, not the median. Tokens/s of a batch of B is B / that interval.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from backend import native
from backend.engine import Engine
from backend.model import linear
from backend.runner import ModelRunner
from simulator.scheduling import SchedulerConfig
from simulator.spec import get_model

PROMPT = 128


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def prompts(batch: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(3, vocab, size=(batch, PROMPT)).tolist()


# --- memory bandwidth ------------------------------------------------------------------------


class ReadBandwidth:
    """Bytes per second read two ways: a streaming sum over 1 GiB, and a matrix-vector product
    with a 256 MiB fp32 weight through the model's own linear kernel (what a decode step does)."""

    def __init__(self):
        self.big = torch.randn(2**28)
        self.weight, self.x = torch.randn(8192, 8192), torch.randn(1, 8192)
        self.measure()  # warm-up: pages touched, kernels loaded

    def measure(self, repeats: int = 3) -> dict[str, float]:
        stream = min(median_time(self.big.sum, 1) for _ in range(repeats))
        gemv = min(median_time(lambda: linear(self.x, self.weight), 1) for _ in range(repeats + 2))
        return {"streaming sum": self.big.nbytes / stream, "GEMV (model's kernel)": self.weight.nbytes / gemv}


# --- our engine ------------------------------------------------------------------------------


def engine_serve_time(runner: ModelRunner, batch: int, tokens: int, repeats: int, together: bool = True) -> float:
    """Wall seconds to serve `batch` requests of PROMPT + `tokens` tokens (together, or one by one)."""
    reqs = prompts(batch, runner.spec.vocab_size)

    def serve():
        engine = Engine(runner, SchedulerConfig(max_num_seqs=max(batch, 1)))
        for group in [reqs] if together else [[r] for r in reqs]:
            engine.generate(group, tokens, ignore_eos=True)

    serve()  # warm-up
    return median_time(serve, repeats)


def engine_decode(runner: ModelRunner, batch: int, tokens: int) -> tuple[float, float]:
    """(median seconds between consecutive full-batch decode steps, median ModelRunner.execute
    seconds of those steps)."""
    engine = Engine(runner, SchedulerConfig(max_num_seqs=batch))
    engine.generate(prompts(batch, runner.spec.vocab_size, seed=1), 4, ignore_eos=True)  # warm-up
    engine.generate(prompts(batch, runner.spec.vocab_size), tokens, ignore_eos=True)
    frame = engine.records_frame()
    decode = frame[(frame.num_prefill_tokens == 0) & (frame.num_seqs == batch)]
    consecutive = decode["index"].diff() == 1
    interval = decode["end"].diff()[consecutive].median()
    return float(interval), float(decode["execute_s"].median())


# --- transformers ----------------------------------------------------------------------------


def hf_model(name: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = get_model(name)
    config = LlamaConfig(
        vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, head_dim=spec.head_dim, max_position_embeddings=spec.max_context,
        rope_theta=spec.rope_theta, rms_norm_eps=spec.rms_norm_eps, tie_word_embeddings=spec.tie_embeddings,
        attention_bias=spec.attention_bias, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval(), spec


def hf_decode(model, spec, batch: int, tokens: int) -> float:
    """Median seconds between consecutive decode steps of `generate` (greedy, fixed length)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class Stamp(LogitsProcessor):
        def __init__(self):
            self.times: list[float] = []

        def __call__(self, input_ids, scores):
            self.times.append(time.perf_counter())
            return scores

    ids = torch.tensor(prompts(batch, spec.vocab_size))
    with torch.inference_mode():
        for n in (4, tokens):  # warm-up, then the measured run
            stamp = Stamp()
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0, logits_processor=LogitsProcessorList([stamp]))  # fmt: skip
    return float(np.median(np.diff(stamp.times)))


# --- the report ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-100m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64, help="output tokens per request (default 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repeats, skip transformers")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.repeats = 16, 1
    torch.set_num_threads(args.threads)
    console = Console()
    batches = [int(b) for b in args.batches.split(",")]
    n, reps = args.tokens, args.repeats
    runner = ModelRunner(args.model, device="cpu", dtype="fp32", kv_cache_gb=1.0)
    console.print(f"{args.model} on CPU, fp32, torch {torch.__version__}, {args.threads} threads; "
                  f"prompts of {PROMPT} tokens, {n} output tokens each, median of {reps}")  # fmt: skip

    # Decode throughput by batch size, and transformers at batch 1 and 32.
    hf = None if args.quick else hf_model(args.model)
    table = Table(title="Decode tokens/s (prefill excluded)")
    for col in ("batch", "engine tok/s", "step ms", "of which execute", "transformers tok/s", "engine / transformers"):
        table.add_column(col, justify="right")
    for b in batches:
        interval, execute = engine_decode(runner, b, n)
        theirs = b / hf_decode(*hf, b, n) if hf is not None and b in (1, 32) else None
        table.add_row(str(b), f"{b / interval:,.0f}", f"{interval * 1e3:.2f}", f"{execute * 1e3:.2f}",
                      "-" if theirs is None else f"{theirs:,.0f}",
                      "-" if theirs is None else f"{b / interval / theirs:.2f}x")  # fmt: skip
    console.print(table)

    # Batch 1 against the memory-bandwidth bound. Neighbours on a shared machine move the bandwidth
    # by tens of percent within minutes, so each round measures the bandwidth just before and just
    # after its decode steps, and the round's step is judged against the mean of the two.
    meter = ReadBandwidth()
    context = PROMPT + max(n, 32) // 2
    moved = runner.streamed_weight_bytes + context * runner.kv_bytes_per_token
    rounds = []
    for _ in range(max(reps, 5)):
        before = meter.measure()
        step_s = engine_decode(runner, 1, max(n, 32))[1]
        after = meter.measure()
        rounds.append(({how: (before[how] + after[how]) / 2 for how in before}, step_s))
    del meter
    table = Table(title=f"Batch-1 decode step vs the bound ({moved / 1e6:,.0f} MB read per step), "
                        f"median of {len(rounds)} rounds")  # fmt: skip
    for col in ("read bandwidth measured by", "GB/s", "bound ms", "execute ms", "measured / bound"):
        table.add_column(col, justify="right")
    step = statistics.median(s for _, s in rounds)
    for how in rounds[0][0]:
        rate = statistics.median(r[how] for r, _ in rounds)
        ratio = statistics.median(s / (moved / r[how]) for r, s in rounds)
        table.add_row(how, f"{rate / 1e9:.1f}", f"{moved / rate * 1e3:.2f}", f"{step * 1e3:.2f}", f"{ratio:.2f}x")
    console.print(table)
    console.print(f"native CPU kernels: {native.status()}")

    # Continuous batching against one request after another.
    together = engine_serve_time(runner, 16, n, reps)
    alone = engine_serve_time(runner, 16, n, reps, together=False)
    console.print(f"16 requests: {16 * n / together:,.0f} output tok/s served together, {16 * n / alone:,.0f} "
                  f"one after another: {alone / together:.1f}x")  # fmt: skip

    # Precision and int8 weights.
    table = Table(title="Weights: memory and decode speed")
    for col in ("weights", "MiB", "streamed MB/step", "batch 1 step ms", "batch 32 step ms"):
        table.add_column(col, justify="right")
    for label, options in (("fp32", {}), ("bf16", {"dtype": "bf16"}), ("int8 (fp32 model)", {"quantization": "int8"})):
        r = runner if not options else ModelRunner(args.model, device="cpu", kv_cache_gb=0.25, **options)
        table.add_row(label, f"{r.weight_bytes / 2**20:,.0f}", f"{r.streamed_weight_bytes / 1e6:,.0f}",
                      f"{engine_decode(r, 1, n)[1] * 1e3:.2f}", f"{engine_decode(r, 32, n)[1] * 1e3:.1f}")  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()

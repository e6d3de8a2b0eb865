"""Why a CPU mixture of experts runs slower served than profiled, measured in one process.

    .venv/bin/python benchmarks/bench_moe_serving.py [--model moe-60m] [--rounds 8] [--steps 400]

1. Expert rows padded to bucket sizes (`backend/layers.padded_rows`) against each expert's exact
   row count: prefill steps of 150, 300 and 500 tokens, the same token ids at every call (as a
   profile repeats a shape) or fresh ones (as serving routes every step anew, so oneDNN meets new
   row counts and compiles a kernel for each), all four cases interleaved in random order.
2. A batch-1 decode step back to back (as a profile times it) against one preceded by the kind of
   Python work an engine does between steps (a few MB of objects walked), interleaved; run it for
   a dense model too (`--model llama-100m`), whose decode layers are one native call each.

Both print medians and the ratio; the order of cases is random, so drift of a shared machine
lands on both sides alike.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch

from backend import moe
from backend.runner import ModelRunner
from calibration.measure.prompts import PROMPT_TOKEN_RANGE
from calibration.measure.step_grid import build_step


def _timed(runner, step) -> float:
    start = time.perf_counter()
    runner.execute(step)
    return time.perf_counter() - start


def padding(runner, rounds: int) -> None:
    padded, exact = moe.padded_rows, (lambda rows, x: rows)
    rng = np.random.default_rng(1)

    def step(n: int, fresh: bool):
        s = build_step([(n, 0)], runner.num_blocks, runner.block_size)
        ids = rng.integers(*PROMPT_TOKEN_RANGE, size=n) if fresh else np.arange(1000, 1000 + n)
        s.seqs[0].prompt_token_ids = ids.tolist()
        return s

    cases = [(n, fresh, side) for n in (150, 300, 500) for fresh in (False, True) for side in ("exact", "padded")]
    times: dict = {c: [] for c in cases}
    for r in range(rounds):
        random.shuffle(cases)
        for n, fresh, side in cases:
            moe.padded_rows = padded if side == "padded" else exact
            elapsed = _timed(runner, step(n, fresh))
            if r >= 2:  # the first rounds compile the common row counts
                times[(n, fresh, side)].append(elapsed)
    moe.padded_rows = padded
    print("prefill step, expert rows exact vs padded to buckets (medians)")
    for n in (150, 300, 500):
        for fresh in (False, True):
            a, b = (np.median(times[(n, fresh, side)]) for side in ("exact", "padded"))
            ids = "fresh ids" if fresh else "same ids "
            print(f"  {n} tokens, {ids}: exact {a * 1e3:.1f} ms, padded {b * 1e3:.1f} ms, padded/exact {b / a:.3f}")


def between_steps(runner, steps: int) -> None:
    step = build_step([(1, 300)], runner.num_blocks, runner.block_size)
    objects = [{"a": i, "b": str(i)} for i in range(200_000)]
    times: dict = {"back to back": [], "work between": []}
    for i in range(steps):
        side = random.choice(list(times))
        runner.execute(step)
        if side == "work between":
            sum(d["a"] for d in objects[::3])
        elapsed = _timed(runner, step)
        if i >= 20:
            times[side].append(elapsed)
    a, b = (np.median(times[side]) for side in ("back to back", "work between"))
    print(f"batch-1 decode step ({runner.spec.name}): back to back {a * 1e3:.3f} ms, after other Python work "
          f"{b * 1e3:.3f} ms, ratio {b / a:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="moe-60m")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of the padding comparison")
    parser.add_argument("--steps", type=int, default=400, help="decode steps of the between-steps comparison")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runner = ModelRunner(args.model, device="cpu", dtype="fp32", seed=0)
    if runner.spec.is_moe:
        padding(runner, args.rounds)
    between_steps(runner, args.steps)


if __name__ == "__main__":
    main()

"""CPU decode steps with and without keeping large buffers in the heap (backend/cpu_allocator.py).

    .venv/bin/python benchmarks/bench_cpu_allocator.py [--model llama-100m] [--threads 1] [--repeats 7]

Each side runs in its own process (the glibc setting is process-wide and cannot be undone), on
the same decode step shapes through `ModelRunner.execute`, one process after the other, then the
two are run again in the other order so drift of a shared machine shows. Prints the median step
time of each shape on each side and the ratio. Both sides run torch's decode attention (its padded
K/V gather is what passes the thresholds): the native kernels, which read the cache in place,
are switched off with LLMSIM_NATIVE_KERNELS=0.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

SHAPES = [(1, 300), (4, 400), (8, 800), (16, 512), (16, 1024), (24, 1024), (16, 2047), (32, 1024)]


def measure(model: str, threads: int, repeats: int, tuned: bool) -> dict[str, float]:
    """Median execute seconds of every decode shape, in this process."""
    import torch

    import backend.cpu_allocator as allocator

    if not tuned:
        allocator._applied = False  # the runner then leaves glibc's defaults alone
    from backend.runner import ModelRunner
    from calibration.measure.step_grid import build_step

    torch.set_num_threads(threads)
    runner = ModelRunner(model, device="cpu", dtype="fp32", seed=0)
    out = {}
    for rows, context in SHAPES:
        step = build_step([(1, context)] * rows, runner.num_blocks, runner.block_size)
        for _ in range(2):
            runner.execute(step)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            runner.execute(step)
            times.append(time.perf_counter() - start)
        out[f"{rows}x{context}"] = statistics.median(times)
    return out


def in_subprocess(args, tuned: bool) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", "tuned" if tuned else "default", "--model", args.model,
               "--threads", str(args.threads), "--repeats", str(args.repeats)]  # fmt: skip
    env = {**os.environ, "LLMSIM_NATIVE_KERNELS": "0"}
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-100m")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", choices=["default", "tuned"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.model, args.threads, args.repeats, args.child == "tuned")))
        return

    runs = {"default": [], "tuned": []}
    for order in (("default", "tuned"), ("tuned", "default")):
        for side in order:
            runs[side].append(in_subprocess(args, side == "tuned"))
    table = Table(title=f"{args.model} decode steps, {args.threads} thread(s): glibc defaults vs large buffers in heap")
    for column in ("rows x context", "padded KV tokens", "default ms", "in heap ms", "speed-up"):
        table.add_column(column, justify="right")
    for key in runs["default"][0]:
        rows, context = map(int, key.split("x"))
        before = statistics.median(r[key] for r in runs["default"])
        after = statistics.median(r[key] for r in runs["tuned"])
        table.add_row(key, f"{rows * context:,}", f"{before * 1e3:.1f}", f"{after * 1e3:.1f}", f"{before / after:.2f}x")
    Console().print(table)


if __name__ == "__main__":
    main()

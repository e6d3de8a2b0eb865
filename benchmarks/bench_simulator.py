"""Simulator speed: the whole Azure 2023 conversation trace (19,366 requests) on 4 replicas of
Llama-3-8B on A100-80GB with vLLM-style batching. Prints simulated requests per wall-second.

    .venv/bin/python benchmarks/bench_simulator.py [--repeats 3] [--no-merge]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from simulator.scenario import load_scenario, run

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "azure_conv_a100.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-merge", action="store_true", help="one SimPy event per step, no merged decode runs")
    args = parser.parse_args()
    overrides = ["deployment.replicas=4", f"run.merge_decode_steps={str(not args.no_merge).lower()}"]
    scenario = load_scenario(SCENARIO, overrides)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        results = run(scenario)
        times.append(time.perf_counter() - start)
    best = min(times)
    n = results.summary.total
    print(f"scenario: {SCENARIO.name}, 4 replicas, merge_decode_steps={not args.no_merge}")
    print(f"requests: {n}, engine steps simulated: {results.info['steps']:,}")
    print(f"wall time: best {best:.2f} s of {args.repeats} (all: {', '.join(f'{t:.2f}' for t in times)})")
    print(f"simulated requests per wall-second: {n / best:,.0f}")
    print(f"p90 TTFT {results.summary.latency['ttft'].p90 * 1e3:.0f} ms, saturated: {results.summary.saturated}")


if __name__ == "__main__":
    main()

"""Simulator speed: the whole Azure 2023 conversation trace (19,366 requests, 58 minutes) on 4
replicas of Llama-3-8B on A100-80GB under vLLM V1 batching, step times from the shipped kernel
tables (vLLM 0.14.0 on A100), every metric computed. Prints the simulation time (drawing the
workload, serving it, summarising it; wall and CPU time) apart from start-up (imports, reading the scenario,
building the deployment and its step model); nothing is plotted.

Each repeat runs in a fresh process. With `--against DIR` (another checkout of llmsim, e.g. the
code before a change) both versions run in one invocation, alternating in both orders (A B B A
...), so that a shared machine's load falls on both alike; the ratio of their medians is printed.

    .venv/bin/python benchmarks/bench_simulator.py [--repeats 3] [--against /tmp/llmsim-before]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "azure_conv_a100.yaml"
OVERRIDES = ["deployment.replicas=4"]


def child(overrides: list[str]) -> None:
    """One measured run in this process: print its phases as JSON."""
    start = time.perf_counter()
    from simulator.scenario import load_scenario, run
    from simulator.scenario.build import build_deployment

    imported = time.perf_counter()
    scenario = load_scenario(SCENARIO, overrides)
    deployment = build_deployment(scenario)
    built, cpu = time.perf_counter(), time.process_time()
    results = run(scenario, deployment=deployment)
    done = time.perf_counter()
    print(json.dumps({
        "import_s": imported - start, "build_s": built - imported, "simulate_s": done - built,
        "simulate_cpu_s": time.process_time() - cpu,
        "requests": results.summary.total, "steps": results.info["steps"],
        "p90_ttft_ms": results.summary.latency["ttft"].p90 * 1e3, "saturated": results.summary.saturated,
    }))


def measure(tree: Path, overrides: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *[a for o in overrides for a in ("--set", o)]]
    out = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each version")
    parser.add_argument("--against", type=Path, default=None, help="another llmsim checkout to compare with")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra scenario override")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = OVERRIDES + args.overrides
    if args.child:
        child(overrides)
        return
    extra = args.overrides
    trees = {"this": ROOT} if args.against is None else {"this": ROOT, "against": args.against.resolve()}
    names = list(trees)
    order = [n for i in range(args.repeats) for n in (names if i % 2 == 0 else names[::-1])]  # A B B A ...
    print(f"scenario: {SCENARIO.name}, {' '.join(overrides)}; order {' '.join(order)}; load average at start {load()}")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for name in order:
        r = measure(trees[name], extra)
        runs[name].append(r)
        print(f"  {name:8s} simulate {r['simulate_s']:6.2f} s wall, {r['simulate_cpu_s']:6.2f} s CPU  (start-up: import {r['import_s']:.2f} s, build "
              f"{r['build_s']:.2f} s)  load {load()}", flush=True)
    for name in names:
        sims = [r["simulate_s"] for r in runs[name]]
        cpus = [r["simulate_cpu_s"] for r in runs[name]]
        r = runs[name][0]
        print(f"{name} ({trees[name]}): {r['requests']:,} requests, {r['steps']:,} engine steps, p90 TTFT "
              f"{r['p90_ttft_ms']:.0f} ms, saturated {r['saturated']}; simulation min {min(sims):.2f} s, median "
              f"{statistics.median(sims):.2f} s of {len(sims)} (CPU min {min(cpus):.2f} s, median "
              f"{statistics.median(cpus):.2f} s); {r['requests'] / min(sims):,.0f} requests per second")
    if len(names) == 2:
        for key, what in (("simulate_s", "wall"), ("simulate_cpu_s", "CPU")):
            med = {n: statistics.median(r[key] for r in runs[n]) for n in names}
            best = {n: min(r[key] for r in runs[n]) for n in names}
            print(f"against / this, {what} time: {med['against'] / med['this']:.2f}x by median, "
                  f"{best['against'] / best['this']:.2f}x by min")
    print(f"load average at end {load()} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()

"""A fleet's day in bounded memory: 10 million requests (ShareGPT lengths, Poisson arrivals at
10M / 86,400 s = 115.7 requests/s) on 64 replicas of Llama-3-8B on A100-80GB under vLLM V1
batching, kernel-table step times, streamed (`run.stream_above`): requests drawn lazily, records
written to requests.csv in chunks, percentiles from the 1% quantile sketch.

`--requests N` runs the first N requests of that day at the same rate (the same load on every
replica, so peak memory is the same and time grows with N); several sizes show whether memory
stays flat. Each run is a fresh process; it prints wall and CPU time of the simulation, the peak
resident memory (ru_maxrss) and the load average. Sizes run in the order given, then reversed
(both orders), `--repeats` times.

    .venv/bin/python benchmarks/bench_day.py [--requests 10000000] [--requests 100000 ...] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAY_REQUESTS = 10_000_000
RATE = DAY_REQUESTS / 86_400.0
REPLICAS = 64


def scenario(requests: int, out: Path) -> dict:
    lengths = {"dist": "empirical", "path": str(ROOT / "scenarios" / "traces" / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv")}
    return {
        "name": "fleet_day", "seed": 0, "model": "llama-3-8b", "hardware": "a100-80gb",
        "deployment": {"replicas": REPLICAS, "weight_dtype": "bf16", "kv_dtype": "bf16"},
        "scheduler": {"policy": "vllm"}, "router": "least_outstanding_requests",
        "workload": {"arrival": {"process": "poisson", "rate": RATE}, "num_requests": requests,
                     "classes": [{"name": "chat", "prompt_tokens": lengths, "output_tokens": lengths,
                                  "slo": {"ttft_ms": 1000, "tpot_ms": 100}}]},
        "run": {"stream_above": 1, "stream_dir": str(out)},
    }


def child(requests: int) -> None:
    start = time.perf_counter()
    import yaml

    from simulator.scenario import load_scenario, run
    from simulator.scenario.build import build_deployment

    with tempfile.TemporaryDirectory(prefix="llmsim-day-") as tmp:
        path = Path(tmp) / "fleet_day.yaml"
        path.write_text(yaml.safe_dump(scenario(requests, Path(tmp) / "out")))
        sc = load_scenario(path)
        deployment = build_deployment(sc)
        built, cpu = time.perf_counter(), time.process_time()
        results = run(sc, deployment=deployment)
        done, cpu = time.perf_counter(), time.process_time() - cpu
        csv_mb = (Path(tmp) / "out" / "requests.csv").stat().st_size / 1e6
    s = results.summary
    print(json.dumps({
        "requests": s.total, "completed": s.completed, "steps": results.info["steps"],
        "startup_s": built - start, "simulate_s": done - built, "simulate_cpu_s": cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "requests_csv_mb": csv_mb,
        "p90_ttft_ms": s.latency["ttft"].p90 * 1e3, "p90_tpot_ms": s.latency["tpot"].p90 * 1e3,
        "simulated_s": results.info["simulated_time_s"], "saturated": s.saturated,
    }))


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, action="append", help=f"requests (default {DAY_REQUESTS:,})")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    sizes = args.requests or [DAY_REQUESTS]
    order = [n for i in range(args.repeats) for n in (sizes if i % 2 == 0 else sizes[::-1])]
    if len(sizes) > 1 and args.repeats == 1:
        order = sizes + sizes[::-1]
    print(f"{REPLICAS} replicas, {RATE:.1f} requests/s; order {' '.join(f'{n:,}' for n in order)}; "
          f"load average at start {load()} ({os.cpu_count()} CPUs)")
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    for n in order:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n)]
        r = json.loads(subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        runs[n].append(r)
        print(f"  {n:>11,} requests: simulate {r['simulate_s']:8.1f} s wall, {r['simulate_cpu_s']:8.1f} s CPU, "
              f"peak RSS {r['peak_rss_mb']:6.0f} MB, requests.csv {r['requests_csv_mb']:.0f} MB, "
              f"{r['steps']:,} steps, {r['simulated_s'] / 3600:.2f} h simulated, p90 TTFT {r['p90_ttft_ms']:.0f} ms, "
              f"p90 TPOT {r['p90_tpot_ms']:.1f} ms, saturated {r['saturated']}; load {load()}", flush=True)
    for n in sizes:
        wall = [r["simulate_s"] for r in runs[n]]
        cpu = [r["simulate_cpu_s"] for r in runs[n]]
        rss = [r["peak_rss_mb"] for r in runs[n]]
        print(f"{n:,} requests: simulation min {min(wall):.1f} s / median {statistics.median(wall):.1f} s wall, "
              f"CPU min {min(cpu):.1f} s / median {statistics.median(cpu):.1f} s, peak RSS max {max(rss):.0f} MB "
              f"({len(wall)} runs); {n / min(cpu):,.0f} requests per CPU-second")
    print(f"load average at end {load()}")


if __name__ == "__main__":
    main()

"""Load tools no one here wrote, against `llmsim serve`: guidellm, aiperf and inference-perf.

    .venv/bin/python benchmarks/bench_load_tools.py [--model llama-20m] [--requests 16]
        [--concurrency 4] [--prompt-tokens 64] [--output-tokens 32] [--threads 1]

Starts `llmsim serve` (the real command line, a subprocess on a free port of 127.0.0.1), reads
the tokenizer folder it prints, and runs each tool found on PATH with the commands of
backend/load_tools.py: offline, the tokenizer loaded by path, `ignore_eos`, streamed. For each
tool it prints what the tool measured (medians) next to what the server's /metrics saw of the
same requests (histogram deltas, the median interpolated as Prometheus' histogram_quantile does):
output tokens per request must agree exactly; TTFT and ITL as the server timed them (from the
request's arrival to the bytes written) sit just under the tool's own.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from backend import load_tools


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(url: str) -> dict[str, float]:
    values = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def histogram_median(before: dict, after: dict, name: str) -> float:
    """p50 of the observations between two scrapes, interpolated within its bucket."""
    buckets = []
    for key, value in after.items():
        if key.startswith(f"{name}_bucket{{") and 'le="+Inf"' not in key:
            le = float(re.search(r'le="([^"]+)"', key).group(1))
            buckets.append((le, value - before.get(key, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if not total:
        return float("nan")
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= total / 2:
            return lower + (le - lower) * (total / 2 - below) / max(count - below, 1e-12)
        lower, below = le, count
    return buckets[-1][0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="llama-20m")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    args = parser.parse_args()

    tools = [t for t in load_tools.TOOLS if load_tools.installed(t)]
    if not tools:
        print(f"none of {', '.join(load_tools.TOOLS)} is on PATH; install one (see docs/serving.md)")
        return 1
    work = Path(tempfile.mkdtemp(prefix="llmsim-load-tools-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (work / "serve.log").open("w")
    serve = subprocess.Popen(
        [sys.executable, "-u", "-m", "simulator.cli", "serve", "--model", args.model, "--port", str(port),
         "--threads", str(args.threads), "--tokenizer-dir", str(work / "tokenizer"), "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or serve.poll() is not None:
                raise RuntimeError(f"llmsim serve did not start; see {work / 'serve.log'}")
            time.sleep(0.5)
        printed = (work / "serve.log").read_text()
        print(printed, end="")
        tokenizer = Path(re.search(r"^tokenizer: (\S+)", printed, re.MULTILINE).group(1))
        load = load_tools.Load(url, args.model, tokenizer, args.requests, args.concurrency, args.prompt_tokens,
                               args.output_tokens)  # fmt: skip
        table = Table(title=f"{args.model}: {args.requests} streamed requests, {args.concurrency} at a time, "
                      f"{args.prompt_tokens} prompt / {args.output_tokens} output tokens")  # fmt: skip
        for column in ("tool", "ok", "errors", "output tok/req (tool)", "output tok/req (server)",
                       "TTFT p50 ms (tool)", "TTFT p50 ms (server)", "ITL p50 ms (tool)", "ITL p50 ms (server)",
                       "wall s"):  # fmt: skip
            table.add_column(column, justify="right")
        model = f'{{model_name="{args.model}"}}'
        for tool in tools:
            before = scrape(url)
            run = load_tools.run_tool(tool, load, work / tool)
            after = scrape(url)
            ends = sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith("llmsim_request_success_total"))
            tokens = after[f"llmsim_generation_tokens_total{model}"] - before.get(f"llmsim_generation_tokens_total{model}", 0)
            ttft = histogram_median(before, after, "llmsim_time_to_first_token_seconds") * 1000
            itl = histogram_median(before, after, "llmsim_inter_token_latency_seconds") * 1000
            table.add_row(tool, str(run.completed), str(run.errors), f"{run.output_tokens:g}",
                          f"{tokens / max(ends, 1):g}", f"{run.ttft_ms:,.1f}", f"{ttft:,.1f}", f"{run.itl_ms:,.1f}",
                          f"{itl:,.1f}", f"{run.wall_s:.0f}")  # fmt: skip
        Console(width=200).print(table)
        print(f"reports and logs: {work}")
    finally:
        serve.terminate()  # SIGTERM: the server drains (nothing is running) and exits
        serve.wait(60)
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

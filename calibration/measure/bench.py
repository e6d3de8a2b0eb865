"""`llmsim bench`: measure any OpenAI-compatible server with a scenario's workload.

The workload is drawn by `simulator.workload.generate`, so the same scenario and seed send the
same requests at the same times as `llmsim run` simulates. The measured run is summarised by the
same code and written in the same results format (summary.json, requests.csv, plots/), so a
measured and a simulated run are compared by one tool. Client-side details (scheduled and actual
send times, lengths the server reported, errors) go to client.csv.

Output lengths: every request asks for `max_tokens` = its output length with `ignore_eos: true`.
Tokens are counted as the server's usage reports them, a chunk carrying several tokens counted as
all of them (loadgen.tokens_per_chunk); a server that stops early (it ignores `ignore_eos`, or
hits its context limit) returns fewer, and client.csv shows requested against received lengths.

Prompts are unique to each request and to each run (prompts.py), except the prompt blocks the
workload declares shared. Before the run the server's settings are read (server_info.py), and its
prefix-cache counters before and after it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from calibration.measure.loadgen import (
    Outcome,
    Target,
    itl_per_chunk,
    probe,
    resolve_model,
    run_requests,
)
from calibration.measure.prompts import new_run_key, text_prompt, token_prompt
from calibration.measure.server_info import ServerConfig, hit_rate, read_server_config
from simulator.common.errors import ConfigError
from simulator.common.files import result_files
from simulator.common.limits import MAX_RATE
from simulator.metrics import summarize
from simulator.metrics.results import Results
from simulator.metrics.summary import LatencyStats
from simulator.workload import Workload, WorkloadConfig, generate, load_workload


@dataclass
class BenchRun:
    """A measured run: the results (same format as a simulation) and the client-side table."""

    results: Results
    client: pd.DataFrame
    server: ServerConfig | None = None  # what the server said about itself before the run

    def save(self, out_dir: str | Path, *, force: bool = False) -> Path:
        with result_files(out_dir, force=force) as stage:
            self.results.write_into(stage)
            self.client.to_csv(stage / "client.csv", index=False, float_format="%.6f")
        return Path(out_dir)


def flag_workload(
    *,
    rate: float | None,
    num_requests: int,
    prompt_tokens: int,
    output_tokens: int,
    arrival: str = "poisson",
) -> WorkloadConfig:
    """A one-class workload from command-line flags: constant lengths, Poisson (or constant-gap)
    arrivals at `rate` per second; without a rate every request arrives at once (gaps of 1 / the
    highest rate a workload may have)."""
    process = {"process": arrival, "rate": rate} if rate else {"process": "constant", "rate": MAX_RATE}
    return load_workload(
        {
            "arrival": process,
            "num_requests": num_requests,
            "classes": [
                {
                    "name": "default",
                    "prompt_tokens": {"dist": "constant", "value": prompt_tokens},
                    "output_tokens": {"dist": "constant", "value": output_tokens},
                }
            ],
        },
        where="bench",
    )


def bench(
    target: Target,
    workload: Workload,
    *,
    seed: int = 0,
    concurrency: int | None = None,
    progress: bool = True,
    cost_per_hour: float = 0.0,
    info: dict | None = None,
    run_key: int | None = None,
) -> BenchRun:
    """Send `workload` to `target` and measure it (open loop, or closed loop with `concurrency`).
    Prompts are unique to this run (calibration/measure/prompts.py) unless `run_key` repeats an
    earlier run's; blocks the workload declares shared are shared."""
    if not workload.requests:
        raise ConfigError("the workload has no requests")
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"--concurrency must be >= 1, got {concurrency}")
    model = asyncio.run(resolve_model(target))
    fmt = asyncio.run(probe(target, model, seed))
    make = token_prompt if fmt == "tokens" else text_prompt
    run_key = new_run_key() if run_key is None else run_key
    prompts = [make(r, seed, run_key, workload.hash_block_tokens) for r in workload.requests]
    server = asyncio.run(read_server_config(target.base, target.headers))  # after the probe's lookups

    bar = tqdm(total=len(workload), desc="bench", unit="req", disable=not progress, file=sys.stderr)
    failed = 0

    def on_done(out: Outcome) -> None:
        nonlocal failed
        failed += not out.ok
        bar.update(1)
        if failed:
            bar.set_postfix(errors=failed)

    started = time.time()
    try:
        outcomes = asyncio.run(
            run_requests(target, model, workload.requests, prompts, concurrency=concurrency, on_done=on_done)
        )
    finally:
        bar.close()
    counters_after = asyncio.run(read_server_config(target.base, target.headers)).prefix_counters
    records = [o.record() for o in outcomes]
    summary = summarize(records, slos=workload.slos, cost_per_hour=cost_per_hour)
    client = pd.DataFrame([o.row() for o in outcomes])
    lag = (client["sent"] - client["scheduled"]).dropna()
    errors = Counter(o.error.split(":")[0] for o in outcomes if not o.ok)
    done = client[client["error"] == ""]
    run_info = {
        "measured": True,
        "url": target.base,
        "endpoint": target.endpoint,
        "model": model,
        "prompt_format": fmt,
        "mode": "open loop" if concurrency is None else f"closed loop, concurrency {concurrency}",
        "concurrency": concurrency,
        "seed": seed,
        "requests": len(outcomes),
        "errors": dict(errors),
        "timeout_s": target.timeout_s,
        "started_unix_s": round(started, 3),
        "max_send_lag_s": float(lag.max()) if len(lag) else None,
        "prompt_run_key": run_key,
        "short_outputs": int((done["streamed_tokens"] < done["requested_output_tokens"]).sum()),
        "multi_token_chunks": int((done["chunks"] < done["streamed_tokens"]).sum()),
        "usage_mismatches": int(
            (done["reported_output_tokens"].notna()
             & (done["reported_output_tokens"] != done["streamed_tokens"])).sum()
        ),
        "itl_per_chunk_s": LatencyStats.of(itl_per_chunk(outcomes)).to_dict(),
        "server_config": server.to_dict(),
        "server_prefix_cache_hit_rate": hit_rate(server.prefix_counters, counters_after),
        **(info or {}),
    }
    description = f"measured: {model} at {target.base} ({run_info['mode']})"
    results = Results(summary, records, None, workload.slos, description, run_info)
    return BenchRun(results, client, server)


def chunking_notes(info: dict) -> list[str]:
    """What the token counts and the chunks of a run say, in words."""
    lines = []
    if info.get("multi_token_chunks"):
        per_chunk = info.get("itl_per_chunk_s") or {}
        lines.append(
            f"note: {info['multi_token_chunks']} requests received several tokens in one streamed chunk: the "
            "server coalesces tokens into chunks (stream batching, e.g. vLLM's stream interval or an API "
            "process that falls behind the engine). Tokens are counted from the server's usage; ITL is per token "
            "(a chunk's gap over its tokens)"
            + (f"; per chunk it is p50 {per_chunk['p50'] * 1000:.2f} ms, mean {per_chunk['mean'] * 1000:.2f} ms"
               if per_chunk.get("count") else "")
        )
    if info.get("short_outputs"):
        lines.append(f"note: {info['short_outputs']} requests returned fewer tokens than asked, by the server's own "
                     "count (the server stopped early: it may ignore ignore_eos, or stop at its context limit)")
    return lines


def bench_scenario_workload(scenario, seed: int, max_requests: int | None) -> Workload:
    """The requests a scenario describes, cut to the first `max_requests`."""
    workload = generate(scenario.workload, seed=seed, max_context=scenario.max_model_len(),
                        base_dir=scenario.base_dir)
    return truncate(workload, max_requests)


def truncate(workload: Workload, max_requests: int | None) -> Workload:
    if max_requests is None or max_requests >= len(workload):
        return workload
    if max_requests < 1:
        raise ConfigError(f"--max-requests must be >= 1, got {max_requests}")
    return replace(workload, requests=workload.requests[:max_requests])


def run_cli(args) -> int:
    """`llmsim bench`: the workload from --scenario (or the workload flags), sent to --url."""
    import os

    from simulator.metrics.report import print_summary
    from simulator.scenario import load_scenario

    if args.timeout <= 0:
        raise ConfigError(f"--timeout must be positive, got {args.timeout}")
    target = Target(
        url=args.url,
        model=args.model,
        endpoint=args.endpoint,
        api_key=args.api_key or os.environ.get("OPENAI_API_KEY"),
        timeout_s=args.timeout,
        prompt_format=args.prompt_format,
    )
    info: dict = {}
    if args.scenario:
        scenario = load_scenario(args.scenario, args.set)
        seed = scenario.seed if args.seed is None else args.seed
        workload = bench_scenario_workload(scenario, seed, args.max_requests)
        name, cost = scenario.name, scenario.price_per_hour()
        info["scenario"] = scenario.name
    else:
        if args.set:
            raise ConfigError("--set needs --scenario (the workload flags describe a workload without one)")
        seed = args.seed or 0
        for flag in ("num_requests", "prompt_tokens", "output_tokens"):
            if getattr(args, flag) < 1:
                raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
        if args.rate is not None and args.rate <= 0:
            raise ConfigError(f"--rate must be positive, got {args.rate}")
        config = flag_workload(rate=args.rate, num_requests=args.num_requests,
                               prompt_tokens=args.prompt_tokens, output_tokens=args.output_tokens)
        workload = truncate(generate(config, seed=seed, max_context=1 << 30), args.max_requests)
        name, cost = "bench", 0.0
    run = bench(target, workload, seed=seed, concurrency=args.concurrency, cost_per_hour=cost, info=info)
    out = Path(args.out) if args.out else Path("results") / name / "bench"
    run.save(out, force=args.force)
    print_summary(run.results.summary, title=run.results.description)
    for line in run.server.lines():
        print(line)
    if run.server.unreadable:
        print(f"not exposed by the server: {', '.join(run.server.unreadable)}")
    rate = run.results.info["server_prefix_cache_hit_rate"]
    if rate is not None:
        print(f"server prefix cache: {rate:.1%} of prompt tokens looked up during the run were hits")
    errors = run.results.info["errors"]
    if errors:
        print(f"errors: {sum(errors.values())} requests failed ({', '.join(f'{k}: {v}' for k, v in errors.items())}); "
              "see client.csv")
    for line in chunking_notes(run.results.info):
        print(line)
    print(f"results: {out}/ (summary.json, requests.csv, client.csv, plots/*.png)")
    return 0

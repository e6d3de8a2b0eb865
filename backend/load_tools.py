"""Third-party load tools against `llmsim serve`: the commands that work offline, and their reports.

guidellm, aiperf and inference-perf each load the served model's tokenizer by path (the folder
`llmsim serve` prints), send a fixed number of streamed requests of fixed prompt and output
lengths with `ignore_eos`, and write a JSON report; `run_tool` runs one and reads back what it
measured. The commands here are the ones docs/serving.md shows.

aiperf must run without HF_HUB_OFFLINE: in offline mode it looks every tokenizer up in the Hugging
Face cache, even a local folder; a local folder needs no network either way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

TOOLS = ("guidellm", "aiperf", "inference-perf")


@dataclass(frozen=True)
class Load:
    """What every tool sends: `requests` streamed requests, `concurrency` at a time."""

    url: str  # the server, e.g. http://127.0.0.1:8000
    model: str
    tokenizer: Path  # the folder `llmsim serve` prints
    requests: int = 8
    concurrency: int = 2
    prompt_tokens: int = 32
    output_tokens: int = 16


@dataclass(frozen=True)
class ToolRun:
    """What a tool reported (medians over its requests)."""

    tool: str
    completed: int
    errors: int
    prompt_tokens: float | None
    output_tokens: float
    ttft_ms: float
    itl_ms: float
    wall_s: float


def command(tool: str, load: Load, out: Path) -> list[str]:
    """The command line of `tool` for `load`, writing its report under `out`."""
    if tool == "guidellm":
        return ["guidellm", "run", "--backend", f"kind=openai_http,target={load.url},model={load.model}",
                "--profile", f"kind=concurrent,streams={load.concurrency}",
                "--constraint", f"kind=max_requests,count={load.requests}",
                "--data", f"kind=synthetic_text,prompt_tokens={load.prompt_tokens},output_tokens={load.output_tokens}",
                "--tokenizer", f"kind=huggingface_auto,model={load.tokenizer}",
                "--output", f"kind=json,path={out / 'guidellm.json'}", "--disable-progress"]  # fmt: skip
    if tool == "aiperf":
        return ["aiperf", "profile", "--model", load.model, "--url", load.url, "--endpoint-type", "completions",
                "--streaming", "--tokenizer", str(load.tokenizer), "--request-count", str(load.requests),
                "--concurrency", str(load.concurrency), "--synthetic-input-tokens-mean", str(load.prompt_tokens),
                "--synthetic-input-tokens-stddev", "0", "--output-tokens-mean", str(load.output_tokens),
                "--extra-inputs", "ignore_eos:true", "--ui-type", "none", "--artifact-dir", str(out / "aiperf")]  # fmt: skip
    if tool == "inference-perf":
        return ["inference-perf", "-c", str(out / "inference-perf.yaml")]
    raise ValueError(f"tool: got {tool!r}; allowed: {', '.join(TOOLS)}")


def inference_perf_config(load: Load, out: Path) -> dict:
    def fixed(n: int) -> dict:
        return {"type": "fixed", "min": n, "max": n, "mean": n, "std_dev": 0, "total_count": load.requests}

    return {
        "api": {"type": "completion", "streaming": True},
        "data": {"type": "random", "input_distribution": fixed(load.prompt_tokens),
                 "output_distribution": fixed(load.output_tokens)},
        "load": {"type": "concurrent", "num_workers": 1,
                 "stages": [{"num_requests": load.requests, "concurrency_level": load.concurrency}]},
        "server": {"type": "vllm", "model_name": load.model, "base_url": load.url, "ignore_eos": True},
        "tokenizer": {"pretrained_model_name_or_path": str(load.tokenizer)},
        "storage": {"local_storage": {"path": str(out / "inference-perf")}},
    }


def installed(tool: str) -> str | None:
    return shutil.which(tool)


def run_tool(tool: str, load: Load, out: Path, timeout: float = 600) -> ToolRun:
    """Run `tool` (found on PATH) against the server and read its report."""
    out.mkdir(parents=True, exist_ok=True)
    if tool == "inference-perf":
        (out / "inference-perf.yaml").write_text(json.dumps(inference_perf_config(load, out), indent=2))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    start = time.monotonic()
    done = subprocess.run(command(tool, load, out), cwd=out, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    wall = time.monotonic() - start
    (out / f"{tool}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} exited with {done.returncode}: {(done.stdout + done.stderr)[-2000:]}")
    return _REPORTS[tool](out, wall)


def _guidellm(out: Path, wall: float) -> ToolRun:
    metrics = json.loads((out / "guidellm.json").read_text())["benchmarks"][0]["metrics"]

    def median(name):
        return metrics[name]["successful"]["median"]

    totals = metrics["request_totals"]
    return ToolRun("guidellm", totals["successful"], totals["errored"], median("prompt_token_count"),
                   median("output_token_count"), median("time_to_first_token_ms"), median("inter_token_latency_ms"),
                   wall)  # fmt: skip


def _aiperf(out: Path, wall: float) -> ToolRun:
    report = json.loads((out / "aiperf" / "profile_export_aiperf.json").read_text())
    errors = sum(e.get("count", 1) for e in report.get("error_summary") or [])
    return ToolRun("aiperf", int(report["request_count"]["avg"]), errors, report["input_sequence_length"]["p50"],
                   report["output_sequence_length"]["p50"], report["time_to_first_token"]["p50"],
                   report["inter_token_latency"]["p50"], wall)  # fmt: skip


def _inference_perf(out: Path, wall: float) -> ToolRun:
    summary = json.loads((out / "inference-perf" / "summary_lifecycle_metrics.json").read_text())
    ok, latency = summary["successes"], summary["successes"]["latency"]
    return ToolRun("inference-perf", ok["count"], summary["failures"]["count"], ok["prompt_tokens"]["mean"],
                   ok["output_len"]["median"], latency["time_to_first_token"]["median"] * 1000,
                   latency["inter_token_latency"]["median"] * 1000, wall)  # fmt: skip


_REPORTS = {"guidellm": _guidellm, "aiperf": _aiperf, "inference-perf": _inference_perf}

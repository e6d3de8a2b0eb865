"""The `llmsim` commands that measure and fit: profile, calibrate, bench, validate.

Registered through the `llmsim.commands` entry point; each command imports its module (and
torch, where it needs it) only when it runs.
"""

from __future__ import annotations


def register(sub) -> None:
    """Add this package's subcommands to the `llmsim` parser's subparsers."""
    _add_bench_parser(sub)
    _add_validate_parser(sub)
    _add_calibration_parsers(sub)


def _cmd_bench(args) -> int:
    from calibration.measure.bench import run_cli

    return run_cli(args)


def _add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure any OpenAI-compatible server with a scenario's workload")
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--scenario", default=None, help="scenario YAML whose workload is sent (else the flags below)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field, e.g. --set workload.arrival.rate=4 (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's, or 0)")
    p.add_argument("--model", default=None, help="model name sent to the server (default: the first it lists)")
    p.add_argument("--api-key", default=None, help="bearer token (default: $OPENAI_API_KEY)")
    p.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    p.add_argument("--prompt-format", choices=["auto", "tokens", "text"], default="auto",
                   help="prompts as token ids or as text (auto: token ids when the server takes them)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="closed loop: this many clients back to back, ignoring arrival times")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request before it counts as an error")
    p.add_argument("--max-requests", type=int, default=None, help="send only the first N requests")
    p.add_argument("--rate", type=float, default=None, help="without --scenario: Poisson rate (default: all at once)")
    p.add_argument("--num-requests", type=int, default=100, help="without --scenario: requests (default 100)")
    p.add_argument("--prompt-tokens", type=int, default=256, help="without --scenario: prompt length (default 256)")
    p.add_argument("--output-tokens", type=int, default=128, help="without --scenario: output length (default 128)")
    p.add_argument("--out", default=None, help="output folder (default: results/<scenario name>/bench)")
    p.add_argument("--force", action="store_true",
                   help="write into an output folder that holds files llmsim did not write (they are left alone)")
    p.set_defaults(func=_cmd_bench)


def _cmd_validate(args) -> int:
    from calibration.validation.validate import run_cli  # torch loads only for this command

    return run_cli(args)


def _add_validate_parser(sub) -> None:
    p = sub.add_parser("validate", help="run a scenario on the real engine and in the simulator; report the error")
    p.add_argument("scenario", help="scenario YAML (normally with execution: {calibration: PATH})")
    p.add_argument("--url", default=None, help="measure this running server (llmsim bench) instead of the engine")
    p.add_argument("--noise-floor", action="store_true",
                   help="measure the real side twice on the same requests; report the real-vs-real difference "
                   "beside the error and judge each statistic against max(tolerance, that difference)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field, e.g. --set workload.arrival.rate=2 (repeatable)")
    p.add_argument("--tolerance", action="append", default=[], metavar="KIND=VALUE",
                   help="largest |relative error| accepted, KIND one of mean, p50, p90, p99, throughput "
                   "(fractions; 'none' to report only) or abs_ms; default mean=0.10 p50=0.10 p90=0.15 "
                   "throughput=0.05 abs_ms=0.5")
    p.add_argument("--device", default="cpu", help="engine device: cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (match the calibration's)")
    p.add_argument("--num-blocks", type=int, default=None,
                   help="KV-cache blocks of the engine (default: the runner's budget), or of the server with --url")
    p.add_argument("--max-requests", type=int, default=None, help="only the first N requests of the workload")
    p.add_argument("--idle", choices=("sleep", "spin"), default="sleep",
                   help="how the in-process engine waits for arrivals: sleep (as a server blocks; a core woken "
                   "from sleep runs its first steps slower) or spin (busy, as the profile's back-to-back steps ran)")
    p.add_argument("--out", default=None, help="output folder (default: results/<scenario name>/validate)")
    p.add_argument("--force", action="store_true",
                   help="write into an output folder that holds files llmsim did not write (they are left alone)")
    p.set_defaults(func=_cmd_validate)


def _cmd_profile(args) -> int:
    from calibration.commands import run_profile  # torch loads only for this command

    return run_profile(args)


def _cmd_calibrate(args) -> int:
    if args.from_aiconfigurator:
        from calibration.fitting.aiconfigurator import run_cli

        return run_cli(args)
    if args.from_bench:
        from calibration.fitting.from_bench import run_cli

        return run_cli(args)
    from calibration.commands import run_calibrate

    return run_calibrate(args)


def _add_calibration_parsers(sub) -> None:
    p = sub.add_parser("profile", help="time the real engine's steps on a device; write a measurements CSV")
    p.add_argument("--model", required=True, help="catalog model name, e.g. llama-100m")
    p.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="activations and KV cache")
    p.add_argument("--quantization", default=None, choices=["int8"], help="int8 weight-only quantisation")
    p.add_argument("--out", required=True, help="measurements CSV (metadata goes to NAME.meta.json)")
    p.add_argument("--quick", action="store_true", help="a small sweep (about a minute): a smoke test")
    p.add_argument("--max-tokens", type=int, default=None, help="largest step in new tokens (default 2048)")
    p.add_argument("--max-batch", type=int, default=None, help="largest decode batch (default 128 CPU, 256 GPU)")
    p.add_argument("--kv-gb", type=float, default=None, help="KV cache GiB (default: the engine's budget)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per step shape (default 5, quick 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 is far steadier on a shared machine)")
    p.add_argument("--ops", action="store_true",
                   help="measure kernel tables instead (GEMM, attention, collectives, element-wise) at the model's "
                   "per-rank shapes for TP 1/2/4/8; --out FILE.yaml for execution: {kernel_tables: FILE}")
    p.add_argument("--hardware", default=None,
                   help="with --ops: the catalog hardware name scenarios use for the device (needed on a GPU; "
                   "default cpu-host on a CPU)")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("calibrate", help="fit a measurements CSV into a calibration file (or transfer one)")
    p.add_argument("measurements", nargs="?", default=None,
                   help="measurements CSV from llmsim profile, or a measured calibration YAML with --transfer-to")
    p.add_argument("--out", default=None, help="calibration YAML (default: next to the CSV)")
    p.add_argument("--model", default=None, help="catalog model (default: the profile's metadata)")
    p.add_argument("--hardware", default=None,
                   help="hardware name scenarios use for the device (default cpu-host for CPU profiles)")
    p.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: the profile's metadata)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds for the held-out error (default 5)")
    p.add_argument("--transfer-to", default=None, metavar="HARDWARE",
                   help="carry the fit's efficiencies to this catalog GPU (provenance: transferred)")
    p.add_argument("--target-model", default=None, help="with --transfer-to: another catalog model")
    p.add_argument("--target-dtype", default="bf16", help="with --transfer-to: dtype on the target (default bf16)")
    p.add_argument("--served-steps", nargs="+", default=None, metavar="ENGINE_STEPS_CSV",
                   help="add the engine steps of served workloads (engine_steps.csv of llmsim validate) to the "
                   "profile's points, so the fit weighs the shapes serving runs")
    p.add_argument("--from-bench", nargs="+", default=None, metavar="RESULTS_DIR",
                   help="fit `llmsim bench` results of any OpenAI-compatible server instead of a profile "
                   "(with --model and --hardware: a catalog name, cpu, a YAML file or an inline YAML mapping; "
                   "--dtype default fp16)")
    p.add_argument("--policy", default=None, choices=["vllm", "vllm-v0"],
                   help="with --from-bench: the server's scheduler (default vllm: vLLM V1, mixed steps under one "
                   "token budget; vllm-v0: a prompt is one prefill step)")
    p.add_argument("--max-num-batched-tokens", type=int, default=None,
                   help="with --from-bench: the server's token budget per step (default: vLLM V1's for the hardware)")
    p.add_argument("--from-aiconfigurator", default=None, metavar="SYSTEM",
                   help="write a kernel-table file from aiconfigurator-core's measured kernels for a catalog GPU "
                   "(a100-80gb, h100-sxm, h200, b200, l40s), with --model, --backend and --out; needs the "
                   "aiconfigurator extra")
    p.add_argument("--backend", default="vllm", choices=["vllm", "sglang", "trtllm"],
                   help="with --from-aiconfigurator: the serving engine whose kernels were measured (default vllm)")
    p.add_argument("--version", default=None,
                   help="with --from-aiconfigurator: the engine version (default: the one aiconfigurator maintains)")
    p.add_argument("--aiconfigurator-root", default=None, metavar="DIR",
                   help="with --from-aiconfigurator: a systems folder of aiconfigurator's layout instead of the "
                   "installed package's")
    p.set_defaults(func=_cmd_calibrate)

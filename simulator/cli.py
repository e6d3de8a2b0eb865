"""The `llmsim` command line: one subcommand per question a user asks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from simulator.errors import ConfigError


def _cmd_run(args) -> int:
    from simulator.report import print_summary
    from simulator.scenario import load_scenario
    from simulator.simulation import run

    scenario = load_scenario(args.scenario, args.set)
    results = run(scenario, seed=args.seed)
    out = Path(args.out) if args.out else Path("results") / scenario.name
    results.save(out)
    print_summary(results.summary, title=f"{scenario.name}: {results.description}")
    print(f"results: {out}/ (summary.json, requests.csv, timeseries.csv, plots/*.png)")
    _print_scheduling(results.info)
    _print_extrapolated(results.info)
    from simulator.kernel_model.provenance import format_step_sources

    if (line := format_step_sources(results.info)) is not None:
        print(line)
    if "autoscaling" in results.info:
        _print_autoscaling(scenario, results, args.compare_fixed)
    return 0


def _print_extrapolated(info: dict) -> None:
    """Say how many step times came from outside the calibration's measured range."""
    extrapolated, steps = info.get("extrapolated_steps", 0), info.get("steps", 0)
    if extrapolated:
        execution = info.get("execution", {})
        where = execution.get("calibration") or execution.get("kernel_tables") or "the calibration"
        print(f"extrapolated: {extrapolated:,} of {steps:,} steps ({extrapolated / max(steps, 1):.1%}) lie outside "
              f"the range measured for {where}; their times are extrapolations")


def _print_scheduling(info: dict) -> None:
    """One line each for prefix caching, swapping and speculative decoding, when used."""
    if "prefix_cache_hit_rate" in info:
        note = f" ({info['prefix_cache_note']})" if "prefix_cache_note" in info else ""
        print(f"prefix cache: {info['prefix_cache_hit_rate']:.1%} of prompt tokens found cached{note}")
    if "swap_outs" in info:
        print(f"swap: {info['swap_outs']:,} preemptions swapped KV to host memory")
    spec = info.get("speculative")
    if spec and spec["verify_steps"]:
        print(f"speculative decoding: {spec['acceptance']:.1%} of draft tokens accepted, "
              f"{spec['tokens_per_verify_step']:.2f} tokens per sequence per verify step")


def _print_autoscaling(scenario, results, compare: bool) -> None:
    scaling = results.info["autoscaling"]
    print(f"autoscaling: {scaling['mean_replicas']:.2f} replicas on average, peak {scaling['peak_replicas']}, "
          f"{scaling['replica_hours']:.2f} replica-hours, ${scaling['usd_per_day']:,.2f} per day "
          "(replicas over time: replicas.csv, plots/replicas.png)")
    if compare:
        from simulator.scaling_compare import autoscaled_vs_fixed

        table, _ = autoscaled_vs_fixed(scenario, seed=results.info["seed"])
        print(table.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))


def _cmd_sweep(args) -> int:
    from simulator.capacity_report import print_sweep
    from simulator.sweep import run_sweep

    result = run_sweep(args.scenario, args.set, seeds=args.seeds, workers=args.workers, ray=args.ray,
                       max_rate=True if args.max_rate else None)
    out = Path(args.out) if args.out else Path("results") / result.name / "sweep"
    result.save(out)
    print_sweep(result)
    print(f"results: {out}/ (sweep.csv, runs.csv, load_latency.png{', max_rate.json' if result.max_rate else ''})")
    return 0


def _cmd_plan(args) -> int:
    from simulator.capacity_report import print_plan
    from simulator.plan import run_plan

    result = run_plan(args.scenario, overrides=args.set, seeds=args.seeds, workers=args.workers, ray=args.ray)
    out = Path(args.out) if args.out else Path("results") / result.name / "plan"
    result.save(out)
    print_plan(result)
    print(f"results: {out}/ (candidates.csv, plan.json, pareto.png)")
    return 0 if result.feasible else 1


def _add_parallel_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: one per core; 1 runs in this process)")
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help="run the simulations as tasks on a Ray cluster instead of local processes")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmsim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="simulate a scenario and report latency, throughput and cost")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    p.add_argument("--out", default=None, help="output folder (default: results/<scenario name>)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a scenario field, e.g. --set deployment.weight_dtype=int8 (repeatable)",
    )
    p.add_argument("--compare-fixed", action="store_true",
                   help="with autoscaling: also run a fixed deployment sized for the peak and compare")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("sweep", help="load-latency curves over any scenario field; highest rate meeting SLOs")
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUES",
        help="a swept field as start:stop:step or a comma list (several form a grid), "
        "or a plain override; e.g. --set workload.arrival.rate=1:40:2",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds per point (default 3)")
    p.add_argument("--max-rate", action="store_true",
                   help="find the highest arrival rate meeting the SLOs (automatic when the rate is swept "
                   "and the scenario has SLOs)")
    p.add_argument("--out", default=None, help="output folder (default: results/<scenario name>/sweep)")
    _add_parallel_options(p)
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("plan", help="the cheapest deployment meeting the SLOs of the scenario's plan: section")
    p.add_argument("scenario", help="scenario YAML file with a plan: section")
    p.add_argument("--seeds", type=int, default=None, help="seeds per candidate (default: plan.seeds, 3)")
    p.add_argument("--out", default=None, help="output folder (default: results/<scenario name>/plan)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field, e.g. --set plan.n_plus_one=true (repeatable)")
    _add_parallel_options(p)
    p.set_defaults(func=_cmd_plan)

    _add_bench_parser(sub)
    _add_validate_parser(sub)
    _add_compare_parser(sub)
    _add_serve_parser(sub)
    _add_calibration_parsers(sub)
    return parser


def _cmd_bench(args) -> int:
    from simulator.bench import run_cli

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
    p.set_defaults(func=_cmd_bench)


def _cmd_validate(args) -> int:
    from calibration.validate import run_cli  # torch loads only for this command

    return run_cli(args)


def _add_validate_parser(sub) -> None:
    p = sub.add_parser("validate", help="run a scenario on the real engine and in the simulator; report the error")
    p.add_argument("scenario", help="scenario YAML (normally with execution: {calibration: PATH})")
    p.add_argument("--url", default=None, help="measure this running server (llmsim bench) instead of the engine")
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
    p.add_argument("--out", default=None, help="output folder (default: results/<scenario name>/validate)")
    p.set_defaults(func=_cmd_validate)


def _cmd_compare(args) -> int:
    from simulator.compare import compare, parse_variant, policy_variant
    from simulator.compare_report import print_comparison
    from simulator.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.set)
    variants = [policy_variant(v) if kind == "policy" else parse_variant(v) for kind, v in args.variants]
    comparison = compare(scenario, variants, args.replications, seed=args.seed, workers=args.workers,
                         ray=args.ray, progress=True)
    out = Path(args.out) if args.out else Path("results") / scenario.name / "compare"
    comparison.save(out)
    print_comparison(comparison)
    print(f"results: {out}/ (comparison.csv, comparison.json, runs.csv, plots/*.png)")
    return 0


class _VariantAction(argparse.Action):
    """--policy and --variant append to one list, so the first one given is the baseline."""

    def __call__(self, parser, namespace, values, option_string=None):
        kind = "policy" if option_string == "--policy" else "variant"
        # a new list each time: appending to the default would leak into later parses
        setattr(namespace, self.dest, [*getattr(namespace, self.dest), (kind, values)])


_COMPARE_HELP = """\
Simulate each variant of a scenario with the same seeds (replication r uses seed BASE + r for
every variant, so all variants serve identical arrivals and lengths) and report, for each
metric, every variant's mean and its mean paired difference from the first variant (the
baseline) with a 95% t confidence interval.

Variants, in the order given (the first is the baseline):
  --policy NAME            a batching policy (scheduler.policy=NAME) or a router (router=NAME)
  --variant NAME:K=V,K=V   any scenario overrides, as --set takes them; NAME alone (or NAME:)
                           is the scenario as written

examples:
  llmsim compare scenarios/chatbot_a10g.yaml --policy vllm --policy static --replications 5
  llmsim compare S.yaml --variant colocated: \\
      --variant disagg:disaggregation.prefill.replicas=1,disaggregation.decode.replicas=1
"""


def _add_compare_parser(sub) -> None:
    p = sub.add_parser("compare", help="paired comparison of policies or variants, with confidence intervals",
                       description=_COMPARE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", help="scenario YAML file")
    p.add_argument("--policy", dest="variants", action=_VariantAction, default=[], metavar="NAME",
                   help="a variant that sets scheduler.policy or router to NAME (repeatable)")
    p.add_argument("--variant", dest="variants", action=_VariantAction, metavar="NAME:KEY=VALUE,...",
                   help="a variant with any scenario overrides (repeatable)")
    p.add_argument("--replications", type=int, default=5, help="paired replications, one seed each (default 5)")
    p.add_argument("--seed", type=int, default=None, help="seed of the first replication (default: the scenario's)")
    p.add_argument("--out", default=None, help="output folder (default: results/<scenario name>/compare)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field for every variant, e.g. --set workload.arrival.rate=4")
    _add_parallel_options(p)
    p.set_defaults(func=_cmd_compare)


def _cmd_serve(args) -> int:
    from backend.server import run_cli  # torch and the web stack load only for this command

    return run_cli(args)


def _add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve the engine as an OpenAI-compatible HTTP server")
    p.add_argument("--model", default=None, help="catalog model name (random weights), e.g. llama-100m; "
                   "with --checkpoint, the name the server reports (default: the folder's name)")
    p.add_argument("--checkpoint", default=None, metavar="DIR", help="Hugging Face safetensors folder to load")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 endpoints")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one), cpu, cuda or cuda:N")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="weights and activations")
    p.add_argument("--quantization", default=None, choices=["int8"], help="int8 weight-only linear layers")
    p.add_argument("--max-num-seqs", type=int, default=256, help="most sequences in one step (default 256)")
    p.add_argument("--max-waiting", type=int, default=None,
                   help="refuse requests (HTTP 429) while this many are waiting (default: unbounded)")
    p.add_argument("--policy", default="vllm", help="batching policy, a scheduler policy name (default vllm)")
    p.add_argument("--max-model-len", type=int, default=None, help="longest prompt + output (default: the model's)")
    p.add_argument("--kv-cache-gb", type=float, default=None,
                   help="KV-cache memory in GiB (default: 1 on CPU, 80%% of free memory on a GPU)")
    p.add_argument("--enable-prefix-caching", action="store_true", help="share KV blocks of equal prompt prefixes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=_cmd_serve)


def _cmd_profile(args) -> int:
    from calibration.commands import run_profile  # torch loads only for this command

    return run_profile(args)


def _cmd_calibrate(args) -> int:
    if args.from_aiconfigurator:
        from calibration.aiconfigurator import run_cli

        return run_cli(args)
    if args.from_bench:
        from calibration.from_bench import run_cli

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
                   "(with --model and --hardware; --dtype default fp16)")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"llmsim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llmsim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

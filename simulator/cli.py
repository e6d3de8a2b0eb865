"""The `llmsim` command line: one subcommand per question a user asks.

The simulator's own commands (run, sweep, plan, compare) are defined here. Packages above the
simulator add theirs through the `llmsim.commands` entry points (a function that adds its
subparsers): calibration (profile, calibrate, bench, validate) and the engine (serve).
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from pathlib import Path

from simulator.common.errors import ConfigError
from simulator.execution.kernels.provenance import format_step_sources

COMMANDS_GROUP = "llmsim.commands"


def _cmd_run(args) -> int:
    from simulator.metrics.report import print_summary, request_changes
    from simulator.scenario import load_scenario, run

    scenario = load_scenario(args.scenario, args.set)
    results = run(scenario, seed=args.seed)
    out = Path(args.out) if args.out else Path("results") / scenario.name
    results.save(out, force=args.force)
    print_summary(results.summary, title=f"{scenario.name}: {results.description}")
    print(f"results: {out}/ (summary.json, requests.csv, timeseries.csv, plots/*.png)")
    for line in request_changes(results.info):
        print(line)
    _print_scheduling(results.info)
    _print_extrapolated(results.info)
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
        from simulator.studies.scaling_compare import autoscaled_vs_fixed

        table, _ = autoscaled_vs_fixed(scenario, seed=results.info["seed"])
        print(table.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))


def _cmd_sweep(args) -> int:
    from simulator.studies.capacity_report import print_sweep
    from simulator.studies.sweep import run_sweep

    result = run_sweep(args.scenario, args.set, seeds=args.seeds, workers=args.workers, ray=args.ray,
                       max_rate=True if args.max_rate else None)
    out = Path(args.out) if args.out else Path("results") / result.name / "sweep"
    result.save(out, force=args.force)
    print_sweep(result)
    print(f"results: {out}/ (sweep.csv, runs.csv, load_latency.png{', max_rate.json' if result.max_rate else ''})")
    return 0


def _cmd_plan(args) -> int:
    from simulator.studies.capacity_report import print_plan
    from simulator.studies.plan import run_plan

    result = run_plan(args.scenario, overrides=args.set, seeds=args.seeds, workers=args.workers, ray=args.ray)
    out = Path(args.out) if args.out else Path("results") / result.name / "plan"
    result.save(out, force=args.force)
    print_plan(result)
    print(f"results: {out}/ (candidates.csv, plan.json, pareto.png)")
    return 0 if result.feasible else 1


def _add_result_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="write into an output folder that holds files llmsim did not write (they are left alone)")
    p.add_argument("--strict", action="store_true",
                   help="a request clipped to the context or rejected is an error (as run.strict: true)")


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
    _add_result_options(p)
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
    _add_result_options(p)
    _add_parallel_options(p)
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("plan", help="the cheapest deployment meeting the SLOs of the scenario's plan: section")
    p.add_argument("scenario", help="scenario YAML file with a plan: section")
    p.add_argument("--seeds", type=int, default=None, help="seeds per candidate (default: plan.seeds, 3)")
    p.add_argument("--out", default=None, help="output folder (default: results/<scenario name>/plan)")
    _add_result_options(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field, e.g. --set plan.n_plus_one=true (repeatable)")
    _add_parallel_options(p)
    p.set_defaults(func=_cmd_plan)

    _add_compare_parser(sub)
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        entry.load()(sub)  # commands of the engine and of calibration, which the simulator does not import
    return parser


def _cmd_compare(args) -> int:
    from simulator.scenario import load_scenario
    from simulator.studies.compare import compare, parse_variant, policy_variant
    from simulator.studies.compare_report import print_comparison, save_comparison

    scenario = load_scenario(args.scenario, args.set)
    variants = [policy_variant(v) if kind == "policy" else parse_variant(v) for kind, v in args.variants]
    comparison = compare(scenario, variants, args.replications, seed=args.seed, workers=args.workers,
                         ray=args.ray, progress=True)
    out = Path(args.out) if args.out else Path("results") / scenario.name / "compare"
    save_comparison(comparison, out, force=args.force)
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
    _add_result_options(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field for every variant, e.g. --set workload.arrival.rate=4")
    _add_parallel_options(p)
    p.set_defaults(func=_cmd_compare)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "strict", False):
        args.set = [*args.set, "run.strict=true"]
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

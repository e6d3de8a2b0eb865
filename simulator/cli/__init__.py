"""The `llmsim` command line: one subcommand per question a user asks.

The simulator's own commands (run, sweep, plan, compare, schema) are defined here (the handlers
in run_command.py and study_commands.py, what scripts need in scripting.py). Packages above the
simulator add theirs through the `llmsim.commands` entry points (a function that adds its
subparsers): calibration (profile, calibrate, bench, validate) and the engine (serve).
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from simulator.cli.run_command import cmd_run
from simulator.cli.schema_command import add_schema_parser
from simulator.cli.scripting import add_scripting_options, llmsim_version
from simulator.cli.study_commands import cmd_compare, cmd_plan, cmd_sweep
from simulator.common.errors import ConfigError

COMMANDS_GROUP = "llmsim.commands"


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
    parser = argparse.ArgumentParser(prog="llmsim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"llmsim {llmsim_version()}")
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
    add_scripting_options(p)
    p.set_defaults(func=cmd_run)

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
    add_scripting_options(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("plan", help="the cheapest deployment meeting the SLOs of the scenario's plan: section")
    p.add_argument("scenario", help="scenario YAML file with a plan: section")
    p.add_argument("--seeds", type=int, default=None, help="seeds per candidate (default: plan.seeds, 3)")
    p.add_argument("--out", default=None, help="output folder (default: results/<scenario name>/plan)")
    _add_result_options(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario field, e.g. --set plan.n_plus_one=true (repeatable)")
    _add_parallel_options(p)
    add_scripting_options(p)
    p.set_defaults(func=cmd_plan)

    _add_compare_parser(sub)
    add_schema_parser(sub)
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        entry.load()(sub)  # commands of the engine and of calibration, which the simulator does not import
    return parser


class _VariantAction(argparse.Action):
    """--policy and --variant append to one list, so the first one given is the baseline."""

    def __call__(self, parser, namespace, values, option_string=None):
        kind = "policy" if option_string == "--policy" else "variant"
        # a new list each time: appending to the default would leak into later parses
        setattr(namespace, self.dest, [*getattr(namespace, self.dest), (kind, values)])


_COMPARE_HELP = """\
Simulate each variant of a scenario with the same seeds (replication r uses seed BASE + r for
every variant, so all variants serve identical arrivals and lengths) and report, for each
metric, every variant's mean and its paired difference from the first variant (the baseline)
with a 95% paired-bootstrap confidence interval, the ratio to the baseline with its interval,
and p-values adjusted across the metrics compared (Holm).

Variants, in the order given (the first is the baseline):
  --policy NAME            a batching policy (scheduler.policy=NAME), a router (router=NAME),
                           or your own policy class as module:Class (docs/policies.md)
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
    add_scripting_options(p, fail_on=("saturated",))
    p.set_defaults(func=cmd_compare)


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



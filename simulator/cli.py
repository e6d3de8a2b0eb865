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
    return 0


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
    p.set_defaults(func=_cmd_run)
    return parser


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

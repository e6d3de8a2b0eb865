"""`llmsim schema`: the scenario JSON Schema for editors, or the Markdown reference."""

from __future__ import annotations

import sys


def cmd_schema(args) -> int:
    from simulator.scenario.reference import json_schema_text, markdown_reference

    sys.stdout.write(markdown_reference() if args.markdown else json_schema_text())
    return 0


def add_schema_parser(sub) -> None:
    p = sub.add_parser("schema", help="print the scenario JSON Schema (for editors) or, with --markdown, "
                       "the scenario reference")
    p.add_argument("--markdown", action="store_true", help="the reference as Markdown (docs/scenario_reference.md)")
    p.set_defaults(func=cmd_schema)

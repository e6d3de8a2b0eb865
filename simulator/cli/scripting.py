"""What scripts need from the command line: exit codes on a verdict (`--fail-on`), one JSON
document on stdout (`--json`, the human output then goes to stderr), results folders that
`--set` variants do not share, `--format parquet`, and `--version`.

Exit codes: 0 success; 1 a verdict asked for with `--fail-on` (saturated, SLOs missed) or a plan
with no feasible answer; 2 a user error (bad scenario, bad option); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import sys
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

FAIL_ON = ("saturated", "slo", "unsteady")
EXIT_VERDICT = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+-]+")
MAX_SLUG = 80


def llmsim_version() -> str:
    try:
        return version("llmsim")
    except PackageNotFoundError:
        return "unknown (not installed)"


def add_scripting_options(p: argparse.ArgumentParser, fail_on: tuple[str, ...] = FAIL_ON) -> None:
    p.add_argument("--fail-on", action="append", default=[], choices=fail_on, metavar="|".join(fail_on),
                   help="exit with status 1 when the result is saturated, misses its SLOs, or did not reach "
                   "steady state (repeatable)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document with the results to stdout (tables go to stderr)")
    p.add_argument("--name", default=None,
                   help="results folder name under results/ (default: the scenario's name, plus the --set "
                   "overrides, so variants never overwrite each other)")
    p.add_argument("--format", action="append", default=[], choices=("csv", "parquet"),
                   help="table formats besides CSV (parquet needs pyarrow: pip install 'llmsim[parquet]')")


def variant_slug(overrides: list[str]) -> str:
    """A folder-name suffix naming `--set` overrides: deployment.replicas=4 -> replicas=4."""
    parts = []
    for item in overrides:
        key, _, value = item.partition("=")
        parts.append(f"{key.strip().split('.')[-1]}={value.strip()}")
    slug = _UNSAFE.sub("_", "+".join(parts)).strip("._+-")
    if len(slug) > MAX_SLUG:
        digest = hashlib.sha1("\n".join(overrides).encode()).hexdigest()[:8]
        slug = slug[: MAX_SLUG - 9].rstrip("._+-") + "-" + digest
    return slug


def results_folder(args, scenario_name: str, overrides: list[str], sub: str | None = None) -> Path:
    """--out as given; else results/<--name or scenario name[+overrides]>[/sub]."""
    if args.out:
        return Path(args.out)
    name = args.name or (scenario_name + (f"+{variant_slug(overrides)}" if overrides else ""))
    folder = Path("results") / name
    return folder / sub if sub else folder


def formats(args) -> tuple[str, ...]:
    from simulator.metrics.tables import check_formats

    return check_formats(getattr(args, "format", []) or [])


@contextlib.contextmanager
def human_output(args) -> Iterator[None]:
    """With --json, everything meant for people goes to stderr; stdout keeps only the document."""
    if getattr(args, "json", False):
        with contextlib.redirect_stdout(sys.stderr):
            yield
    else:
        yield


def emit_json(args, document: dict[str, Any]) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(document, indent=2, allow_nan=False, default=_plain) + "\n")
        sys.stdout.flush()


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return str(value)


def verdict_code(args, failures: dict[str, str]) -> int:
    """1 when a `--fail-on` condition holds (each one named on stderr), else 0."""
    hit = [(kind, failures[kind]) for kind in dict.fromkeys(args.fail_on) if failures.get(kind)]
    for kind, why in hit:
        print(f"llmsim: --fail-on {kind}: {why}", file=sys.stderr)
    return EXIT_VERDICT if hit else 0

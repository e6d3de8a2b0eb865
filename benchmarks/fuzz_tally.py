"""Count what malformed input does: for each fuzzed reader (the properties of tests/test_fuzz.py),
the examples tried, how many read, how many were refused with a ConfigError (exit code 2) and how
many raised anything else (a traceback; must be 0). Every refused scenario and YAML file is then
given to `llmsim run`, counting exit codes, messages and tracebacks on stderr.

    .venv/bin/python benchmarks/fuzz_tally.py            # 250 examples per property
    .venv/bin/python benchmarks/fuzz_tally.py --examples 1000
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from collections import Counter
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import fuzz_inputs as fz

from simulator.cli import main


def tally(strategy, check, examples: int) -> tuple[Counter, list]:
    counts: Counter = Counter()
    refused: list = []
    first_traceback: list[str] = []

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def run(example):
        args = example if isinstance(example, tuple) else (example,)
        kind, detail = fz.outcome(check, *args)
        counts[kind] += 1
        if kind == "config_error":
            refused.append(example)
        elif kind == "traceback" and not first_traceback:
            first_traceback.append(detail)

    run()
    if first_traceback:
        print(first_traceback[0], file=sys.stderr)
    return counts, refused


def cli_runs(files: list[Path]) -> Counter:
    counts: Counter = Counter()
    out = fz.WORK / "cli-out"
    for path in files:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(["run", str(path), "--out", str(out)])
        except Exception:  # noqa: BLE001 - it would have been a traceback
            counts["traceback"] += 1
            continue
        text = err.getvalue()
        counts[f"exit {code}"] += 1
        counts["tracebacks on stderr"] += "Traceback" in text
        counts["one message"] += text.count("llmsim: error:") == 1
    return counts


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=250)
    n = parser.parse_args().examples
    properties = {
        "scenario mutations": (fz.mutated_scenarios(), fz.check_scenario),
        "YAML files": (fz.yaml_documents(), fz.check_yaml),
        "CSV traces (csv, azure, burstgpt)": (fz.csv_traces(), fz.check_trace),
        "JSONL traces (mooncake)": (fz.mooncake_traces(), lambda data: fz.check_trace("mooncake", data)),
    }
    print(f"{'property':36} {'examples':>8} {'read':>6} {'exit 2':>7} {'tracebacks':>10}")
    refused_files: list[Path] = []
    tracebacks = 0
    for name, (strategy, check) in properties.items():
        counts, refused = tally(strategy, check, n)
        tracebacks += counts["traceback"]
        print(
            f"{name:36} {sum(counts.values()):8} {counts['ok']:6} {counts['config_error']:7} {counts['traceback']:10}"
        )
        if name == "scenario mutations":
            for i, data in enumerate(refused):
                refused_files.append(fz.write_file(f"refused-{i}.yaml", yaml.safe_dump(data).encode()))
        elif name == "YAML files":
            refused_files += [fz.write_file(f"refused-{i}.yaml", data) for i, data in enumerate(refused)]
    cli = cli_runs(refused_files)
    print(f"llmsim run on the {len(refused_files)} refused scenario and YAML files: "
          f"{cli['exit 2']} exit 2, {cli['one message']} with one 'llmsim: error:' message, "
          f"{cli['tracebacks on stderr'] + cli['traceback']} tracebacks, "
          f"{len(refused_files) - cli['exit 2']} other exits")  # fmt: skip
    tracebacks += cli["tracebacks on stderr"] + cli["traceback"]
    return 1 if tracebacks or cli["exit 2"] != len(refused_files) else 0


if __name__ == "__main__":
    sys.exit(main_())

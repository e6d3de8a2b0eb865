"""Same numbers before and after a change that must not change behaviour (a refactor, a speed-up).

Runs every shipped scenario (scenarios/*.yaml and scenarios/research/*.yaml) with its own seed
through the public API and writes each one's summary.json and requests.csv; `compare` then
requires the two folders to hold byte-identical files.

    .venv/bin/python benchmarks/same_results.py write /tmp/before      # on the old code
    .venv/bin/python benchmarks/same_results.py write /tmp/after       # on the new code
    .venv/bin/python benchmarks/same_results.py compare /tmp/before /tmp/after
    (--only 'azure*' on both restricts them to matching scenario files)
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ("summary.json", "requests.csv")


def shipped_scenarios(only: str = "*") -> list[Path]:
    every = sorted((ROOT / "scenarios").glob("*.yaml")) + sorted((ROOT / "scenarios" / "research").glob("*.yaml"))
    return [p for p in every if p.match(only if only.endswith(".yaml") else only + ".yaml")]


def write(out: Path, only: str = "*") -> None:
    import simulator

    for path in shipped_scenarios(only):
        start = time.perf_counter()
        results = simulator.run(simulator.load_scenario(path))
        folder = results.save(out / path.relative_to(ROOT / "scenarios").with_suffix(""))
        print(f"{path.relative_to(ROOT)}: {results.summary.completed} requests, "
              f"{time.perf_counter() - start:.1f} s -> {folder}")


def compare(before: Path, after: Path, only: str = "*") -> int:
    names = [p.relative_to(ROOT / "scenarios").with_suffix("") for p in shipped_scenarios(only)]
    differ = 0
    for name in names:
        for file in FILES:
            a, b = before / name / file, after / name / file
            if not (a.is_file() and b.is_file()):
                print(f"MISSING {name}/{file}: {'before' if not a.is_file() else 'after'}")
                differ += 1
            elif not filecmp.cmp(a, b, shallow=False):
                print(f"DIFFERENT {name}/{file}")
                differ += 1
    print(f"{len(names)} scenarios, {len(names) * len(FILES)} files: "
          f"{'all identical' if not differ else f'{differ} differ'}")
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("out", type=Path)
    p = sub.add_parser("compare")
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    for cmd in (w, p):
        cmd.add_argument("--only", default="*", help="scenario file name pattern (default: every one)")
    args = parser.parse_args()
    if args.command == "write":
        write(args.out, args.only)
        return 0
    return compare(args.before, args.after, args.only)


if __name__ == "__main__":
    sys.exit(main())

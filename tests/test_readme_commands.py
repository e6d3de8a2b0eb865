"""The README's commands work as written from a fresh clone after `make demo`: every llmsim
command is spelled with its `.venv/bin/` path, parses with the real command line, names files that
exist, and writes nowhere near a shipped file."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from simulator.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# Options whose value is a file or folder the command reads (must exist in a fresh clone) or writes.
READS = {"--scenario", "--calibration", "--served-steps"}
WRITES = {"--out"}
INPUT_SUFFIXES = (".yaml", ".yml", ".csv", ".jsonl", ".json")


def readme_commands() -> list[str]:
    """Every shell line of the README's bash blocks that runs llmsim (continuations joined)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("  #")[0].strip()
            if re.match(r"(\.venv/bin/)?llmsim\b", line):
                commands.append(line)
    return commands


def tracked_files() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


COMMANDS = readme_commands()


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) >= 15
    assert any(c.split()[1] == "plan" for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_runs_from_a_fresh_clone(command):
    argv = shlex.split(command)
    assert argv[0] == ".venv/bin/llmsim", f"say where llmsim is after `make demo`: {command}"
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"the command line refuses {command!r} (exit {exc.code})")
    tracked = tracked_files()
    reads = [a for a in argv[2:] if not a.startswith("-") and a.endswith(INPUT_SUFFIXES)]
    reads += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in READS]
    for path in reads:
        if "results/" in path or path.startswith(("runs/", "my-", "S.")):
            continue  # written by an earlier README command, or a placeholder the text explains
        assert (ROOT / path).exists(), f"{command!r} reads {path}, which a fresh clone does not have"
    for i, arg in enumerate(argv[:-1]):
        if arg in WRITES:
            out = argv[i + 1]
            assert out not in tracked, f"{command!r} overwrites the shipped file {out}"
            assert not out.startswith(("calibration/", "scenarios/", "simulator/")), (
                f"{command!r} writes into the source tree ({out}); write under results/"
            )

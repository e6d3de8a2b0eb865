"""Reading a scenario: a YAML file (or a mapping), `--set` overrides, validation into a `Scenario`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from simulator.common.errors import ConfigError
from simulator.common.files import read_yaml_mapping
from simulator.common.schema_errors import format_validation_error
from simulator.common.yaml_reader import parse_yaml
from simulator.scenario.schema import Scenario


def parse_scenario(data: Any, source: str = "scenario", base_dir: Path | None = None) -> Scenario:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a scenario must be a mapping of keys to values, got {type(data).__name__}")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, Scenario, source)) from None
    scenario.base_dir = base_dir
    scenario.check_specs()
    return scenario


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `dotted.key=value` overrides (values parsed as YAML) to a scenario mapping."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. deployment.replicas=4")
        value = parse_yaml(raw, f"--set {item[:80]!r}")
        parts = key.strip().split(".")
        node = data
        for depth, part in enumerate(parts):
            where = ".".join(parts[:depth]) or "the scenario"
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(
                        f"--set {item!r}: {where} is a list of {len(node)} entries; "
                        f"{part!r} must be an index from 0 to {len(node) - 1}"
                    )
                index = int(part)
                if last:
                    node[index] = value
                else:
                    node = node[index]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {where} holds a value, not a section")
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return data


def read_scenario_data(path: str | Path) -> tuple[dict, Path]:
    """The raw mapping of a scenario file (name defaulted to the file's stem) and its folder."""
    path = Path(path)
    data = read_yaml_mapping(path, "scenario")
    # the file name stands in for a missing name, made a plain one (a name given is validated)
    data.setdefault("name", re.sub(r"[^A-Za-z0-9_+.-]+", "_", path.stem).strip("._+-") or "scenario")
    return data, path.resolve().parent


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    data, base_dir = read_scenario_data(path)
    apply_overrides(data, overrides or [])
    return parse_scenario(data, source=str(path), base_dir=base_dir)

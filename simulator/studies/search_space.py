"""Sweep axes from `--set KEY=VALUES`: `start:stop:step` ranges or comma lists; several form a grid.

    workload.arrival.rate=1:40:2       -> 1, 3, 5, ..., 39 (stop included when a step lands on it)
    deployment.replicas=1,2,4          -> 1, 2, 4
    scheduler.policy=vllm,static       -> 'vllm', 'static'
    deployment.weight_dtype=fp8        -> a plain override, the same at every point

Values are parsed as YAML, so numbers stay numbers. Nothing here touches a scenario: points are
lists of `KEY=VALUE` overrides that `simulator.scenario.apply_overrides` applies to a fresh copy.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

from simulator.common.errors import ConfigError

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE = re.compile(rf"^\s*({_NUMBER})\s*:\s*({_NUMBER})\s*:\s*({_NUMBER})\s*$")
MAX_POINTS = 10_000


@dataclass(frozen=True)
class Axis:
    key: str
    values: tuple[Any, ...]


def _value(item: str, raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value {raw!r} is not valid YAML: {exc}") from None


def parse_range(item: str, start: str, stop: str, step: str) -> tuple[Any, ...]:
    a, b, s = float(start), float(stop), float(step)
    if s <= 0 or b < a:
        raise ConfigError(f"--set {item!r}: a range start:stop:step needs step > 0 and stop >= start")
    count = math.floor((b - a) / s + 1e-9) + 1
    if count > MAX_POINTS:
        raise ConfigError(f"--set {item!r}: {count} values, more than the {MAX_POINTS} allowed")
    integral = all(re.fullmatch(r"[-+]?\d+", x.strip()) for x in (start, stop, step))
    values = [a + i * s for i in range(count)]
    return tuple(round(v) for v in values) if integral else tuple(round(v, 12) for v in values)


def parse_set(item: str) -> tuple[str, tuple[Any, ...]]:
    """KEY=VALUES -> (key, values); one value for a plain override."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. workload.arrival.rate=1:40:2")
    key, raw = key.strip(), raw.strip()
    match = _RANGE.match(raw)
    if match:
        return key, parse_range(item, *match.groups())
    if "," in raw and not raw.startswith(("[", "{", '"', "'")):
        parts = [p.strip() for p in raw.split(",")]
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty value in the comma list")
        return key, tuple(_value(item, p) for p in parts)
    return key, (_value(item, raw),)


def parse_axes(items: list[str]) -> list[Axis]:
    axes: dict[str, Axis] = {}
    for item in items:
        key, values = parse_set(item)
        axes[key] = Axis(key, values)  # a later --set of the same key wins, as for `run`
    return list(axes.values())


def grid(axes: list[Axis]) -> list[dict[str, Any]]:
    """Every combination, the first axis varying slowest; each point maps key -> value."""
    points = [dict(zip([a.key for a in axes], combo)) for combo in itertools.product(*(a.values for a in axes))]
    if len(points) > MAX_POINTS:
        raise ConfigError(f"the sweep has {len(points)} points, more than the {MAX_POINTS} allowed")
    return points


def set_path(data: dict, key: str, value: Any) -> dict:
    """A copy of the scenario mapping `data` with the dotted `key` set to `value`."""
    out = copy.deepcopy(data)
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} holds a value, not a section")
        node = child
    node[parts[-1]] = copy.deepcopy(value)
    return out


def get_path(data: dict, key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node

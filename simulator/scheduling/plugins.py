"""Batching policies from outside llmsim: installed packages and explicitly named classes.

A policy is a subclass of `simulator.scheduling.Scheduler` with a `name` and a `schedule(now)`
method (docs/policies.md states the contract). Three ways to name one, tried in this order:

1. a built-in name (`vllm`, `sarathi`, ...);
2. a name an installed package registers under the `llmsim.policies` entry-point group
   (`[project.entry-points."llmsim.policies"] mine = "my_pkg.policies:MyScheduler"`);
3. `module:Class` itself, e.g. `scheduler.policy: my_policies:FairShare` or
   `--policy my_policies:FairShare`.

Scenarios otherwise never execute code; the last two import user code, and only code named this
way: a module importable from the Python path (installed, or on PYTHONPATH), never a file path.
"""

from __future__ import annotations

import importlib
import re
from functools import cache
from importlib.metadata import entry_points

from simulator.common.errors import ConfigError

ENTRY_POINT_GROUP = "llmsim.policies"
_QUALIFIED = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_IMPORT_NOTE = ("llmsim imports a policy's module only when it is named as module:Class or registered under the "
                f"{ENTRY_POINT_GROUP!r} entry points, and only from the Python path (install the package, or run "
                "with PYTHONPATH=. for a module in this folder); see docs/policies.md")


def registered_names() -> list[str]:
    """Policy names installed packages register under the entry-point group."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def is_qualified(name: str) -> bool:
    return bool(_QUALIFIED.match(name))


@cache
def load(name: str, base: type) -> type:
    """The policy class `name` names (an entry point or module:Class), checked against `base`."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return _checked(_import(ep.value, f"entry point {ep.name!r} ({ep.value})"), base, name)
    if not is_qualified(name):
        raise ConfigError(f"unknown policy {name!r}")
    return _checked(_import(name, name), base, name)


def _import(target: str, what: str):
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"policy {what}: module {exc.name!r} is not importable from the Python path; "
                          f"{_IMPORT_NOTE}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise ConfigError(f"policy {what}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"policy {what}: module {module_name!r} has no {attr!r}") from None


def _checked(cls, base: type, name: str) -> type:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"policy {name!r}: {cls!r} is not a subclass of simulator.scheduling.Scheduler")
    if cls.schedule is base.schedule:
        raise ConfigError(f"policy {name!r}: {cls.__name__} does not define schedule(self, now)")
    return cls

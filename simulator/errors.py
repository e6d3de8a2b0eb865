"""User-facing errors: each carries one clear message and becomes exit code 2 in the CLI."""

from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A mistake in user input (scenario, catalog entry, trace, calibration file)."""


def unknown_choice(what: str, value, allowed) -> str:
    """The message for a name that is not among the allowed ones, listing them."""
    return f"unknown {what} {value!r}; allowed: {', '.join(sorted(allowed))}"


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """The mapping a user's YAML file holds; `what` ("scenario", "calibration") names it in errors."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of keys to values")
    return data

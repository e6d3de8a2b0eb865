"""The shipped catalogs (data/models.yaml, data/hardware.yaml, each number with its source), looked
up by name; entries are validated as inline specs are (simulator.spec.inline)."""

from __future__ import annotations

import difflib
from functools import cache
from importlib import resources

from simulator.common.errors import ConfigError
from simulator.common.yaml_reader import parse_yaml
from simulator.spec.hardware import HardwareSpec
from simulator.spec.inline import hardware_from_dict, model_from_dict
from simulator.spec.model import ModelSpec


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name.lower(), list(known), n=3, cutoff=0.4)
    return f"; did you mean {', '.join(close)}?" if close else ""


@cache
def _load_catalog(filename: str) -> dict[str, dict]:
    text = resources.files("simulator.spec").joinpath("data").joinpath(filename).read_text()
    return parse_yaml(text, filename)  # the same reader as users' files: duplicate keys fail


def model_names() -> list[str]:
    return sorted(_load_catalog("models.yaml"))


def hardware_names() -> list[str]:
    return sorted(_load_catalog("hardware.yaml"))


def get_model(name: str) -> ModelSpec:
    catalog = _load_catalog("models.yaml")
    key = name.lower()
    if key not in catalog:
        raise ConfigError(f"unknown model {name!r}{_suggest(key, catalog)} (known: {', '.join(sorted(catalog))})")
    return model_from_dict(key, catalog[key], where=f"models.yaml:{key}")


def get_hardware(name: str) -> HardwareSpec:
    catalog = _load_catalog("hardware.yaml")
    key = name.lower()
    if key not in catalog:
        raise ConfigError(
            f"unknown hardware {name!r}{_suggest(key, catalog)} (known: {', '.join(sorted(catalog))})"
        )
    return hardware_from_dict(key, catalog[key], where=f"hardware.yaml:{key}")

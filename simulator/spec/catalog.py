"""The shipped catalogs (data/models.yaml, data/hardware.yaml, each number with its source) and
inline specs from scenarios, turned into ModelSpec and HardwareSpec."""

from __future__ import annotations

import difflib
from functools import cache
from importlib import resources

import yaml

from simulator.common.errors import ConfigError
from simulator.spec.dtypes import GB, GiB
from simulator.spec.hardware import HardwareSpec
from simulator.spec.model import ModelSpec


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name.lower(), list(known), n=3, cutoff=0.4)
    return f"; did you mean {', '.join(close)}?" if close else ""


@cache
def _load_catalog(filename: str) -> dict[str, dict]:
    text = resources.files("simulator.spec").joinpath("data").joinpath(filename).read_text()
    return yaml.safe_load(text)


def model_names() -> list[str]:
    return sorted(_load_catalog("models.yaml"))


def hardware_names() -> list[str]:
    return sorted(_load_catalog("hardware.yaml"))


def model_from_dict(name: str, data: dict) -> ModelSpec:
    try:
        return ModelSpec(name=name, **data)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


def hardware_from_dict(name: str, data: dict) -> HardwareSpec:
    data = dict(data)
    try:
        return HardwareSpec(
            name=name,
            memory_bytes=data.pop("memory_gib") * GiB,
            memory_bandwidth=data.pop("memory_bandwidth_gbps") * GB,
            flops={k: v * 1e12 for k, v in data.pop("tflops").items()},
            interconnect_bandwidth=data.pop("interconnect_gbps") * GB,
            interconnect_latency=data.pop("interconnect_latency_us", 5.0) * 1e-6,
            host_link_bandwidth=data.pop("host_link_gbps", 25.0) * GB,
            price_per_hour=data.pop("price_per_hour", 0.0),
            source=data.pop("source", ""),
            extra=data,
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"hardware {name!r}: missing or bad field {exc}") from None


def get_model(name: str) -> ModelSpec:
    catalog = _load_catalog("models.yaml")
    key = name.lower()
    if key not in catalog:
        raise ConfigError(f"unknown model {name!r}{_suggest(key, catalog)} (known: {', '.join(sorted(catalog))})")
    return model_from_dict(key, catalog[key])


def get_hardware(name: str) -> HardwareSpec:
    catalog = _load_catalog("hardware.yaml")
    key = name.lower()
    if key not in catalog:
        raise ConfigError(
            f"unknown hardware {name!r}{_suggest(key, catalog)} (known: {', '.join(sorted(catalog))})"
        )
    return hardware_from_dict(key, catalog[key])

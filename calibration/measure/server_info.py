"""What a running server says about its own configuration, read before a benchmark.

vLLM exposes its KV-cache configuration on `/metrics` as the labels of one gauge,
`vllm:cache_config_info` (vllm/v1/metrics/loggers.py, from `CacheConfig.metrics_info()`):
`block_size`, `num_gpu_blocks` (the KV blocks of the device the engine runs on, CPUs
included), `enable_prefix_caching` and others. Its context limit is `max_model_len` in each
`/v1/models` entry. Its scheduler settings (`max_num_seqs`, `max_num_batched_tokens`) are not
exposed; a server with a `scheduler_config_info` gauge (llmsim serve has one) gives them too.
Every setting that could not be read is listed by name, so that the caller can say which
default it assumed.

Prefix-cache counters (`vllm:prefix_cache_queries` / `vllm:prefix_cache_hits`, prompt tokens
looked up and found; `_total` in the Prometheus text; `gpu_` prefixed in older releases) are read
before and after a run: their difference is the run's hit rate.

`llmsim serve` exposes the same gauges and counters with the `llmsim_` prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import httpx

PREFIXES = ("vllm:", "llmsim_")
# Settings the simulated side takes from the server, and where each one is read.
SETTINGS = {
    "block_size": "cache_config_info",
    "num_blocks": "cache_config_info (num_gpu_blocks)",
    "enable_prefix_caching": "cache_config_info",
    "max_model_len": "/v1/models",
    "max_num_seqs": "scheduler_config_info",
    "max_num_batched_tokens": "scheduler_config_info",
}
_QUERY_NAMES = ("prefix_cache_queries", "gpu_prefix_cache_queries")
_HIT_NAMES = ("prefix_cache_hits", "gpu_prefix_cache_hits")
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a Prometheus text exposition: (name, labels, value); comments skipped,
    lines that are not samples ignored."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(3) or "")}
        out.append((m.group(1), labels, value))
    return out


def _strip(name: str) -> str | None:
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return None


def _int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text not in (None, "", "None", "null") else None
    except ValueError:
        return None


def _bool(text: str | None) -> bool | None:
    return {"true": True, "false": False}.get(str(text).lower())


def config_from_metrics(text: str) -> dict:
    """Settings found in a /metrics text, under llmsim's names (only those present)."""
    cache: dict[str, str] = {}
    scheduler: dict[str, str] = {}
    for name, labels, _ in parse_samples(text):
        base = _strip(name)
        if base == "cache_config_info":
            cache.update(labels)
        elif base == "scheduler_config_info":
            scheduler.update(labels)
    found = {
        "block_size": _int(cache.get("block_size")),
        "num_blocks": _int(cache.get("num_gpu_blocks")),
        "enable_prefix_caching": _bool(cache.get("enable_prefix_caching")),
        "max_num_seqs": _int(scheduler.get("max_num_seqs")),
        "max_num_batched_tokens": _int(scheduler.get("max_num_batched_tokens")),
    }
    if scheduler.get("policy"):
        found["policy"] = scheduler["policy"]
    return {k: v for k, v in found.items() if v is not None}


def prefix_counters(text: str) -> tuple[float, float] | None:
    """(prompt tokens looked up, found) in the prefix cache so far, summed over engines; None when
    the server has no such counters."""
    totals = {"queries": None, "hits": None}
    for name, _, value in parse_samples(text):
        base = _strip(name)
        if base is None or base.endswith("_created"):
            continue
        base = base.removesuffix("_total")
        for key, names in (("queries", _QUERY_NAMES), ("hits", _HIT_NAMES)):
            if base in names:
                totals[key] = (totals[key] or 0.0) + value
    if totals["queries"] is None or totals["hits"] is None:
        return None
    return totals["queries"], totals["hits"]


@dataclass
class ServerConfig:
    """Settings read from a server, what could not be read, and its prefix-cache counters."""

    settings: dict = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # names of SETTINGS not read
    problems: list[str] = field(default_factory=list)  # endpoints that did not answer, and why
    prefix_counters: tuple[float, float] | None = None  # (queries, hits) when read

    @classmethod
    def of(cls, metrics_text: str | None, models_json: dict | None, problems: list[str] | None = None):
        settings = config_from_metrics(metrics_text) if metrics_text else {}
        for entry in (models_json or {}).get("data") or []:
            limit = _int(str(entry.get("max_model_len"))) if isinstance(entry, dict) else None
            if limit:
                settings["max_model_len"] = limit
                break
        unreadable = [name for name in SETTINGS if name not in settings]
        counters = prefix_counters(metrics_text) if metrics_text else None
        return cls(settings, unreadable, list(problems or []), counters)

    def to_dict(self) -> dict:
        return {"read": self.settings, "unreadable": self.unreadable, "problems": self.problems}

    def lines(self) -> list[str]:
        """What was read, for the terminal."""
        read = ", ".join(f"{k} {v}" for k, v in self.settings.items()) or "nothing"
        return [f"server settings read: {read}"] + [f"note: {p}" for p in self.problems]


async def read_server_config(base: str, headers: dict[str, str] | None = None) -> ServerConfig:
    """GET /metrics and /v1/models of the server at `base`; whatever fails is noted, never raised."""
    texts: dict[str, object] = {}
    problems = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client:
        for path in ("/metrics", "/v1/models"):
            try:
                resp = await client.get(base + path, headers=headers or {})
                resp.raise_for_status()
                texts[path] = resp.text if path == "/metrics" else resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                problems.append(f"{base}{path} could not be read ({type(exc).__name__}: {str(exc)[:120]})")
    metrics = texts.get("/metrics")
    models = texts.get("/v1/models")
    return ServerConfig.of(metrics if isinstance(metrics, str) else None,
                           models if isinstance(models, dict) else None, problems)  # fmt: skip


def hit_rate(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    """The prefix-cache hit rate between two counter readings (None when unknown or no lookups)."""
    if before is None or after is None:
        return None
    queries, hits = after[0] - before[0], after[1] - before[1]
    return hits / queries if queries > 0 else None

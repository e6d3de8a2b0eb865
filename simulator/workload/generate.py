"""The workload: which requests arrive, when, and with how many prompt and output tokens.

A `WorkloadConfig` (the `workload:` section of a scenario) describes an arrival process and a mix of
request classes; `generate` turns it into a concrete, sorted list of `Request`s.

Randomness: one seed, split into independent streams by purpose (arrival gaps, class choice, and
each class's prompt and output lengths, keyed by class name). Changing a length distribution or a
class weight therefore never moves arrival times, and a rate change only rescales them (gaps are
unit draws divided by the rate): paired comparisons get common random numbers.

Every request is clipped to the model context: prompt + output <= max_context, shortening the
output first (down to 1 token) and then the prompt. `Workload` counts what was clipped.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.common.errors import ConfigError
from simulator.metrics.slo import SLO
from simulator.workload import diurnal
from simulator.workload.arrivals import DiurnalArrival, TraceArrival, limit, synthetic_arrivals, trace_window
from simulator.workload.config import RequestClass, WorkloadConfig
from simulator.workload.lengths import EmpiricalLength
from simulator.workload.paths import resolve_path


@dataclass(slots=True)
class Request:
    request_id: int
    arrival: float  # seconds; the first request arrives at 0
    prompt_tokens: int
    output_tokens: int
    request_class: str = "default"
    priority: int = 0
    block_hashes: list[int] | None = None  # prefix-block ids (Mooncake), one per hash_block_tokens
    requested: tuple[int, int] | None = None  # (prompt, output) asked for, when clipped to the context

    @property
    def clipping(self) -> str:
        """What clipping to the context changed, in words ("" when nothing)."""
        if self.requested is None:
            return ""
        (prompt, output), parts = self.requested, []
        if prompt != self.prompt_tokens:
            parts.append(f"prompt {prompt:,} -> {self.prompt_tokens:,} tokens")
        if output != self.output_tokens:
            parts.append(f"output {output:,} -> {self.output_tokens:,} tokens")
        return "clipped to the context: " + ", ".join(parts)


@dataclass
class Workload:
    requests: list[Request]  # sorted by arrival, request_id = position
    slos: dict[str, SLO] = field(default_factory=dict)  # per class name
    clipped_prompts: int = 0  # prompts shortened to fit the context
    clipped_outputs: int = 0  # outputs shortened to fit the context
    hash_block_tokens: int | None = None  # tokens per block hash id, when requests carry them
    skipped_trace_rows: int = 0  # rows of the trace left out as failed requests (BurstGPT)

    def __len__(self) -> int:
        return len(self.requests)

    def __iter__(self) -> Iterator[Request]:
        return iter(self.requests)

    @property
    def span_s(self) -> float:
        return self.requests[-1].arrival - self.requests[0].arrival if self.requests else 0.0

    def to_frame(self) -> pd.DataFrame:
        """One row per request: request_id, arrival, prompt_tokens, output_tokens, request_class,
        priority, num_block_hashes."""
        rs = self.requests
        return pd.DataFrame(
            {
                "request_id": [r.request_id for r in rs],
                "arrival": [r.arrival for r in rs],
                "prompt_tokens": [r.prompt_tokens for r in rs],
                "output_tokens": [r.output_tokens for r in rs],
                "request_class": [r.request_class for r in rs],
                "priority": [r.priority for r in rs],
                "num_block_hashes": [len(r.block_hashes) if r.block_hashes else 0 for r in rs],
            }
        )


def generate(
    config: WorkloadConfig, *, seed: int, max_context: int, base_dir: Path | None = None
) -> Workload:
    """Draw the requests of `config`: same config, seed and context give identical requests."""
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if max_context < 2:
        raise ConfigError(f"max_context must be >= 2 tokens (1 prompt + 1 output), got {max_context}")
    base_dir = Path(base_dir) if base_dir is not None else None

    trace = None
    if isinstance(config.arrival, TraceArrival):
        trace = trace_window(config.arrival, base_dir)
        arrival = limit(trace.arrival, duration_s=config.duration_s, num_requests=config.num_requests)
    elif isinstance(config.arrival, DiurnalArrival):
        spec = config.arrival
        slots = diurnal.slot_rates(spec, lambda p: resolve_path(p, base_dir, "workload.arrival.profile.path"))
        arrival = diurnal.arrivals(
            spec, _stream(seed, 0), _stream(seed, 3), slots, horizon=config.duration_s, count=config.num_requests
        )
    else:
        arrival = synthetic_arrivals(config.arrival, _stream(seed, 0), duration_s=config.duration_s,
                                     num_requests=config.num_requests)
    n = arrival.size

    classes = config.classes
    weights = np.array([c.weight for c in classes])
    cumulative = np.cumsum(weights / weights.sum())
    chosen = np.minimum(
        np.searchsorted(cumulative, _stream(seed, 1).random(n), side="right"), len(classes) - 1
    )

    prompt = trace.prompt_tokens[:n].copy() if trace else np.ones(n, dtype=np.int64)
    output = trace.output_tokens[:n].copy() if trace else np.ones(n, dtype=np.int64)
    keeps_hashes = np.zeros(n, dtype=bool)
    for k, cls in enumerate(classes):
        mask = chosen == k
        p, o = _class_lengths(cls, seed, n, base_dir, k)
        if p is not None:
            prompt[mask] = p[mask]
        if o is not None:
            output[mask] = o[mask]
        keeps_hashes[mask] = p is None

    fitted_prompt, fitted_output = clip_to_context(prompt, output, max_context)
    clipped_prompts = int(np.count_nonzero(fitted_prompt < prompt))
    clipped_outputs = int(np.count_nonzero(fitted_output < output))

    hashes: list[list[int] | None] = [None] * n
    hash_tokens = trace.hash_block_tokens if trace else None
    if trace is not None and trace.block_hashes is not None:
        # A clipped prompt keeps the ids of the blocks it still covers (the last one may be partial).
        num_blocks = -(-fitted_prompt // hash_tokens)
        for i in np.flatnonzero(keeps_hashes):
            hashes[i] = trace.block_hashes[i][: num_blocks[i]]

    names = [c.name for c in classes]
    priorities = [c.priority for c in classes]
    requests = [
        Request(i, t, p, o, names[k], priorities[k], h)
        for i, (t, p, o, k, h) in enumerate(
            zip(arrival.tolist(), fitted_prompt.tolist(), fitted_output.tolist(), chosen.tolist(), hashes)
        )
    ]
    for i in np.flatnonzero((fitted_prompt < prompt) | (fitted_output < output)):
        requests[i].requested = (int(prompt[i]), int(output[i]))
    return Workload(
        requests=requests,
        slos={c.name: c.slo for c in classes},
        clipped_prompts=clipped_prompts,
        clipped_outputs=clipped_outputs,
        hash_block_tokens=hash_tokens if any(h is not None for h in hashes) else None,
        skipped_trace_rows=trace.skipped_rows if trace else 0,
    )


def clip_to_context(
    prompt: np.ndarray, output: np.ndarray, max_context: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fit each request in the context: shorten the output first (down to 1), then the prompt."""
    output = np.where(prompt + output > max_context, np.maximum(max_context - prompt, 1), output)
    prompt = np.minimum(prompt, max_context - output)
    return prompt, output


# --- internals --------------------------------------------------------------------------------


def _stream(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for one purpose, fixed by the seed and the key."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _class_lengths(cls: RequestClass, seed: int, n: int, base_dir: Path | None, index: int):
    """Prompt and output lengths for all n positions (None where the trace's are kept).

    Drawing n values and masking keeps request i's length the i-th draw of its class's stream,
    independent of how many requests the other classes got.
    """
    tag = zlib.crc32(cls.name.encode())
    where = f"workload.classes[{index}]"
    p_dist, o_dist = cls.prompt_tokens, cls.output_tokens
    p_rng, o_rng = _stream(seed, 2, tag, 0), _stream(seed, 2, tag, 1)
    joint = (
        isinstance(p_dist, EmpiricalLength)
        and isinstance(o_dist, EmpiricalLength)
        and resolve_path(p_dist.path, base_dir, where) == resolve_path(o_dist.path, base_dir, where)
    )
    if joint:  # same file: draw whole rows, keeping each row's prompt and output together
        p_values = p_dist.values(base_dir, f"{where}.prompt_tokens")
        o_values = o_dist.values(base_dir, f"{where}.output_tokens")
        rows = p_rng.integers(0, p_values.size, size=n)
        return p_values[rows], o_values[rows]
    p = p_dist.draw(p_rng, n, base_dir, f"{where}.prompt_tokens") if p_dist else None
    o = o_dist.draw(o_rng, n, base_dir, f"{where}.output_tokens") if o_dist else None
    return p, o

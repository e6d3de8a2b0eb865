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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from simulator import diurnal, traces
from simulator.diurnal import DiurnalArrival
from simulator.errors import ConfigError
from simulator.metrics import SLO

_REPO_ROOT = Path(__file__).resolve().parent.parent

# Column names accepted as shorthands for the length files' columns.
LENGTH_COLUMN_ALIASES = {"prompt": "num_prefill_tokens", "output": "num_decode_tokens"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- arrival processes ------------------------------------------------------------------------


class PoissonArrival(_Strict):
    """Exponential inter-arrival gaps with mean 1/rate."""

    process: Literal["poisson"]
    rate: PositiveFloat  # requests per second


class GammaArrival(_Strict):
    """Gamma inter-arrival gaps with mean 1/rate and coefficient of variation cv (burstiness).

    cv = 1 has the distribution of Poisson arrivals; cv > 1 is burstier, cv < 1 more regular.
    """

    process: Literal["gamma"]
    rate: PositiveFloat
    cv: PositiveFloat


class ConstantArrival(_Strict):
    """One request every 1/rate seconds."""

    process: Literal["constant"]
    rate: PositiveFloat


class TraceArrival(_Strict):
    """Replay arrival times (and, unless a class overrides them, lengths) from a trace file.

    `start_s` and `limit` cut a window (seconds after the trace's first request, and at most that
    many requests); the window is then shifted to start at 0 and stretched: by `time_scale`, or,
    with `rate`, so that its mean rate (requests - 1 over its span) is `rate`.
    """

    process: Literal["trace"]
    path: str
    format: Literal["azure", "mooncake", "csv"]
    time_scale: PositiveFloat = 1.0
    rate: PositiveFloat | None = None
    start_s: NonNegativeFloat = 0.0
    limit: PositiveInt | None = None

    @model_validator(mode="after")
    def _one_rescaling(self) -> TraceArrival:
        if self.rate is not None and self.time_scale != 1.0:
            raise ValueError(
                f"give either rate ({self.rate}) or time_scale ({self.time_scale}), not both: "
                "each one sets the trace's speed"
            )
        return self


Arrival = Annotated[
    PoissonArrival | GammaArrival | ConstantArrival | TraceArrival | DiurnalArrival,
    Field(discriminator="process"),
]


# --- length distributions ---------------------------------------------------------------------
# Each `draw` returns int64 tokens >= 1; continuous draws are rounded to the nearest token.


class ConstantLength(_Strict):
    dist: Literal["constant"]
    value: PositiveInt

    def draw(self, rng: np.random.Generator, n: int, base_dir: Path | None, field: str) -> np.ndarray:
        return np.full(n, self.value, dtype=np.int64)


class UniformLength(_Strict):
    """Whole numbers from low to high, both included, equally likely."""

    dist: Literal["uniform"]
    low: PositiveInt
    high: PositiveInt

    @model_validator(mode="after")
    def _ordered(self) -> UniformLength:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self

    def draw(self, rng: np.random.Generator, n: int, base_dir: Path | None, field: str) -> np.ndarray:
        return rng.integers(self.low, self.high, size=n, endpoint=True, dtype=np.int64)


class NormalLength(_Strict):
    """Normal, rounded, and raised to 1 where it falls below (which lifts the mean if std ~ mean)."""

    dist: Literal["normal"]
    mean: PositiveFloat
    std: NonNegativeFloat

    def draw(self, rng: np.random.Generator, n: int, base_dir: Path | None, field: str) -> np.ndarray:
        return _tokens(self.mean + self.std * rng.standard_normal(n))


class LognormalLength(_Strict):
    """Lognormal given by the mean and standard deviation of the token count itself (not its log).

    Internally sigma^2 = ln(1 + std^2 / mean^2) and mu = ln(mean) - sigma^2 / 2.
    """

    dist: Literal["lognormal"]
    mean: PositiveFloat
    std: PositiveFloat

    def draw(self, rng: np.random.Generator, n: int, base_dir: Path | None, field: str) -> np.ndarray:
        sigma2 = np.log1p((self.std / self.mean) ** 2)
        mu = np.log(self.mean) - sigma2 / 2
        return _tokens(np.exp(mu + np.sqrt(sigma2) * rng.standard_normal(n)))


class EmpiricalLength(_Strict):
    """Lengths resampled (with replacement) from one column of a CSV file.

    `column` may be a column name or `prompt` / `output` (num_prefill_tokens / num_decode_tokens,
    the columns of the shipped length files); left out, it is the one matching the field it sits in.
    When a class takes both lengths from the same file, whole rows are drawn, keeping the
    correlation between a request's prompt and output lengths.
    """

    dist: Literal["empirical"]
    path: str
    column: str | None = None

    def column_for(self, field: str) -> str:
        name = self.column or ("prompt" if field.endswith("prompt_tokens") else "output")
        return LENGTH_COLUMN_ALIASES.get(name, name)

    def values(self, base_dir: Path | None, field: str) -> np.ndarray:
        path = resolve_path(self.path, base_dir, f"{field}.path")
        return traces.read_length_column(path, self.column_for(field))

    def draw(self, rng: np.random.Generator, n: int, base_dir: Path | None, field: str) -> np.ndarray:
        values = self.values(base_dir, field)
        return values[rng.integers(0, values.size, size=n)]


LengthDist = Annotated[
    ConstantLength | UniformLength | NormalLength | LognormalLength | EmpiricalLength,
    Field(discriminator="dist"),
]


def _tokens(x: np.ndarray) -> np.ndarray:
    return np.maximum(np.rint(x), 1).astype(np.int64)


# --- classes and the workload section ---------------------------------------------------------


class RequestClass(_Strict):
    """One kind of request: its share of arrivals, its lengths, its priority and its SLOs."""

    name: str = Field(min_length=1)
    weight: PositiveFloat = 1.0  # relative share of arrivals
    prompt_tokens: LengthDist | None = None  # None: take the trace's lengths
    output_tokens: LengthDist | None = None
    priority: int = 0  # lower is served first by priority policies
    slo: SLO = SLO()


class WorkloadConfig(_Strict):
    """The `workload:` section of a scenario.

    Generation stops at `duration_s` (arrivals at or after it are dropped) or after `num_requests`,
    whichever comes first. A trace also stops at its own end, so it needs neither.
    """

    arrival: Arrival
    classes: list[RequestClass] = Field(default_factory=lambda: [RequestClass(name="default")], min_length=1)
    duration_s: PositiveFloat | None = None
    num_requests: PositiveInt | None = None

    @model_validator(mode="after")
    def _complete(self) -> WorkloadConfig:
        names = [c.name for c in self.classes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"classes: names must be unique, repeated: {', '.join(duplicates)}")
        if isinstance(self.arrival, TraceArrival):
            return self
        if self.duration_s is None and self.num_requests is None:
            raise ValueError(
                f"arrival process {self.arrival.process!r} needs duration_s and/or num_requests "
                "(only a trace ends by itself)"
            )
        for i, cls in enumerate(self.classes):
            for name in ("prompt_tokens", "output_tokens"):
                if getattr(cls, name) is None:
                    raise ValueError(
                        f"classes[{i}] ({cls.name!r}): {name} is required unless arrival.process is "
                        "'trace', e.g. {dist: constant, value: 512}"
                    )
        return self


def load_workload(data: Mapping[str, Any], where: str = "workload") -> WorkloadConfig:
    """Validate a `workload:` mapping, turning pydantic's errors into one `ConfigError`."""
    try:
        return WorkloadConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join([where, *(str(p) for p in err["loc"])])
            message = err["msg"].removeprefix("Value error, ")
            shown = err["type"] != "missing" and not isinstance(err["input"], dict | list)
            problems.append(f"{loc}: {message}" + (f" (got {err['input']!r})" if shown else ""))
        raise ConfigError("; ".join(problems)) from None


# --- generated requests -----------------------------------------------------------------------


@dataclass(slots=True)
class Request:
    request_id: int
    arrival: float  # seconds; the first request arrives at 0
    prompt_tokens: int
    output_tokens: int
    request_class: str = "default"
    priority: int = 0
    block_hashes: list[int] | None = None  # prefix-block ids (Mooncake), one per hash_block_tokens


@dataclass
class Workload:
    requests: list[Request]  # sorted by arrival, request_id = position
    slos: dict[str, SLO] = field(default_factory=dict)  # per class name
    clipped_prompts: int = 0  # prompts shortened to fit the context
    clipped_outputs: int = 0  # outputs shortened to fit the context
    hash_block_tokens: int | None = None  # tokens per block hash id, when requests carry them

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


def resolve_path(path: str, base_dir: Path | None, field: str) -> Path:
    """A data file named in a scenario: absolute, or relative to the scenario's folder, the project
    root, or the working directory, tried in that order."""
    given = Path(path).expanduser()
    if given.is_absolute():
        candidates = [given]
    else:
        roots = [base_dir] if base_dir is not None else []
        candidates = list(dict.fromkeys(Path(r) / given for r in [*roots, _REPO_ROOT, Path.cwd()]))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"{field}: file {path!r} not found (tried {tried})")


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
        trace = _trace_window(config.arrival, base_dir)
        arrival = _limit(trace.arrival, config)
    elif isinstance(config.arrival, DiurnalArrival):
        spec = config.arrival
        slots = diurnal.slot_rates(spec, lambda p: resolve_path(p, base_dir, "workload.arrival.profile.path"))
        arrival = diurnal.arrivals(
            spec, _stream(seed, 0), _stream(seed, 3), slots, horizon=config.duration_s, count=config.num_requests
        )
    else:
        arrival = _synthetic_arrivals(config, _stream(seed, 0))
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
    return Workload(
        requests=requests,
        slos={c.name: c.slo for c in classes},
        clipped_prompts=clipped_prompts,
        clipped_outputs=clipped_outputs,
        hash_block_tokens=hash_tokens if any(h is not None for h in hashes) else None,
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


def _synthetic_arrivals(config: WorkloadConfig, rng: np.random.Generator) -> np.ndarray:
    """Arrival times from 0: unit-mean gaps divided by the rate, drawn in chunks until a limit."""
    process = config.arrival
    rate = process.rate

    def unit_gaps(size: int) -> np.ndarray:  # inter-arrival gaps with mean 1
        if isinstance(process, ConstantArrival):
            return np.ones(size)
        if isinstance(process, GammaArrival):
            shape = 1.0 / process.cv**2
            return rng.standard_gamma(shape, size) / shape
        return rng.standard_exponential(size)

    target, horizon = config.num_requests, config.duration_s
    chunk = target or 0
    if horizon is not None:  # expected count plus a wide margin; topped up below if short
        expected = rate * horizon
        spread = 6 * np.sqrt(expected) * max(1.0, getattr(process, "cv", 1.0))
        chunk = min(chunk or np.inf, int(expected + spread) + 16)
    # The first request arrives at 0; sequential draws continue one stream, so the times do not
    # depend on how they were chunked.
    times = np.cumsum(np.concatenate([np.zeros(1), unit_gaps(chunk - 1) / rate]))
    while (target is None or times.size < target) and (horizon is None or times[-1] < horizon):
        times = np.concatenate([times, times[-1] + np.cumsum(unit_gaps(chunk) / rate)])
    return _limit(times, config)


def _limit(times: np.ndarray, config: WorkloadConfig) -> np.ndarray:
    if config.duration_s is not None:
        times = times[: np.searchsorted(times, config.duration_s, side="left")]
    if config.num_requests is not None:
        times = times[: config.num_requests]
    return times


def _trace_window(spec: TraceArrival, base_dir: Path | None) -> traces.Trace:
    """The trace cut to its window and rescaled; lengths and hashes are sliced alongside."""
    full = traces.read_trace(resolve_path(spec.path, base_dir, "workload.arrival.path"), spec.format)
    first = int(np.searchsorted(full.arrival, spec.start_s, side="left"))
    last = full.arrival.size if spec.limit is None else min(full.arrival.size, first + spec.limit)
    if first >= last:
        raise ConfigError(
            f"workload.arrival.start_s: {spec.start_s} s is past the trace's end "
            f"({full.arrival[-1]:.1f} s, {full.source})"
        )
    arrival = full.arrival[first:last] - full.arrival[first]
    if spec.rate is not None:
        span = arrival[-1] if arrival.size > 1 else 0.0
        if span <= 0:
            raise ConfigError(
                f"workload.arrival.rate: the trace window has no time span ({arrival.size} request(s)), "
                "so it cannot be rescaled to a rate"
            )
        arrival = arrival * ((arrival.size - 1) / span / spec.rate)
    else:
        arrival = arrival * spec.time_scale
    return traces.Trace(
        arrival,
        full.prompt_tokens[first:last],
        full.output_tokens[first:last],
        full.block_hashes[first:last] if full.block_hashes is not None else None,
        full.hash_block_tokens,
        full.source,
    )

"""The workload drawn lazily, chunk by chunk, for runs too large to hold every request at once.

`stream_requests` yields the same kind of `Request`s as `generate`, in arrival order, holding
only one chunk (`CHUNK` requests) of draws at a time. Arrival gaps continue one random stream
(as `generate`'s do, so arrival times match its up to float rounding of the running sum); class
choices and lengths are drawn per chunk from streams keyed by the chunk's index, so the same
seed always gives the same requests, whatever consumes them. Synthetic arrival processes
(poisson, gamma, constant) are supported; a trace or a diurnal profile is refused with a
ConfigError (`generate` replays them in memory).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from simulator.common.errors import ConfigError
from simulator.workload.arrival_count import check_arrival_count
from simulator.workload.arrivals import ConstantArrival, GammaArrival, PoissonArrival
from simulator.workload.config import WorkloadConfig
from simulator.workload.generate import Request, _stream, clip_to_context

CHUNK = 65_536  # requests drawn at once; part of what a seed means in a streamed run


def streamable(config: WorkloadConfig) -> bool:
    return isinstance(config.arrival, PoissonArrival | GammaArrival | ConstantArrival)


def expected_requests(config: WorkloadConfig) -> float:
    """How many requests the workload should have (the mean, for random arrivals); inf if unknown."""
    counts = [float(config.num_requests)] if config.num_requests is not None else []
    rate = getattr(config.arrival, "rate", None)
    if config.duration_s is not None and rate is not None:
        counts.append(rate * config.duration_s)
    return min(counts) if counts else float("inf")


def stream_requests(config: WorkloadConfig, *, seed: int, max_context: int, base_dir: Path | None = None,
                    chunk: int = CHUNK) -> Iterator[Request]:  # fmt: skip
    """Requests of `config`, in arrival order, drawn `chunk` at a time (see the module's notes)."""
    if not streamable(config):
        raise ConfigError(
            f"workload.arrival.process: {config.arrival.process!r} cannot be streamed; allowed in a streamed run: "
            "poisson, gamma, constant (raise run.stream_above to replay it in memory)"
        )
    process = config.arrival
    check_arrival_count(process.rate, config.duration_s, config.num_requests)
    gaps_rng = _stream(seed, 0)
    classes = config.classes
    weights = np.array([c.weight for c in classes])
    cumulative = np.cumsum(weights / weights.sum())
    names, priorities = [c.name for c in classes], [c.priority for c in classes]
    tags = [zlib.crc32(c.name.encode()) for c in classes]
    base_dir = Path(base_dir) if base_dir is not None else None
    horizon, target = config.duration_s, config.num_requests
    last, made, index = None, 0, 0
    while target is None or made < target:
        size = chunk if target is None else min(chunk, target - made)
        gaps = _unit_gaps(process, gaps_rng, size if last is not None else size - 1) / process.rate
        times = np.cumsum(gaps) + last if last is not None else np.concatenate([[0.0], np.cumsum(gaps)])
        if horizon is not None:
            times = times[: np.searchsorted(times, horizon, side="left")]
        n = times.size
        if n == 0:
            return
        chosen = np.minimum(np.searchsorted(cumulative, _stream(seed, 1, index).random(n), side="right"),
                            len(classes) - 1)  # fmt: skip
        prompt, output = np.ones(n, dtype=np.int64), np.ones(n, dtype=np.int64)
        for k, cls in enumerate(classes):
            mask = chosen == k
            where = f"workload.classes[{k}]"
            prompt[mask] = cls.prompt_tokens.draw(_stream(seed, 2, tags[k], 0, index), n, base_dir,
                                                  f"{where}.prompt_tokens")[mask]  # fmt: skip
            output[mask] = cls.output_tokens.draw(_stream(seed, 2, tags[k], 1, index), n, base_dir,
                                                  f"{where}.output_tokens")[mask]  # fmt: skip
        fitted_prompt, fitted_output = clip_to_context(prompt, output, max_context)
        clipped = (fitted_prompt < prompt) | (fitted_output < output)
        for i, (t, p, o, k) in enumerate(zip(times.tolist(), fitted_prompt.tolist(), fitted_output.tolist(),
                                             chosen.tolist())):  # fmt: skip
            request = Request(made + i, t, p, o, names[k], priorities[k])
            if clipped[i]:
                request.requested = (int(prompt[i]), int(output[i]))
            yield request
        made += n
        index += 1
        last = float(times[-1])
        if n < size:  # the horizon cut this chunk
            return


def _unit_gaps(process, rng: np.random.Generator, size: int) -> np.ndarray:
    if isinstance(process, ConstantArrival):
        return np.ones(size)
    if isinstance(process, GammaArrival):
        shape = 1.0 / process.cv**2
        return rng.standard_gamma(shape, size) / shape
    return rng.standard_exponential(size)

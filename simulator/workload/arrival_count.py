"""How many arrivals a process may draw: checked before drawing, so that no typo in a rate or a
duration allocates more than a run may hold."""

from __future__ import annotations

from simulator.common.errors import ConfigError
from simulator.common.limits import MAX_NUM_REQUESTS, MAX_TIME_S


def too_many_arrivals(rate: float, duration_s: float | None, num_requests: int | None) -> str | None:
    """What is wrong, if anything, with drawing arrivals at `rate` until `duration_s` or
    `num_requests`: too many requests (checked before anything is drawn), or so slow a rate that
    they would span more than MAX_TIME_S."""
    if duration_s is None:
        if num_requests is not None and num_requests / rate > MAX_TIME_S:
            return (
                f"{num_requests:,} requests at {rate:g}/s would span {num_requests / rate:.3g} s, "
                f"more than {MAX_TIME_S:.3g} s (10 years); raise the rate or set duration_s"
            )
        return None
    expected = rate * duration_s
    if expected > MAX_NUM_REQUESTS and (num_requests is None or num_requests > MAX_NUM_REQUESTS):
        return (
            f"rate x duration_s = {rate:g}/s x {duration_s:g} s = {expected:.3g} expected requests, "
            f"more than the {MAX_NUM_REQUESTS:,} a run may hold; lower either, or set num_requests"
        )
    return None


def check_arrival_count(rate: float, duration_s: float | None, num_requests: int | None) -> None:
    problem = too_many_arrivals(rate, duration_s, num_requests)
    if problem:
        raise ConfigError(f"workload: {problem}")

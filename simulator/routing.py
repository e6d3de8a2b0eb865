"""Routers: which replica a new request goes to. Plain Python over what replicas expose."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from simulator.errors import ConfigError


class ReplicaView(Protocol):
    outstanding: int
    kv_usage: float


class Router:
    name = "base"

    def __init__(self, num_replicas: int, rng: np.random.Generator):
        self.num_replicas = num_replicas
        self.rng = rng

    def choose(self, replicas: list[ReplicaView], seq) -> int:
        raise NotImplementedError  # each router defines it


class RoundRobin(Router):
    name = "round_robin"

    def __init__(self, num_replicas, rng):
        super().__init__(num_replicas, rng)
        self._next = 0

    def choose(self, replicas, seq):
        i = self._next
        self._next = (i + 1) % self.num_replicas
        return i


class LeastOutstanding(Router):
    """Fewest waiting + running requests; ties go to the lowest index."""

    name = "least_outstanding_requests"

    def choose(self, replicas, seq):
        return min(range(len(replicas)), key=lambda i: replicas[i].outstanding)


ROUTERS: dict[str, type[Router]] = {cls.name: cls for cls in (RoundRobin, LeastOutstanding)}


def make_router(name: str, num_replicas: int, rng: np.random.Generator) -> Router:
    try:
        return ROUTERS[name](num_replicas, rng)
    except KeyError:
        raise ConfigError(f"router: unknown router {name!r}; allowed: {', '.join(sorted(ROUTERS))}") from None

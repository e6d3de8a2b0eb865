"""Routers: which replica a new request goes to. Plain Python over what replicas expose.

Every router sees the replicas currently taking requests (the pool may grow or shrink under
autoscaling) and answers an index into that list. Randomised routers draw only from the `rng`
they were given, so a seed fixes every decision.

- `round_robin`: replicas in turn.
- `random`: uniformly at random.
- `least_outstanding_requests`: fewest waiting + running requests.
- `least_kv_usage`: lowest fraction of KV-cache blocks in use; ties go to fewer outstanding requests.
- `power_of_two`: two distinct replicas drawn at random, the one with fewer outstanding requests
  (Mitzenmacher's "power of two choices": nearly the balance of least-outstanding with two probes).
- `prefix_affinity`: requests sharing a prompt prefix go where that prefix went before, so a
  prefix cache there can serve it; others (and overloaded targets) go to least outstanding.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from simulator.common.errors import ConfigError, unknown_choice


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
        i = self._next % len(replicas)  # the pool may grow or shrink under autoscaling
        self._next = i + 1
        return i


class LeastOutstanding(Router):
    """Fewest waiting + running requests; ties go to the lowest index."""

    name = "least_outstanding_requests"

    def choose(self, replicas, seq):
        return min(range(len(replicas)), key=lambda i: replicas[i].outstanding)


class RandomRouter(Router):
    name = "random"

    def choose(self, replicas, seq):
        return int(self.rng.integers(len(replicas)))


def _least_outstanding(replicas) -> int:
    return min(range(len(replicas)), key=lambda i: replicas[i].outstanding)


class LeastKVUsage(Router):
    """Lowest KV-cache usage; ties (e.g. several idle replicas) go to fewer outstanding requests,
    then to the lowest index. Queued requests hold no blocks, so usage alone misses backlogs."""

    name = "least_kv_usage"

    def choose(self, replicas, seq):
        return min(range(len(replicas)), key=lambda i: (replicas[i].kv_usage, replicas[i].outstanding))


class PowerOfTwo(Router):
    """Probe two distinct replicas at random, keep the one with fewer outstanding requests (the
    first probed on a tie). Needs only two load reports per request, as a router of a large
    fleet would."""

    name = "power_of_two"

    def choose(self, replicas, seq):
        if len(replicas) == 1:
            return 0
        a, b = (int(i) for i in self.rng.choice(len(replicas), size=2, replace=False))
        return b if replicas[b].outstanding < replicas[a].outstanding else a


class PrefixAffinity(Router):
    """Send a request to the replica that last served the longest prefix of its prompt.

    A request's `block_hashes` identify its prompt blocks, each hash standing for the whole prefix
    up to and including its block (as in the Mooncake trace). The router remembers which replica
    each hash was last sent to, follows the deepest hash of the new request it has seen, and then
    records all the request's hashes for the chosen replica. Requests without hashes, or whose
    first block was never seen, go to the replica with the fewest outstanding requests.

    Load guard: when the affinity target has more than `max_extra_outstanding` outstanding
    requests above the least loaded replica, the request goes to the least loaded one instead (a
    very popular prefix would otherwise pin all its traffic to one replica); the prefix then
    follows it there.
    """

    name = "prefix_affinity"
    max_extra_outstanding = 8

    def __init__(self, num_replicas, rng):
        super().__init__(num_replicas, rng)
        self._owner: dict[int, int] = {}  # block hash -> replica index it was last sent to

    def choose(self, replicas, seq):
        hashes = seq.block_hashes or []
        least = _least_outstanding(replicas)
        target = None
        for h in hashes:
            owner = self._owner.get(h)
            if owner is None:
                break
            target = owner
        slack = replicas[least].outstanding + self.max_extra_outstanding
        if target is None or target >= len(replicas) or replicas[target].outstanding > slack:
            target = least
        for h in hashes:
            self._owner[h] = target
        return target


ROUTERS: dict[str, type[Router]] = {
    cls.name: cls for cls in (RoundRobin, RandomRouter, LeastOutstanding, LeastKVUsage, PowerOfTwo, PrefixAffinity)
}


def make_router(name: str, num_replicas: int, rng: np.random.Generator) -> Router:
    try:
        return ROUTERS[name](num_replicas, rng)
    except KeyError:
        raise ConfigError(f"router: {unknown_choice('router', name, ROUTERS)}") from None

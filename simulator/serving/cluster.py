"""A deployment in SimPy: requests arrive, a router picks a replica, replicas serve them."""

from __future__ import annotations

from collections.abc import Iterable

import simpy

from simulator.scheduling import Sequence
from simulator.serving.replica import Replica
from simulator.serving.routing import Router


class Cluster:
    def __init__(self, env: simpy.Environment, replicas: list[Replica], router: Router):
        self.env = env
        self.replicas = replicas
        self.router = router
        self.num_finished = 0
        self.all_done = env.event()
        self._expected: int | None = None
        self._serving: list[Replica] | None = None  # None: every replica serves (no autoscaling)

    @property
    def serving(self) -> list[Replica]:
        """Replicas the router may send new requests to (draining and starting ones excluded)."""
        return self.replicas if self._serving is None else self._serving

    def set_serving(self, replicas: list[Replica]) -> None:
        self._serving = list(replicas)

    def start_serving(self, replica: Replica) -> None:
        self._serving.append(replica)

    def stop_serving(self, replica: Replica) -> None:
        self._serving.remove(replica)

    def on_finish(self, seq: Sequence) -> None:
        self.num_finished += 1
        if self._expected is not None and self.num_finished >= self._expected and not self.all_done.triggered:
            self.all_done.succeed()

    def dispatch(self, seq: Sequence) -> None:
        pool = self.serving
        pool[self.router.choose(pool, seq)].submit(seq)

    def feed(self, seqs: Iterable[Sequence], expected: int | None):
        """SimPy process: release each sequence at its arrival time (open loop). `expected`: how
        many there are; None when they are drawn lazily (counted, and awaited, once all came)."""
        self._expected = expected
        env = self.env
        count = 0
        for seq in seqs:
            if seq.arrival > env.now:
                yield env.timeout(seq.arrival - env.now)
            self.dispatch(seq)
            count += 1
        expected = self._expected = count if expected is None else expected
        if self.num_finished >= expected and not self.all_done.triggered:
            self.all_done.succeed()

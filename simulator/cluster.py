"""A deployment in SimPy: requests arrive, a router picks a replica, replicas serve them."""

from __future__ import annotations

from collections.abc import Iterable

import simpy

from simulator.replica import Replica
from simulator.routing import Router
from simulator.scheduling import Sequence


class Cluster:
    def __init__(self, env: simpy.Environment, replicas: list[Replica], router: Router):
        self.env = env
        self.replicas = replicas
        self.router = router
        self.num_finished = 0
        self.all_done = env.event()
        self._expected: int | None = None

    def on_finish(self, seq: Sequence) -> None:
        self.num_finished += 1
        if self._expected is not None and self.num_finished >= self._expected and not self.all_done.triggered:
            self.all_done.succeed()

    def dispatch(self, seq: Sequence) -> None:
        self.replicas[self.router.choose(self.replicas, seq)].submit(seq)

    def feed(self, seqs: Iterable[Sequence], expected: int):
        """SimPy process: release each sequence at its arrival time (open loop)."""
        self._expected = expected
        env = self.env
        for seq in seqs:
            if seq.arrival > env.now:
                yield env.timeout(seq.arrival - env.now)
            self.dispatch(seq)
        if self.num_finished >= expected and not self.all_done.triggered:
            self.all_done.succeed()

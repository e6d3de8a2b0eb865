"""Autoscaling: a SimPy process that adds and removes replicas while the simulation runs.

Every `interval_s` the autoscaler reads one signal per serving replica and asks for
`ceil(serving x mean signal / target)` replicas (the rule of Kubernetes' horizontal pod autoscaler),
kept within [min_replicas, max_replicas]:

- `outstanding`: requests waiting or running on the replica (its concurrency);
- `waiting`: requests queued on the replica, not yet scheduled;
- `utilization`: the fraction of the last interval the replica spent computing steps.

Scale-out first takes back replicas still draining (they are warm), then provisions replicas that
start serving after `cold_start_s` (weights load, CUDA graphs warm up); they are paid for from the
moment they are requested. Scale-in first cancels replicas
still starting, then drains the newest serving ones: the router stops sending them requests, they
finish what they hold, and they stop costing money at the first evaluation that finds them empty.
A scale-in only happens when every decision of the last `scale_in_window_s` asked for fewer replicas.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import simpy
from pydantic import BaseModel, ConfigDict, Field, model_validator

from simulator.common.limits import MAX_BATCH_SEQS, MAX_DURATION_S, MIN_AUTOSCALING_INTERVAL_S, Replicas


class AutoscalingConfig(BaseModel):
    """The scenario's `autoscaling:` section."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    metric: Literal["outstanding", "waiting", "utilization"] = "outstanding"
    target: float = Field(
        ..., gt=0, le=MAX_BATCH_SEQS,
        description="desired signal per replica (requests, or a fraction for utilization)",
    )  # fmt: skip
    # evaluations cost simulation time: one per interval over the whole run
    interval_s: float = Field(30.0, ge=MIN_AUTOSCALING_INTERVAL_S, le=MAX_DURATION_S)
    cold_start_s: float = Field(120.0, ge=0, le=MAX_DURATION_S)
    min_replicas: Replicas = 1
    max_replicas: Replicas = 8
    scale_in_window_s: float = Field(
        300.0, ge=0, le=MAX_DURATION_S, description="as Kubernetes' downscale stabilisation"
    )

    @model_validator(mode="after")
    def _consistent(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})")
        if self.metric == "utilization" and self.target > 1:
            raise ValueError(f"a utilization target is a fraction in (0, 1], got {self.target}")
        return self


@dataclass
class _Instance:
    replica: object  # simulator.serving.replica.Replica
    requested_at: float
    serving_at: float | None = None
    released_at: float | None = None
    draining: bool = False
    busy_mark: float = 0.0  # busy_time at the previous evaluation
    serving_periods: list = field(default_factory=list)  # [start, end or None] while the router may use it


class Autoscaler:
    """Drives `cluster`'s set of serving replicas; `make_replica(replica_id)` builds one."""

    def __init__(self, env: simpy.Environment, cluster, make_replica: Callable[[int], object],
                 config: AutoscalingConfig, initial: int):
        self.env = env
        self.cluster = cluster
        self.make_replica = make_replica
        self.config = config
        self.instances: list[_Instance] = []
        self.timeline: list[tuple[float, int, int, int, float]] = []  # time, serving, provisioned, desired, signal
        self._recent: deque[tuple[float, int]] = deque()
        cluster.set_serving([])
        for _ in range(initial):
            inst = self._provision()
            self._start_serving(inst)
        self._record(initial, math.nan)
        env.process(self._loop())

    # --- state -----------------------------------------------------------------------------
    @property
    def serving(self) -> list[_Instance]:
        return [i for i in self.instances if i.serving_at is not None and not i.draining and i.released_at is None]

    @property
    def starting(self) -> list[_Instance]:
        return [i for i in self.instances if i.serving_at is None and i.released_at is None]

    @property
    def provisioned(self) -> int:
        return sum(i.released_at is None for i in self.instances)

    def _record(self, desired: int, signal: float) -> None:
        self.timeline.append((self.env.now, len(self.serving), self.provisioned, desired, signal))

    # --- actions ---------------------------------------------------------------------------
    def _provision(self) -> _Instance:
        replica = self.make_replica(len(self.cluster.replicas))
        self.cluster.replicas.append(replica)
        inst = _Instance(replica, self.env.now)
        self.instances.append(inst)
        return inst

    def _start_serving(self, inst: _Instance) -> None:
        inst.serving_at = self.env.now
        inst.busy_mark = inst.replica.busy_time
        inst.serving_periods.append([self.env.now, None])
        self.cluster.start_serving(inst.replica)

    def _cold_start(self, inst: _Instance):
        yield self.env.timeout(self.config.cold_start_s)
        if inst.released_at is None:
            self._start_serving(inst)
            self._record(self.timeline[-1][3], math.nan)

    def _signal(self, serving: list[_Instance]) -> float:
        metric = self.config.metric
        values = []
        for inst in serving:
            sched = inst.replica.scheduler
            if metric == "outstanding":
                values.append(sched.num_waiting + sched.num_running)
            elif metric == "waiting":
                values.append(sched.num_waiting)
            else:
                window = min(self.config.interval_s, self.env.now - inst.serving_at) or 1.0
                values.append((inst.replica.busy_time - inst.busy_mark) / window)
                inst.busy_mark = inst.replica.busy_time
        return sum(values) / len(values) if values else 0.0

    def _loop(self):
        cfg, env = self.config, self.env
        while True:
            yield env.timeout(cfg.interval_s)
            for inst in self.instances:  # drained replicas that emptied stop costing money
                if inst.draining and inst.released_at is None and not inst.replica.scheduler.has_work:
                    inst.released_at = env.now
            serving = self.serving
            signal = self._signal(serving)
            wanted = math.ceil(len(serving) * signal / cfg.target - 1e-9) if serving else cfg.min_replicas
            desired = min(max(wanted, cfg.min_replicas), cfg.max_replicas)
            self._recent.append((env.now, desired))
            while self._recent[0][0] < env.now - cfg.scale_in_window_s:
                self._recent.popleft()
            current = self.provisioned - sum(i.draining for i in self.instances if i.released_at is None)
            if desired > current:
                self._scale_out(desired - current)
            elif desired < current:
                self._scale_in(current - max(d for _, d in self._recent))
            self._record(desired, signal)

    def _scale_out(self, count: int) -> None:
        for inst in self.instances:  # a draining replica is warm: take it back first
            if count > 0 and inst.draining and inst.released_at is None:
                inst.draining = False
                inst.serving_periods.append([self.env.now, None])
                self.cluster.start_serving(inst.replica)
                count -= 1
        for _ in range(count):
            self.env.process(self._cold_start(self._provision()))

    def _scale_in(self, count: int) -> None:
        for inst in reversed(self.starting):
            if count <= 0:
                return
            inst.released_at = self.env.now
            count -= 1
        for inst in reversed(self.serving):
            if count <= 0 or len(self.serving) <= 1:
                return
            inst.draining = True
            inst.serving_periods[-1][1] = self.env.now
            self.cluster.stop_serving(inst.replica)
            count -= 1

    # --- what the run reports --------------------------------------------------------------
    def replica_seconds(self, end: float) -> float:
        return sum((i.released_at if i.released_at is not None else end) - i.requested_at for i in self.instances)

    def report(self, end: float, price_per_replica_hour: float) -> dict:
        seconds = self.replica_seconds(end)
        mean = seconds / end if end > 0 else 0.0
        return {
            "metric": self.config.metric,
            "target": self.config.target,
            "replica_hours": seconds / 3600,
            "mean_replicas": mean,
            "peak_replicas": max(p for _, _, p, _, _ in self.timeline),
            "cost_usd": seconds / 3600 * price_per_replica_hour,
            "usd_per_day": mean * price_per_replica_hour * 24,
            "replicas": [
                {"replica": i.replica.id, "requested_at": i.requested_at, "released_at": i.released_at,
                 "serving_periods": i.serving_periods}
                for i in self.instances
            ],
            "timeline": [
                {"time": t, "serving": s, "provisioned": p, "desired": d, "signal": None if math.isnan(x) else x}
                for t, s, p, d, x in self.timeline
            ],
        }

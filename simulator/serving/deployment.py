"""What runs where, as plain objects: pools of identical replicas, the link between them, scaling.

A colocated deployment is one pool that runs both phases of every request; a disaggregated one
(DistServe, Splitwise) is a prefill pool and a decode pool joined by a KV link. The scenario layer
builds a `Deployment` once (simulator/scenario/build.py: specs, memory fit, step-time models,
prices); the serving layer only reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from simulator.execution import ExecutionModel
from simulator.scheduling import DeviceClass, SchedulerConfig, resolve
from simulator.serving.autoscaling import AutoscalingConfig
from simulator.spec import Parallelism

Role = Literal["colocated", "prefill", "decode"]


@dataclass(frozen=True)
class Pool:
    """Identical replicas of one model on one kind of GPU, with what their simulation needs."""

    role: Role
    replicas: int
    hardware: str  # the GPU's name, for reports
    tensor_parallel: int
    scheduler: SchedulerConfig
    router: str  # how the pool's router picks a replica
    num_blocks: int  # KV-cache blocks per replica
    max_model_len: int
    execution: ExecutionModel
    usd_per_hour: float  # all the pool's GPUs together
    swap_s_per_token: float = 0.0  # KV copy time over the host link, per token
    num_host_blocks: int = 0  # host swap space per replica, in KV blocks
    draft: ExecutionModel | None = None  # the speculative draft model's step times, on the same GPUs
    device: DeviceClass | None = None  # what the policy's default batch sizes depend on (vLLM V1's do)
    layout: Parallelism = field(default_factory=Parallelism)  # how one replica spreads over its GPUs (tensor_parallel = layout.tp)

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel if self.layout.is_plain else self.layout.gpus

    @property
    def kv_tokens_per_replica(self) -> int:
        return self.num_blocks * self.scheduler.block_size

    @property
    def speculates(self) -> bool:
        """Prefill jobs emit one token each: only pools that decode have anything to speculate."""
        return self.role != "prefill" and self.scheduler.speculative is not None

    @property
    def resolved_scheduler(self) -> SchedulerConfig:
        """The scheduler settings the pool's replicas run: unset ones at the policy's defaults."""
        return resolve(self.scheduler, self.device)

    def describe(self) -> dict:
        return {
            "replicas": self.replicas,
            "hardware": self.hardware,
            "tensor_parallel": self.tensor_parallel,
            **({} if self.layout.is_plain else {"parallelism": self.layout.as_dict()}),
            "policy": self.scheduler.policy,
            "router": self.router,
            "kv_blocks_per_replica": self.num_blocks,
            "kv_tokens_per_replica": self.kv_tokens_per_replica,
            "usd_per_hour": self.usd_per_hour,
        }


@dataclass(frozen=True)
class KVLink:
    """Time to send one request's KV cache from a prefill replica to a decode replica: each prefill
    GPU sends its own shard over its own link; transfers do not share links."""

    bandwidth: float  # bytes/s per prefill GPU
    latency: float  # s per transfer
    bytes_per_token: float  # KV bytes one prefill GPU holds per token

    def transfer_time(self, tokens: int) -> float:
        return tokens * self.bytes_per_token / self.bandwidth + self.latency


@dataclass(frozen=True)
class Deployment:
    """A whole deployment: its pools (one colocated pool, or prefill then decode), the KV link
    between two pools, and the settings of the run that serves it."""

    name: str
    model: str
    weight_dtype: str
    kv_dtype: str
    policy: str  # the deployment-wide batching policy (a pool may run its own)
    router: str  # the deployment-wide router (a pool may use its own)
    pools: tuple[Pool, ...]
    link: KVLink | None = None
    autoscaling: AutoscalingConfig | None = None
    merge_decode_steps: bool = True
    max_time_s: float | None = None  # stop the simulated clock here; None: when every request is done

    def __post_init__(self):
        roles = tuple(p.role for p in self.pools)
        if roles not in (("colocated",), ("prefill", "decode")):
            raise ValueError(f"a deployment has one colocated pool or a prefill and a decode pool, got {roles}")
        if (self.link is None) != (roles == ("colocated",)):
            raise ValueError("a KV link joins a prefill pool to a decode pool, and only those")
        if self.autoscaling is not None and roles != ("colocated",):
            raise ValueError("autoscaling scales a colocated pool")

    @property
    def colocated(self) -> bool:
        return self.link is None

    @property
    def entry(self) -> Pool:
        """The pool requests arrive at."""
        return self.pools[0]

    @property
    def max_model_len(self) -> int:
        return self.entry.max_model_len

    @property
    def usd_per_hour(self) -> float:
        return sum(p.usd_per_hour for p in self.pools)

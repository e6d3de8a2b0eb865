"""The `disaggregation:` section of a scenario: separate prefill and decode pools.

```yaml
disaggregation:
  prefill: {replicas: 2, hardware: h100-sxm, tensor_parallel: 1}
  decode:  {replicas: 2}          # unset keys default to the scenario's deployment
  link_gbps: 50                   # KV transfer bandwidth per prefill GPU, GB/s
  link_latency_us: 10
```

Each pool is a colocated deployment of its own (hardware, tensor parallelism, batching policy,
router, hence its own KV capacity and step times); dtypes and memory utilisation come from the
scenario's `deployment:`, whose `replicas` the two pools replace. Unset link settings default to
the prefill hardware's `interconnect_gbps` and `interconnect_latency_us` (NVLink when both pools
share a node, as DistServe places them; give InfiniBand or Ethernet numbers for a Splitwise-style
cross-node setup).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from simulator import spec
from simulator.common.errors import ConfigError, unknown_choice
from simulator.common.limits import Bandwidth, LatencyUs, Price, Replicas, TensorParallel
from simulator.scheduling import find_policy
from simulator.serving.routing import ROUTERS

ROLES = ("prefill", "decode")


class PoolConfig(BaseModel):
    """One pool of identical replicas; unset keys take the scenario's value."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    replicas: Replicas = 1
    hardware: str | dict[str, Any] | None = Field(
        None, description="catalog name or inline spec (an inline one is checked by Scenario.check_specs)"
    )
    tensor_parallel: TensorParallel | None = None
    policy: str | None = Field(None, description="batching policy; default scheduler.policy")
    router: str | None = Field(None, description="router within the pool; default the scenario's")
    price_per_gpu_hour: Price | None = Field(None, description="default: the pool hardware's")

    @field_validator("hardware")
    @classmethod
    def _known_hardware(cls, value):
        if isinstance(value, str):
            spec.get_hardware(value)  # ConfigError (a ValueError) names the known ones
        return value

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value):
        if value is not None:
            try:
                find_policy(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("router")
    @classmethod
    def _known_router(cls, value):
        if value is not None and value not in ROUTERS:
            raise ValueError(unknown_choice("router", value, ROUTERS))
        return value


class DisaggregationConfig(BaseModel):
    """Prefill and decode on separate replicas, the KV cache sent between them per request."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prefill: PoolConfig = PoolConfig()
    decode: PoolConfig = PoolConfig()
    link_gbps: Bandwidth | None = Field(
        None, description="GB/s each prefill GPU sends KV at; default: prefill hardware's interconnect_gbps"
    )
    link_latency_us: LatencyUs | None = Field(
        None, description="fixed time per transfer; default: prefill hardware's interconnect_latency_us"
    )

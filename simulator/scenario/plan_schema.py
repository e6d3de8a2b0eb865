"""The `plan:` section of a scenario: objectives, target load and the deployments to search.

    plan:
      slo: {p90_ttft_ms: 1000, p90_tpot_ms: 100, attainment_pct: 95}   # default: the classes' SLOs
      target: {growth: 1.5}          # or {rate: 12}: the load to plan for
      search:
        hardware: [a10g, l40s, a100-80gb, h100-sxm]
        tensor_parallel: [1, 2]
        layouts:                     # or whole layouts (replacing tensor_parallel), e.g. for MoE models:
          - {tensor_parallel: 8}
          - {data_parallel_attention: 8, expert_parallel: 8}
          - {tensor_parallel: 4, pipeline_parallel: 2}
        weight_dtype: [bf16, fp8]
        replicas: {min: 1, max: 16}
        max_num_seqs: [128, 256]     # default: the scenario's scheduler settings
        chunk_size: [512]
      seeds: 3
      n_plus_one: false              # SLOs must hold with one replica down
      confirm_longer: 4              # the answer re-simulated over a 4x longer window must hold too
      prices: {h100-sxm: 2.10}       # USD per GPU-hour; default: the hardware catalog's

The scenario's own `deployment.price_per_gpu_hour` names one GPU's price, so candidates ignore it
and use `prices` or the catalog.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from simulator import spec
from simulator.common.errors import ConfigError
from simulator.common.limits import (
    MAX_BATCH_SEQS,
    MAX_GROWTH,
    MAX_SEARCH_VALUES,
    NumRequests,
    PositivePrice,
    Rate,
    Replicas,
    Seeds,
    SloMs,
    TensorParallel,
    Tokens,
)
from simulator.common.strict_model import StrictModel
from simulator.metrics.objectives import check_slo_key

Dtype = Literal["fp32", "fp16", "bf16", "fp8", "int8", "int4", "fp4", "nvfp4", "mxfp4"]
LAYOUT_KEYS = ("tensor_parallel", "data_parallel_attention", "expert_parallel", "pipeline_parallel")


BatchSeqs = Annotated[int, Field(gt=0, le=MAX_BATCH_SEQS)]


class ReplicaRange(StrictModel):
    min: Replicas = 1
    max: Replicas = 16

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max}): the search space is empty")
        return self


def layout_label(group) -> str:
    """tp=8, or tp=1 dp=8 ep=8, for a plan row or group."""
    parts = [f"tp={int(group['tensor_parallel'])}"]
    for key, short in (("data_parallel_attention", "dp"), ("expert_parallel", "ep"), ("pipeline_parallel", "pp")):
        if int(group.get(key, 1)) > 1:
            parts.append(f"{short}={int(group[key])}")
    return " ".join(parts)


class Layout(StrictModel):
    """How one replica spreads over its GPUs (the deployment fields of the same names)."""

    tensor_parallel: TensorParallel = 1
    data_parallel_attention: TensorParallel = 1
    expert_parallel: TensorParallel = 1
    pipeline_parallel: TensorParallel = 1


class SearchSpace(StrictModel):
    """Every combination of these is a candidate deployment."""

    hardware: list[str] = Field(
        min_length=1, max_length=MAX_SEARCH_VALUES, description="GPU types from the hardware catalog"
    )
    tensor_parallel: list[TensorParallel] = Field([1], min_length=1, max_length=MAX_SEARCH_VALUES)
    layouts: list[Layout] | None = Field(
        None, min_length=1, max_length=MAX_SEARCH_VALUES,
        description="whole layouts (tensor, attention-data, expert, pipeline parallel) instead of tensor_parallel",
    )
    weight_dtype: list[Dtype] = Field(["fp16"], min_length=1)
    replicas: ReplicaRange = ReplicaRange()
    max_num_seqs: list[BatchSeqs] | None = Field(
        None, min_length=1, max_length=MAX_SEARCH_VALUES, description="default: the scenario's"
    )
    chunk_size: list[Tokens] | None = Field(
        None, min_length=1, max_length=MAX_SEARCH_VALUES, description="default: the scenario's"
    )

    @field_validator("hardware")
    @classmethod
    def _known_hardware(cls, names: list[str]) -> list[str]:
        for name in names:
            try:
                spec.get_hardware(name)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return names

    @model_validator(mode="after")
    def _layouts_or_tensor_parallel(self) -> SearchSpace:
        if self.layouts is not None and self.tensor_parallel != [1]:
            raise ValueError("give tensor_parallel or layouts (which name their own tensor_parallel), not both")
        return self

    def layout_dicts(self) -> list[dict]:
        if self.layouts is None:
            return [{"tensor_parallel": tp, "data_parallel_attention": 1, "expert_parallel": 1, "pipeline_parallel": 1}
                    for tp in self.tensor_parallel]  # fmt: skip
        return [layout.model_dump() for layout in self.layouts]

    def groups(self, max_num_seqs: int, chunk_size: int) -> list[dict]:
        """Deployment settings apart from the replica count, in a fixed order."""
        return [
            {"hardware": h, **layout, "weight_dtype": dt, "max_num_seqs": seqs, "chunk_size": chunk}
            for h, layout, dt, seqs, chunk in itertools.product(
                self.hardware,
                self.layout_dicts(),
                self.weight_dtype,
                self.max_num_seqs or [max_num_seqs],
                self.chunk_size or [chunk_size],
            )
        ]

    @property
    def replica_counts(self) -> list[int]:
        return list(range(self.replicas.min, self.replicas.max + 1))


class PlanTarget(StrictModel):
    """The load to plan for: an absolute mean rate, or the scenario's own load times a growth factor."""

    rate: Rate | None = Field(None, description="mean requests/s (sets workload.arrival.rate)")
    growth: float = Field(
        1.0, gt=0, le=MAX_GROWTH, description="multiplies the scenario's load (a trace is replayed faster)"
    )

    @model_validator(mode="after")
    def _one(self) -> PlanTarget:
        if self.rate is not None and self.growth != 1.0:
            raise ValueError(f"give rate ({self.rate}) or growth ({self.growth}), not both")
        return self


class PlanConfig(StrictModel):
    slo: dict[str, SloMs] | None = Field(
        None, description="e.g. {p90_ttft_ms: 500, p90_tpot_ms: 50, attainment_pct: 95}; default: the classes' SLOs"
    )
    target: PlanTarget = PlanTarget()
    search: SearchSpace
    seeds: Seeds = Field(3, description="every candidate is simulated with this many seeds")
    n_plus_one: bool = Field(False, description="SLOs must hold with one replica down (replicas - 1 simulated)")
    headroom_steps: int = Field(3, ge=0, le=10, description="bisection steps for the sustainable rate; 0 skips it")
    screening_requests: NumRequests | None = Field(
        None, description="search replicas on the first N requests, then verify finalists on the whole workload"
    )
    finalists: int = Field(
        3, gt=0, le=MAX_SEARCH_VALUES, description="cheapest screened candidates verified on the whole workload"
    )
    confirm_longer: float = Field(
        4.0, ge=1, le=16, description="the cheapest answers are re-simulated over a measurement window this many "
        "times as long (first seed) and must meet the SLOs there too; 1 skips it (stationary workloads only)"
    )
    prices: dict[str, PositivePrice] = Field(
        default_factory=dict, description="USD per GPU-hour by hardware name; default: the catalog's"
    )

    @field_validator("slo")
    @classmethod
    def _known_metrics(cls, slo: dict[str, float] | None) -> dict[str, float] | None:
        if slo is not None:
            if not slo:
                raise ValueError("slo is empty; name at least one objective, e.g. {p90_ttft_ms: 500}")
            for key, value in slo.items():
                check_slo_key(key)
                if key == "attainment_pct" and value > 100:
                    raise ValueError(f"attainment_pct is a percentage in (0, 100], got {value}")
        return slo

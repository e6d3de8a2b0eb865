"""The scenario schema: one YAML file that states a question (model, GPUs, policy, traffic, SLOs).

Validated with pydantic: unknown keys and bad values are rejected with the path to the field, the
value given and what is allowed. Nothing in a scenario executes code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from simulator import spec
from simulator.common.errors import ConfigError, unknown_choice
from simulator.common.limits import (
    MAX_SEED,
    MAX_STEP_OVERHEAD_S,
    MemoryGB,
    NumRequests,
    PositiveSeconds,
    Price,
    Replicas,
    TensorParallel,
)
from simulator.common.schema_errors import format_validation_error
from simulator.common.strict_model import StrictModel
from simulator.metrics.objectives import SLOTarget
from simulator.scenario.disaggregation_schema import DisaggregationConfig, PoolConfig
from simulator.scenario.plan_schema import PlanConfig
from simulator.scenario.window import MeasurementWindow
from simulator.scheduling import SchedulerConfig, find_policy
from simulator.serving.autoscaling import AutoscalingConfig
from simulator.serving.routing import ROUTERS
from simulator.workload import WorkloadConfig

# A name that is one path component: results/<name>/ can never point elsewhere.
PLAIN_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_+-]|\.(?!\.))*")

Dtype = Literal["fp32", "fp16", "bf16", "fp8", "int8", "int4", "fp4", "nvfp4", "mxfp4"]


class DeploymentSettings(StrictModel):
    """What runs where: replicas of one model, each on tensor_parallel x data_parallel_attention x
    pipeline_parallel GPUs (layouts: simulator/spec/parallel.py)."""

    replicas: Replicas = 1
    tensor_parallel: TensorParallel = 1
    data_parallel_attention: TensorParallel = Field(
        1, description="attention groups of tensor_parallel ranks, each serving its own sequences (MoE models)"
    )
    expert_parallel: TensorParallel = Field(
        1, description="ranks the routed experts spread over (whole experts per rank); 1: experts split by width"
    )
    pipeline_parallel: TensorParallel = Field(1, description="pipeline stages, each holding its share of the layers")
    micro_batches: TensorParallel | None = Field(
        None, description="micro-batches a step is split into through the stages; default: pipeline_parallel"
    )
    routing_imbalance: float = Field(
        1.0, ge=1, le=64, description="tokens the busiest expert-parallel rank receives over the mean (1: uniform)"
    )
    weight_dtype: Dtype = "fp16"
    expert_dtype: Dtype | None = Field(None, description="routed experts' dtype; default: the checkpoint's, else weight_dtype")
    kv_dtype: Dtype = "fp16"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    activation_reserve_gb: MemoryGB | None = Field(None, description="default: estimated from the model")
    price_per_gpu_hour: Price | None = Field(None, description="default: the hardware catalog's")

    @property
    def layout(self) -> spec.Parallelism:
        return spec.Parallelism(tp=self.tensor_parallel, dp=self.data_parallel_attention, ep=self.expert_parallel,
                                pp=self.pipeline_parallel)  # fmt: skip

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel * self.data_parallel_attention * self.pipeline_parallel


class EfficiencySettings(StrictModel):
    """Fractions of datasheet peaks reached (defaults from published measurements, see simulator/execution/roofline.py)."""

    memory_bandwidth: float | None = Field(None, gt=0, le=1)
    linear_compute: float | None = Field(None, gt=0, le=1)
    attention_compute: float | None = Field(None, gt=0, le=1)
    interconnect: float | None = Field(None, gt=0, le=1)


class OverheadSettings(StrictModel):
    """Host-side time per step, in seconds."""

    constant_s: float | None = Field(None, ge=0, le=MAX_STEP_OVERHEAD_S)
    per_sequence_s: float | None = Field(None, ge=0, le=MAX_STEP_OVERHEAD_S)
    per_token_s: float | None = Field(None, ge=0, le=MAX_STEP_OVERHEAD_S)


class RooflineSettings(StrictModel):
    efficiency: EfficiencySettings = EfficiencySettings()
    overhead: OverheadSettings = OverheadSettings()
    compute_dtype: Dtype | None = Field(None, description="matmul dtype; default follows the weights")


class HostOverheadSettings(StrictModel):
    """Host time around a step's kernels (see simulator/execution/kernels/overhead.py); default: the engine's."""

    step_s: float | None = Field(None, ge=0, description="CPU time per step")
    per_sequence_s: float | None = Field(None, ge=0, description="CPU time per sequence in a step")
    launch_s: float | None = Field(None, ge=0, description="host time to launch one kernel in eager mode")
    cuda_graphs: bool | None = None
    graph_max: int | None = Field(None, ge=0, description="largest step replayed as a CUDA graph")
    async_scheduling: bool | None = Field(None, description="the host prepares the next step during this one")


class Execution(StrictModel):
    """How long a step takes: measured kernel tables of the serving engine where llmsim ships them
    for the model and GPU, else the roofline model from the specs (with optional overrides), or a
    calibration file (measured, roofline or transferred; see simulator/execution/calibration_file.py)."""

    roofline: RooflineSettings = RooflineSettings()
    calibration: str | None = Field(
        None, description="calibration YAML, relative to the scenario file or the repository root"
    )
    engine: Literal["vllm", "sglang", "trtllm"] = Field("vllm", description="serving engine whose kernels run")
    engine_version: str | None = Field(None, description="its version; default: the newest with tables")
    kernel_tables: bool | str = Field(
        True, description="true: the shipped kernel tables when there are some; false: the roofline; or a file"
    )
    allreduce: Literal["custom", "nccl"] = Field("custom", description="the engine's own all-reduce, or NCCL's")
    host_overhead: HostOverheadSettings = HostOverheadSettings()

    @property
    def roofline_given(self) -> bool:
        """Roofline settings differ from the defaults (by value, so a scenario dumped and parsed
        again, as sweeps and plans send them to workers, means the same)."""
        return self.roofline != RooflineSettings()

    @model_validator(mode="after")
    def _one_step_model(self) -> Execution:
        if self.calibration is not None and self.roofline_given:
            raise ValueError("give either roofline: settings or a calibration: file, not both")
        tables_named = isinstance(self.kernel_tables, str)
        if tables_named and (self.roofline_given or self.calibration is not None):
            raise ValueError("give one of roofline: settings, a calibration: file or a kernel_tables: file")
        return self

    @property
    def uses_kernel_tables(self) -> bool:
        """Kernel tables unless turned off, or the roofline's settings or a calibration are given."""
        if self.kernel_tables is False or self.calibration is not None:
            return False
        return isinstance(self.kernel_tables, str) or not self.roofline_given


class RunSettings(StrictModel):
    max_time_s: PositiveSeconds | None = Field(
        None, description="stop the simulated clock here; default: when every request has finished"
    )
    merge_decode_steps: bool = Field(True, description="merge identical decode steps (same results, faster)")
    strict: bool = Field(
        False, description="a request clipped to the context or rejected (larger than the KV cache) is an error, "
        "not a changed or dropped request counted in the summary"
    )
    window: MeasurementWindow | None = Field(
        None, description="measure a steady state by simulated time: warm-up, window, cool-down "
        "(simulator/scenario/window.py); plan and sweep use one ({} = defaults) unless given"
    )
    stream_above: NumRequests | None = Field(
        None, description="stream runs expected to hold more requests than this: arrivals drawn lazily, records "
        "written to stream_dir in chunks, percentiles from a quantile sketch within 1% (docs/metrics.md)"
    )
    stream_dir: str | None = Field(
        None, description="folder for a streamed run's requests.csv; default: a new folder under the system's temp"
    )


class Scenario(StrictModel):
    name: str = Field("scenario", min_length=1, max_length=100,
                      description="names the results folder: letters, digits and . _ + -, no path")
    description: str = ""
    seed: int = Field(0, ge=0, le=MAX_SEED)
    model: str | dict[str, Any] = Field(..., description="catalog name or an inline model spec")
    hardware: str | dict[str, Any] = Field(..., description="catalog name or an inline hardware spec")
    deployment: DeploymentSettings = DeploymentSettings()
    scheduler: SchedulerConfig = SchedulerConfig()
    router: str = "round_robin"
    execution: Execution = Execution()
    workload: WorkloadConfig
    run: RunSettings = RunSettings()
    slo_target: SLOTarget = SLOTarget()
    plan: PlanConfig | None = None
    autoscaling: AutoscalingConfig | None = None
    disaggregation: DisaggregationConfig | None = Field(
        None, description="separate prefill and decode pools (see simulator/scenario/disaggregation_schema.py)"
    )

    base_dir: Path | None = Field(None, exclude=True, description="folder relative paths resolve against")

    @field_validator("scheduler")
    @classmethod
    def _known_policy(cls, value: SchedulerConfig) -> SchedulerConfig:
        try:
            find_policy(value.policy)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not PLAIN_NAME.fullmatch(value):
            raise ValueError(
                "a scenario name names its results folder: letters, digits and . _ + -, starting with a "
                "letter or digit (no / or \\, no ..)"
            )
        return value

    @field_validator("router")
    @classmethod
    def _known_router(cls, value: str) -> str:
        if value not in ROUTERS:
            raise ValueError(unknown_choice("router", value, ROUTERS))
        return value

    @model_validator(mode="after")
    def _one_fleet_shape(self) -> Scenario:
        if self.disaggregation is not None and self.autoscaling is not None:
            raise ValueError("disaggregation and autoscaling cannot be combined: give one of the two sections")
        if self.disaggregation is not None:
            # The pools are built from plain block managers without host swap space or drafts.
            sched = self.scheduler
            unsupported = [
                name
                for name, on in (
                    ("scheduler.enable_prefix_caching", sched.enable_prefix_caching),
                    ("scheduler.preemption_mode=swap", sched.preemption_mode == "swap"),
                    ("scheduler.speculative", sched.speculative is not None),
                )
                if on
            ]
            if unsupported:
                raise ValueError(f"{', '.join(unsupported)} cannot be combined with disaggregation yet")
        return self

    # --- resolved specs --------------------------------------------------------------------
    def model_spec(self) -> spec.ModelSpec:
        return resolve_model(self.model, "model")

    def hardware_spec(self) -> spec.HardwareSpec:
        return resolve_hardware(self.hardware, "hardware")

    def check_specs(self) -> None:
        """Resolve every catalog name and inline spec, so that a typo fails before any work starts;
        errors name the spec's place in the scenario."""
        model, hardware = self.model_spec(), self.hardware_spec()
        layout = self.deployment.layout
        if not layout.is_plain:
            layout.validate(model)
            layout.check_node(hardware.gpus_per_node, hardware.name)
        if self.disaggregation is not None:
            for role in ("prefill", "decode"):
                pool = getattr(self.disaggregation, role)
                if pool.hardware is not None:
                    resolve_hardware(pool.hardware, f"disaggregation.{role}.hardware")
        draft = self.scheduler.speculative
        if draft is not None and draft.uses_draft_model:
            where = "scheduler.speculative.draft_model"
            try:
                resolve_model(draft.draft_model, where, default_name="custom-draft")
            except ConfigError as exc:  # an inline spec's errors carry their path already
                raise ConfigError(str(exc) if isinstance(draft.draft_model, dict) else f"{where}: {exc}") from None

    def max_model_len(self) -> int:
        return self.scheduler.max_model_len or self.model_spec().max_context

    def price_per_hour(self) -> float:
        """USD per hour for the whole deployment."""
        if self.disaggregation is not None:  # both pools' GPUs
            return sum(pool_scenario(self, role).price_per_hour() for role in ("prefill", "decode"))
        per_gpu = self.deployment.price_per_gpu_hour
        if per_gpu is None:
            per_gpu = self.hardware_spec().price_per_hour
        return per_gpu * self.deployment.gpus_per_replica * self.deployment.replicas

    def with_updates(self, updates: dict[str, Any] | None = None, /, **sections: Any) -> Scenario:
        """A validated copy with changes, as dotted keys or nested sections, e.g.
        `s.with_updates({"deployment.replicas": 4})` or `s.with_updates(deployment={"replicas": 4})`.
        Nested mappings merge into the section; a bad value raises ConfigError naming the field
        (unlike `model_copy(update=...)`, which validates nothing)."""
        data = self.model_dump(mode="json")
        for key, value in {**(updates or {}), **sections}.items():
            node, parts = data, key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {}) if isinstance(node.get(part), dict | None) else None
                if node is None:
                    raise ConfigError(f"with_updates: {key!r}: {part!r} holds a value, not a section")
            _merge(node, parts[-1], value)
        try:
            out = Scenario.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, Scenario, "with_updates")) from None
        out.base_dir = self.base_dir
        out.model_spec()
        out.hardware_spec()
        return out

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() or self.base_dir is None else self.base_dir / p


def resolve_model(value: str | dict, where: str, default_name: str = "custom-model") -> spec.ModelSpec:
    """A catalog model by name, or an inline spec (a mapping with an optional `name`)."""
    if isinstance(value, str):
        return spec.get_model(value)
    data = dict(value)
    return spec.model_from_dict(_spec_name(data, where, default_name), data, where)


def resolve_hardware(value: str | dict, where: str) -> spec.HardwareSpec:
    """A catalog accelerator by name, or an inline spec (a mapping with an optional `name`)."""
    if isinstance(value, str):
        return spec.get_hardware(value)
    data = dict(value)
    return spec.hardware_from_dict(_spec_name(data, where, "custom-gpu"), data, where)


def _spec_name(data: dict, where: str, default: str) -> str:
    name = str(data.pop("name", default))
    if not 0 < len(name) <= 200:
        raise ConfigError(f"{where}.name: must be 1 to 200 characters long, got {name[:60]!r}")
    return name


def _merge(node: dict, key: str, value: Any) -> None:
    if isinstance(value, dict) and isinstance(node.get(key), dict):
        for k, v in value.items():
            _merge(node[key], k, v)
    else:
        node[key] = value


def pool_scenario(scenario: Scenario, role: Literal["prefill", "decode"]) -> Scenario:
    """One pool of a disaggregated scenario as a colocated scenario of its own."""
    pool: PoolConfig = getattr(scenario.disaggregation, role)
    dep = scenario.deployment
    same_hardware = pool.hardware is None
    price = pool.price_per_gpu_hour
    if price is None and same_hardware:
        price = dep.price_per_gpu_hour  # the deployment's price is for the scenario's hardware
    return scenario.model_copy(
        update={
            "name": f"{scenario.name}-{role}",
            "hardware": scenario.hardware if same_hardware else pool.hardware,
            "deployment": dep.model_copy(
                update={
                    "replicas": pool.replicas,
                    "tensor_parallel": pool.tensor_parallel or dep.tensor_parallel,
                    "price_per_gpu_hour": price,
                }
            ),
            # Prefix caching is not modelled across pools (an explicit true is rejected): off
            # also where the policy's default would turn it on.
            "scheduler": scenario.scheduler.model_copy(
                update={"policy": pool.policy or scenario.scheduler.policy, "enable_prefix_caching": False}
            ),
            "router": pool.router or scenario.router,
            "disaggregation": None,
        }
    )

"""Model and hardware specs written as mappings (catalog entries, or inline in a scenario), validated.

Every field is named, typed and bounded (limits in simulator.common.limits); unknown keys are
refused with a did-you-mean. A bad entry raises one `ConfigError` whose lines start with the
field's path, e.g. `hardware.memory_bandwidth_gbps: Input should be a finite number (got nan);
allowed: > 0 and <= 1e+06`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simulator.common.errors import ConfigError
from simulator.common.limits import (
    MAX_CONTEXT,
    MAX_EXPERTS,
    MAX_GPUS_PER_NODE,
    MAX_HEADS,
    MAX_LAYERS,
    MAX_MEMORY_GIB,
    MAX_PARAMS,
    MAX_ROPE_THETA,
    MAX_TFLOPS,
    MAX_TOKENS,
    MAX_VOCAB,
    MAX_WIDTH,
    Bandwidth,
    LatencyUs,
    Price,
)
from simulator.common.schema_errors import format_validation_error
from simulator.spec.dtypes import DTYPE_BYTES, GB, GiB
from simulator.spec.hardware import HardwareSpec
from simulator.spec.model import ModelSpec

Width = Annotated[int, Field(gt=0, le=MAX_WIDTH)]
Heads = Annotated[int, Field(gt=0, le=MAX_HEADS)]
Tflops = Annotated[float, Field(gt=0, le=MAX_TFLOPS, description="dense TFLOPS (TOPS for integers)")]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelFields(_Spec):
    """A decoder-only transformer of the Llama family; names as in ModelSpec."""

    num_layers: int = Field(gt=0, le=MAX_LAYERS)
    hidden_size: Width
    num_heads: Heads
    num_kv_heads: Heads
    intermediate_size: Width
    vocab_size: int = Field(gt=0, le=MAX_VOCAB)
    max_context: int = Field(ge=2, le=MAX_CONTEXT, description="prompt + output tokens")
    head_dim: int = Field(0, ge=0, le=MAX_WIDTH, description="0: hidden_size / num_heads")
    rope_theta: float = Field(10000.0, gt=0, le=MAX_ROPE_THETA)
    rms_norm_eps: float = Field(1e-5, gt=0, lt=1)
    tie_embeddings: bool = False
    attention_bias: bool = False
    # mixture of experts (ModelSpec says what each means)
    num_experts: int = Field(0, ge=0, le=MAX_EXPERTS, description="routed experts per MoE layer; 0: dense")
    num_experts_per_token: int = Field(0, ge=0, le=MAX_EXPERTS, description="top-k experts per token")
    moe_intermediate_size: int = Field(0, ge=0, le=MAX_WIDTH, description="one routed expert's MLP width")
    shared_expert_intermediate_size: int = Field(0, ge=0, le=MAX_WIDTH, description="all shared experts' width")
    first_dense_layers: int = Field(0, ge=0, le=MAX_LAYERS, description="leading layers with the dense MLP")
    # multi-head latent attention
    kv_lora_rank: int = Field(0, ge=0, le=MAX_WIDTH, description="latent width of keys and values; 0: no MLA")
    q_lora_rank: int = Field(0, ge=0, le=MAX_WIDTH, description="latent width of queries; 0: not compressed")
    qk_rope_head_dim: int = Field(0, ge=0, le=MAX_WIDTH, description="rotary part of each MLA key")
    v_head_dim: int = Field(0, ge=0, le=MAX_WIDTH, description="value head width; 0: head_dim")
    # sliding-window attention
    sliding_window: int = Field(0, ge=0, le=MAX_TOKENS, description="tokens a sliding-window layer attends to")
    num_sliding_window_layers: int = Field(0, ge=0, le=MAX_LAYERS, description="layers with the window")
    attention_sinks: bool = False
    chunked_attention: bool = False
    # details that change parameter counts and bytes, not shapes
    qk_norm: bool = False
    attention_output_bias: bool = False
    moe_bias: bool = False
    expert_dtype: Literal[("", *DTYPE_BYTES)] = Field("", description="routed experts' checkpoint dtype; '': the weights'")
    num_mtp_layers: int = Field(0, ge=0, le=MAX_LAYERS, description="multi-token-prediction layers (not loaded)")
    encoder_params: int = Field(0, ge=0, le=MAX_PARAMS, description="vision encoder parameters loaded with the model")
    source: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> ModelFields:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.head_dim == 0 and self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_heads ({self.num_heads}); "
                "give head_dim"
            )
        if self.num_experts and not 1 <= self.num_experts_per_token <= self.num_experts:
            raise ValueError(
                f"num_experts_per_token ({self.num_experts_per_token}) must be in 1..num_experts ({self.num_experts})"
            )
        if self.num_experts and self.moe_intermediate_size == 0:
            raise ValueError("moe_intermediate_size must be > 0 when num_experts > 0")
        if self.first_dense_layers > self.num_layers or self.num_sliding_window_layers > self.num_layers:
            raise ValueError(
                f"first_dense_layers and num_sliding_window_layers must be <= num_layers ({self.num_layers})"
            )
        if self.num_sliding_window_layers and self.sliding_window == 0:
            raise ValueError("sliding_window must be >= 1 token when num_sliding_window_layers > 0")
        return self


class TflopsFields(_Spec):
    """Dense peak throughput per compute dtype; a dtype left out runs at the 16-bit rate."""

    fp32: Tflops | None = None
    fp16: Tflops | None = None
    bf16: Tflops | None = None
    fp8: Tflops | None = None
    int8: Tflops | None = None
    int4: Tflops | None = None
    fp4: Tflops | None = Field(None, description="NVFP4/MXFP4 tensor cores (Blackwell)")

    @model_validator(mode="after")
    def _has_a_base_rate(self) -> TflopsFields:
        if self.fp16 is None and self.bf16 is None and self.fp32 is None:
            raise ValueError(
                "tflops must give fp16 or bf16 (the rate other dtypes fall back to), "
                "or fp32 for a processor that computes in fp32 only"
            )
        return self


class HardwareFields(_Spec):
    """One accelerator, in the catalog's units (see data/hardware.yaml)."""

    memory_gib: float = Field(gt=0, le=MAX_MEMORY_GIB, description="device memory, GiB")
    memory_bandwidth_gbps: Bandwidth
    tflops: TflopsFields
    interconnect_gbps: Bandwidth
    interconnect_latency_us: LatencyUs = 5.0
    host_link_gbps: Bandwidth = 25.0
    internode_gbps: Bandwidth = Field(50.0, description="per GPU per direction between nodes")
    gpus_per_node: int = Field(8, gt=0, le=MAX_GPUS_PER_NODE, description="GPUs on one NVLink domain")
    price_per_hour: Price = 0.0
    source: str = ""


def _validated(fields: type[_Spec], data, where: str, what: str) -> _Spec:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {what} must be a mapping of fields to values, got {type(data).__name__}")
    try:
        return fields.model_validate(data)
    except ValidationError as exc:
        prefix = tuple(where.split("."))
        raise ConfigError(format_validation_error(exc, fields, where, what=what, prefix=prefix)) from None


def model_from_dict(name: str, data: dict, where: str = "model") -> ModelSpec:
    """A ModelSpec from a mapping of its fields; `where` is the mapping's path in errors."""
    fields = _validated(ModelFields, data, where, f"model spec {name!r}")
    return ModelSpec(name=name, **fields.model_dump())


def hardware_from_dict(name: str, data: dict, where: str = "hardware") -> HardwareSpec:
    """A HardwareSpec from a mapping in the catalog's units; `where` is its path in errors."""
    hw = _validated(HardwareFields, data, where, f"hardware spec {name!r}")
    return HardwareSpec(
        name=name,
        memory_bytes=hw.memory_gib * GiB,
        memory_bandwidth=hw.memory_bandwidth_gbps * GB,
        flops={k: v * 1e12 for k, v in hw.tflops.model_dump(exclude_none=True).items()},
        interconnect_bandwidth=hw.interconnect_gbps * GB,
        interconnect_latency=hw.interconnect_latency_us * 1e-6,
        host_link_bandwidth=hw.host_link_gbps * GB,
        internode_bandwidth=hw.internode_gbps * GB,
        gpus_per_node=hw.gpus_per_node,
        price_per_hour=hw.price_per_hour,
        source=hw.source,
    )

"""Scheduler settings shared by the simulator and the real engine (same keys in both).

A setting left unset (None) takes its policy's default: see policy_defaults.py, where every
default that depends on the policy (or, for vLLM V1, on the device) is resolved.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from simulator.common.limits import MAX_BATCH_SEQS, MAX_BLOCK_SIZE, MAX_MEMORY_GIB, MAX_TOKENS
from simulator.scheduling.policy_defaults import policy_setting_errors
from simulator.scheduling.speculative import SpeculativeConfig

POLICY_DEFAULT = "default: the policy's (simulator/scheduling/policy_defaults.py)"


class SchedulerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    policy: str = Field("vllm", description="batching policy, a name from the policy registry")
    max_num_seqs: int | None = Field(None, gt=0, le=MAX_BATCH_SEQS, description=f"most sequences in one step; {POLICY_DEFAULT}")
    max_num_batched_tokens: int | None = Field(
        None,
        gt=0,
        le=MAX_TOKENS,
        description="most new tokens in one step; default for vllm: vLLM V1's for the device, "
        "otherwise max(max_model_len, 2048)",
    )
    block_size: int = Field(16, gt=0, le=MAX_BLOCK_SIZE, description="tokens per KV-cache block")
    watermark: float | None = Field(
        None, ge=0, lt=1, description=f"fraction of blocks admissions leave free; {POLICY_DEFAULT}"
    )
    max_model_len: int | None = Field(None, gt=0, le=MAX_TOKENS, description="longest prompt + output; default the model's")
    chunk_size: int = Field(512, gt=0, le=MAX_TOKENS, description="prefill token budget per step of sarathi (vllm uses "
                            "max_num_batched_tokens)")  # fmt: skip
    preemption_mode: Literal["recompute", "swap"] = Field(
        "recompute",
        description="what a preempted sequence loses: its KV (recompute) or nothing, its blocks being "
        "copied to host memory and back (swap; recompute when the swap space is full; not with vllm)",
    )
    swap_space_gb: float = Field(4.0, ge=0, le=MAX_MEMORY_GIB, description="host memory for swapped KV blocks, GiB per GPU")
    enable_prefix_caching: bool | None = Field(
        None, description=f"share the KV blocks of equal prompt prefixes; {POLICY_DEFAULT} (on for vllm)"
    )
    speculative: SpeculativeConfig | None = Field(None, description="speculative decoding; off by default")
    # vLLM V1 only (policy vllm); unset for every other policy.
    long_prefill_token_threshold: int | None = Field(
        None, ge=0, le=MAX_TOKENS, description="vllm: most tokens one request computes in a step when others wait or "
        "run (0: no cap, the default)",
    )  # fmt: skip
    scheduler_reserve_full_isl: bool | None = Field(
        None, description="vllm: admit a request only if its whole prompt fits in the free KV blocks, "
        "not just its first chunk (default on)",
    )  # fmt: skip
    async_scheduling: bool | None = Field(
        None, description="vllm: schedule the next step while the current one runs (default on); recorded "
        "only: llmsim's step times do not model the overlap (docs/vllm_v1.md)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _settings_fit_the_policy(self) -> SchedulerConfig:
        errors = policy_setting_errors(self)
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def token_budget(self, max_model_len: int) -> int:
        return self.max_num_batched_tokens or max(max_model_len, 2048)

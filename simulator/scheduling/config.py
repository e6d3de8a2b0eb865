"""Scheduler settings shared by the simulator and the real engine (same keys in both)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from simulator.common.limits import MAX_BATCH_SEQS, MAX_BLOCK_SIZE, MAX_MEMORY_GIB, MAX_TOKENS
from simulator.scheduling.speculative import SpeculativeConfig


class SchedulerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    policy: str = Field("vllm", description="batching policy, a name from the policy registry")
    max_num_seqs: int = Field(256, gt=0, le=MAX_BATCH_SEQS, description="most sequences in one step")
    max_num_batched_tokens: int | None = Field(
        None, gt=0, le=MAX_TOKENS, description="most new tokens in one step; default max(max_model_len, 2048)"
    )
    block_size: int = Field(16, gt=0, le=MAX_BLOCK_SIZE, description="tokens per KV-cache block")
    watermark: float = Field(0.01, ge=0, lt=1, description="fraction of blocks admissions leave free")
    max_model_len: int | None = Field(
        None, gt=0, le=MAX_TOKENS, description="longest prompt + output; default the model's"
    )
    chunk_size: int = Field(
        512, gt=0, le=MAX_TOKENS, description="prefill token budget per step, chunked-prefill policies"
    )
    preemption_mode: Literal["recompute", "swap"] = Field(
        "recompute",
        description="what a preempted sequence loses: its KV (recompute) or nothing, its blocks being "
        "copied to host memory and back (swap; recompute when the swap space is full)",
    )
    swap_space_gb: float = Field(
        4.0, ge=0, le=MAX_MEMORY_GIB, description="host memory for swapped KV blocks, GiB per GPU"
    )
    enable_prefix_caching: bool = Field(False, description="share the KV blocks of equal prompt prefixes")
    speculative: SpeculativeConfig | None = Field(None, description="speculative decoding; off by default")

    def token_budget(self, max_model_len: int) -> int:
        return self.max_num_batched_tokens or max(max_model_len, 2048)

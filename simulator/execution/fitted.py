"""A step-time model fitted to measurements of a real engine (`llmsim calibrate` writes its numbers).

The shape is physical, so that a dozen coefficients describe a device and a model well enough to
predict steps that were never measured:

    step = overhead_s + overhead_per_sequence_s x seqs + overhead_per_token_s x tokens
         + smax(layer weight bytes / weight_bandwidth,  layer FLOPs per token x tokens / matmul_flops)
         + smax(LM head bytes / weight_bandwidth,       LM head FLOPs per sequence x seqs / matmul_flops)
         + prefill_attention_s_per_pair  x  sum over prefill rows of new x (cached + (new + 1) / 2)
         + decode_attention_s_per_token  x  sum over decode rows of (cached + 1)
         + decode_padding_s_per_token    x  (decode rows x longest decode context - that sum)
         + decode_spill_s_per_token      x  hinge(decode rows x longest decode context - attention_cache_tokens)

smax(a, b) = (a^p + b^p)^(1/p), p = knee_sharpness: a linear layer streams its weights once per
step (memory-bound at small batches) or multiplies every token through them (compute-bound at
large ones); the smooth maximum bends between the two as real kernels do. A step of at most
work.matvec_max_tokens new tokens runs matrix-vector kernels, which stream weights at their own
speed: its weight-read times are scaled by matvec_read_factor (the CPU backend's native kernels
take steps of up to 4 tokens, at about half the time per byte of its larger matmuls; 1 token
and about 0.75 before them). Steps of at most work.small_matmul_max_tokens tokens (32 on the CPU
backend, 0 elsewhere) run the engine's small-matrix kernels, whose FLOP/s are matmul_flops x
small_matmul_flops_factor. A row with one new token
is a decode; the padding term prices engines whose batched decode attention pads every row to the
longest context (the CPU backend does; paged GPU kernels fit it to about zero). The spill term
prices a batched decode attention whose padded K/V working set outgrows the processor's caches:
past attention_cache_tokens padded slots per step each further slot costs more (on the CPU
backend about twice as much past 14k slots for llama-20m, 1.5x past 6k for llama-100m); hinge is
a smooth max(0, x). Calibrations without it (GPU
fits, older files) have decode_spill_s_per_token = 0.

A mixture of experts adds, per step, the routed experts its tokens reach (the layer terms above
then hold attention, dense MLPs, shared experts and routers, all of which every token passes):

    + smax(expert bytes x D / weight_bandwidth,  tokens x k x expert FLOPs per token / matmul_flops)
    + moe_overhead_per_expert_s x D x MoE layers

with D = E (1 - (1 - k/E)^tokens) the expected number of distinct experts of E that tokens
routed to k each reach in one layer (uniform, independent routing), so a step reads D experts'
weights per layer, one token reaches k, a large batch all E. Each touched expert multiplies its
tokens x k / D rows alone, so the matrix-vector and small-matrix rates above apply by that row
count. The overhead is the engine's per-expert work (gathering rows, launching its matmuls);
like the per-token overhead against compute, it grows with what the expert reads grow with, so a
fit pins their sum per touched expert rather than the split. Dense calibrations have no experts
and these terms are zero.

Coefficients carry physical units (bytes/s, FLOP/s, seconds), so a fit can be read as achieved
bandwidth and compute, and transferred to other hardware (calibration/fitting/transfer.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from simulator.spec import ModelSpec, dtype_bytes


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Coefficients(_Strict):
    """The fitted numbers, in SI units."""

    overhead_s: float = Field(..., ge=0, description="per step: scheduling, input tensors, launches")
    overhead_per_sequence_s: float = Field(..., ge=0, description="per row: sampling, bookkeeping")
    overhead_per_token_s: float = Field(..., ge=0, description="per new token: embedding, norms, rotary")
    weight_bandwidth: float = Field(..., gt=0, description="achieved bytes/s streaming weights")
    matmul_flops: float = Field(..., gt=0, description="achieved FLOP/s of the linear layers")
    prefill_attention_s_per_pair: float = Field(..., ge=0, description="per query-key pair of prefill rows")
    decode_attention_s_per_token: float = Field(..., ge=0, description="per KV token a decode row reads")
    decode_padding_s_per_token: float = Field(..., ge=0, description="per KV slot of decode padding")
    matvec_read_factor: float = Field(
        1.0,
        gt=0,
        description="weight-read time of steps of at most work.matvec_max_tokens tokens, relative to larger ones",
        validation_alias=AliasChoices("matvec_read_factor", "one_token_read_factor"),  # the older name
    )
    knee_sharpness: float = Field(..., ge=1, description="p of the smooth maximum; large p is a sharp knee")
    decode_spill_s_per_token: float = Field(
        0.0, ge=0, description="extra per padded decode KV slot past attention_cache_tokens"
    )
    attention_cache_tokens: float = Field(
        16384.0, gt=0, description="padded decode KV slots per step past which attention leaves the caches"
    )
    small_matmul_flops_factor: float = Field(
        1.0,
        gt=0,
        description="FLOP/s of steps of at most work.small_matmul_max_tokens tokens, relative to matmul_flops",
    )
    moe_overhead_per_expert_s: float = Field(
        0.0, ge=0, description="per routed expert a step touches in each MoE layer: gathering rows, launches"
    )

    @classmethod
    def names(cls) -> list[str]:
        return list(cls.model_fields)

    def vector(self) -> np.ndarray:
        return np.array([getattr(self, name) for name in self.names()], dtype=np.float64)

    @classmethod
    def from_vector(cls, values) -> Coefficients:
        return cls(**{name: float(v) for name, v in zip(cls.names(), values)})


class StepWork(_Strict):
    """What one forward pass of the model moves and computes, from its spec and weight dtype."""

    layer_weight_bytes: float = Field(..., gt=0)
    lm_head_weight_bytes: float = Field(..., gt=0)
    layer_flops_per_token: float = Field(..., gt=0)
    lm_head_flops_per_sequence: float = Field(..., gt=0)
    attention_flops_per_pair: float = Field(..., gt=0, description="QK^T and PV FLOPs per query-key pair")
    kv_bytes_per_token: float = Field(..., gt=0)
    matvec_max_tokens: int = Field(
        1, ge=1, description="the engine runs steps of at most this many new tokens with matrix-vector kernels"
    )
    small_matmul_max_tokens: int = Field(
        0, ge=0, description="and steps of at most this many with its small-matrix kernels (0: none)"
    )
    # mixture of experts: all zero for a dense model
    moe_layers: int = Field(0, ge=0, description="layers whose feed-forward is a mixture of experts")
    num_experts: int = Field(0, ge=0, description="routed experts per MoE layer")
    experts_per_token: int = Field(0, ge=0, description="routed experts each token reaches (top-k)")
    expert_weight_bytes: float = Field(0.0, ge=0, description="one routed expert's bytes, summed over MoE layers")
    expert_flops_per_token: float = Field(
        0.0, ge=0, description="FLOPs of one token through one routed expert, summed over MoE layers"
    )

    def expected_experts(self, tokens) -> np.ndarray:
        """Expected distinct experts per MoE layer that `tokens` tokens reach, k each of E."""
        if not self.num_experts:
            return np.zeros_like(np.asarray(tokens, dtype=np.float64))
        miss = 1.0 - self.experts_per_token / self.num_experts
        return self.num_experts * (1.0 - miss ** np.asarray(tokens, dtype=np.float64))

    @classmethod
    def from_spec(
        cls,
        model: ModelSpec,
        weight_dtype: str,
        kv_dtype: str,
        matvec_max_tokens: int = 1,
        small_matmul_max_tokens: int = 0,
    ) -> StepWork:
        head_dtype = "fp16" if model.tie_embeddings else weight_dtype
        head_bytes = model.lm_head_params * dtype_bytes(head_dtype)
        common = {
            "lm_head_weight_bytes": head_bytes,
            "lm_head_flops_per_sequence": model.lm_head_flops_per_token(),
            "attention_flops_per_pair": model.attention_flops(1, 1),
            "kv_bytes_per_token": model.kv_bytes_per_token(kv_dtype),
            "matvec_max_tokens": matvec_max_tokens,
            "small_matmul_max_tokens": small_matmul_max_tokens,
        }
        if model.is_moe:
            return cls(**common, **_moe_work(model, dtype_bytes(weight_dtype)))
        return cls(
            layer_weight_bytes=model.streamed_weight_bytes(weight_dtype) - head_bytes,
            layer_flops_per_token=model.linear_flops_per_token(),
            **common,
        )


def _moe_work(model: ModelSpec, weight_bytes: float) -> dict:
    """StepWork's layer and expert terms of a mixture of experts, from the spec's primary fields:
    every token passes attention, the leading dense MLPs, each MoE layer's router and shared
    experts (a shared expert's one-row gate, where a family has one, is negligible); a routed
    expert is a gated MLP of moe_intermediate_size."""
    h, layers = model.hidden_size, model.num_moe_layers
    passed = (
        model.num_layers * model.attention_params_per_layer
        + model.first_dense_layers * 3 * h * model.intermediate_size
        + layers * (h * model.num_experts + 3 * h * model.shared_expert_intermediate_size)
    )
    expert = 3 * h * model.moe_intermediate_size
    return {
        "layer_weight_bytes": passed * weight_bytes,
        "layer_flops_per_token": 2.0 * passed,
        "moe_layers": layers,
        "num_experts": model.num_experts,
        "experts_per_token": model.num_experts_per_token,
        "expert_weight_bytes": expert * layers * weight_bytes,
        "expert_flops_per_token": 2.0 * expert * layers,
    }


class MeasuredRange(_Strict):
    """The largest steps measured; a step beyond any of them is an extrapolation."""

    max_batched_tokens: int = Field(..., gt=0, description="new tokens in one step")
    max_num_seqs: int = Field(..., gt=0, description="rows in one step")
    max_context: int = Field(..., gt=0, description="cached + new tokens of one row")
    max_kv_tokens: int = Field(..., gt=0, description="cached + new tokens summed over a step's rows")


@dataclass(frozen=True)
class StepFeatures:
    """What the model needs to know about steps, one entry per step (arrays of equal shape)."""

    seqs: np.ndarray
    tokens: np.ndarray
    prefill_pairs: np.ndarray
    decode_tokens: np.ndarray
    decode_padding: np.ndarray
    max_context: np.ndarray
    kv_tokens: np.ndarray

    @classmethod
    def of(cls, new_tokens, cached_tokens) -> StepFeatures:
        """From (..., rows) arrays of new and cached tokens; rows with no new tokens are padding."""
        new = np.asarray(new_tokens, dtype=np.float64)
        cached = np.asarray(cached_tokens, dtype=np.float64)
        active, decode, prefill = new > 0, new == 1, new > 1
        context = np.where(active, cached + new, 0.0)
        decode_context = np.where(decode, context, 0.0)
        decode_tokens = decode_context.sum(axis=-1)
        return cls(
            seqs=active.sum(axis=-1).astype(np.float64),
            tokens=new.sum(axis=-1),
            prefill_pairs=np.where(prefill, new * (cached + (new + 1) / 2), 0.0).sum(axis=-1),
            decode_tokens=decode_tokens,
            decode_padding=decode.sum(axis=-1) * decode_context.max(axis=-1) - decode_tokens,
            max_context=context.max(axis=-1),
            kv_tokens=context.sum(axis=-1),
        )


def smooth_max(a: np.ndarray, b: np.ndarray, p: float) -> np.ndarray:
    """(a^p + b^p)^(1/p) for a, b >= 0, computed without overflow."""
    top = np.maximum(a, b)
    safe = np.where(top > 0, top, 1.0)
    return np.where(top > 0, safe * ((a / safe) ** p + (b / safe) ** p) ** (1.0 / p), 0.0)


def soft_hinge(x: np.ndarray, knee: float) -> np.ndarray:
    """A smooth max(0, x - knee), bending over about a quarter of the knee on either side."""
    width = knee / 8.0
    return width * np.logaddexp(0.0, (x - knee) / width)


def predict(coefficients: np.ndarray, work: StepWork, f: StepFeatures) -> np.ndarray:
    """Seconds per step for a coefficient vector in `Coefficients.names()` order."""
    (c0, c_seq, c_tok, bandwidth, peak, a_pre, a_dec, a_pad, matvec, p, a_spill, cache, small,
     c_expert) = coefficients  # fmt: skip
    read = np.where(f.tokens <= work.matvec_max_tokens, matvec, 1.0) / bandwidth
    flops = np.where(f.tokens <= work.small_matmul_max_tokens, small * peak, peak)
    linear = smooth_max(
        read * work.layer_weight_bytes,
        f.tokens * (work.layer_flops_per_token / flops),
        p,
    )
    head = smooth_max(
        read * work.lm_head_weight_bytes,
        f.seqs * (work.lm_head_flops_per_sequence / flops),
        p,
    )
    total = (
        c0
        + c_seq * f.seqs
        + c_tok * f.tokens
        + linear
        + head
        + a_pre * f.prefill_pairs
        + a_dec * f.decode_tokens
        + a_pad * f.decode_padding
    )
    if a_spill > 0:
        padded = f.decode_tokens + f.decode_padding
        total = total + a_spill * np.where(padded > 0, soft_hinge(padded, cache), 0.0)
    if work.moe_layers:
        total = total + _routed_experts(work, f.tokens, bandwidth, peak, matvec, small, p, c_expert)
    return np.where(f.tokens > 0, total, 0.0)


def _routed_experts(work: StepWork, tokens, bandwidth, peak, matvec, small, p, c_expert) -> np.ndarray:
    """Seconds of the routed experts of a step of `tokens` new tokens (see the module's docstring)."""
    touched = work.expected_experts(tokens)
    assignments = tokens * work.experts_per_token
    rows = assignments / np.maximum(touched, 1e-9)  # tokens each touched expert multiplies
    read = np.where(rows <= work.matvec_max_tokens, matvec, 1.0) / bandwidth
    flops = np.where(rows <= work.small_matmul_max_tokens, small * peak, peak)
    experts = smooth_max(
        read * touched * work.expert_weight_bytes,
        assignments * (work.expert_flops_per_token / flops),
        p,
    )
    return experts + c_expert * touched * work.moe_layers


class FittedModel:
    """An ExecutionModel from a measured calibration (see `simulator.execution.calibration_file`)."""

    provenance = "measured"

    def __init__(
        self,
        coefficients: Coefficients,
        work: StepWork,
        measured_range: MeasuredRange,
        description: dict | None = None,
    ):
        self.coefficients, self.work, self.measured_range = coefficients, work, measured_range
        self._vector = coefficients.vector()
        self._description = description or {}

    def _times(self, new, cached) -> np.ndarray:
        return predict(self._vector, self.work, StepFeatures.of(new, cached))

    # --- ExecutionModel ------------------------------------------------------------------------
    def step_time(self, new_tokens: np.ndarray, cached_tokens: np.ndarray) -> float:
        return float(self._times(np.atleast_1d(new_tokens), np.atleast_1d(cached_tokens)))

    def decode_run_times(self, cached_tokens: np.ndarray, num_steps: int) -> np.ndarray:
        cached = np.atleast_1d(np.asarray(cached_tokens, dtype=np.float64))
        out = np.empty(num_steps)
        chunk = max(1, 1_000_000 // max(1, cached.size))  # bound the (steps, rows) grid
        for start in range(0, num_steps, chunk):
            steps = np.arange(start, min(start + chunk, num_steps), dtype=np.float64)[:, None]
            grid = cached[None, :] + steps
            out[start : start + len(steps)] = self._times(np.ones_like(grid), grid)
        return out

    def is_extrapolated(self, new_tokens: np.ndarray, cached_tokens: np.ndarray) -> bool:
        f = StepFeatures.of(np.atleast_1d(new_tokens), np.atleast_1d(cached_tokens))
        r = self.measured_range
        return bool(
            f.tokens > r.max_batched_tokens
            or f.seqs > r.max_num_seqs
            or f.max_context > r.max_context
            or f.kv_tokens > r.max_kv_tokens
        )

    def describe(self) -> dict:
        return {
            "provenance": self.provenance,
            **self._description,
            "coefficients": self.coefficients.model_dump(),
            "measured_range": self.measured_range.model_dump(),
        }

"""The roofline step-time model: from specs alone, each part of the forward pass takes the longer
of its memory time and its compute time at derated peaks, plus a per-step overhead."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from simulator.spec import HardwareSpec, ModelSpec, compute_dtype_for, dtype_bytes
from simulator.spec.memory import ACTIVATION_BYTES, kv_bytes_per_token_per_gpu, streamed_weight_bytes_per_gpu


def decode_run_grid(price, cached_tokens: np.ndarray, num_steps: int) -> np.ndarray:
    """Times of `num_steps` consecutive decode steps of rows at `cached_tokens`, priced by
    `price(new, cached)` over a (steps, rows) grid, chunked to bound memory on long runs."""
    cached = np.atleast_1d(np.asarray(cached_tokens, dtype=np.float64))
    out = np.empty(num_steps)
    chunk = max(1, 1_000_000 // max(1, cached.size))
    for start in range(0, num_steps, chunk):
        steps = np.arange(start, min(start + chunk, num_steps), dtype=np.float64)[:, None]
        grid = cached[None, :] + steps
        out[start : start + len(steps)] = price(np.ones_like(grid), grid)
    return out


@dataclass(frozen=True)
class RooflineEfficiency:
    """Fractions of datasheet peaks that real serving kernels reach.

    memory_bandwidth: gpt-fast measures 1397 GB/s of 2039 (69%) for Llama-2-7B batch-1 decode on
        A100-80GB; tuned GEMV/attention kernels (TensorRT-LLM, vLLM with CUDA graphs) report
        70-85%. 0.75 sits in that range.
    linear_compute: large bf16 cuBLAS GEMMs reach 70-80% of dense peak on A100/H100; whole
        prefill passes, with smaller projections and fused epilogues, about 50-65%. 0.6.
    attention_compute: FlashAttention-2 forward reaches 50-73% of A100 peak (Dao, 2023). 0.5,
        the low end, since serving mixes short and ragged sequences.
    interconnect: nccl-tests all_reduce bus bandwidth reaches about 75-85% of the NVLink
        per-direction peak for large messages. 0.75.
    """

    memory_bandwidth: float = 0.75
    linear_compute: float = 0.60
    attention_compute: float = 0.50
    interconnect: float = 0.75


@dataclass(frozen=True)
class StepOverhead:
    """Host-side time per step: scheduling, input preparation, sampling and launches.

    Order-of-magnitude defaults for an engine replaying CUDA graphs (vLLM batch-1 decode runs
    within about 0.5 ms of its bandwidth bound); a measured calibration replaces them.
    """

    constant_s: float = 5e-4
    per_sequence_s: float = 1e-5  # sampling and bookkeeping per row
    per_token_s: float = 0.0  # input tensors scale with tokens but cost little next to the GPU work


class RooflineModel:
    """Step time from model and hardware specs, per tensor-parallel rank.

    step = overhead
         + linear layers:  max(weight bytes / bandwidth, 2 x params x tokens / peak)
         + LM head:        max(head bytes / bandwidth, FLOPs for one position per sequence / peak)
         + attention:      per row, max(KV bytes read / bandwidth, causal QK^T and PV FLOPs / peak)
         + all-reduce:     2 per layer, ring: 2(tp-1)/tp x tokens x hidden x 2 bytes / link
                           + 2(tp-1) hops x latency
    Peaks are derated by `efficiency`. Activation traffic is ignored: at small batches the weight
    and KV reads dominate, at large ones the step is compute-bound anyway.
    """

    provenance = "roofline"

    def __init__(
        self,
        model: ModelSpec,
        hardware: HardwareSpec,
        *,
        tp: int = 1,
        weight_dtype: str = "fp16",
        kv_dtype: str = "fp16",
        compute_dtype: str | None = None,
        efficiency: RooflineEfficiency = RooflineEfficiency(),
        overhead: StepOverhead = StepOverhead(),
        notice: str = "",
    ):
        self.model, self.hardware, self.tp = model, hardware, tp
        self.weight_dtype, self.kv_dtype = weight_dtype, kv_dtype
        self.compute_dtype = compute_dtype or compute_dtype_for(weight_dtype)
        self.efficiency, self.overhead = efficiency, overhead
        self.notice = notice  # why a better-grounded model was not used, e.g. no kernel tables for this GPU
        dtype_bytes(self.compute_dtype)  # reject unknown dtypes early

        bandwidth = hardware.memory_bandwidth * efficiency.memory_bandwidth
        linear_peak = hardware.peak_flops(self.compute_dtype) * efficiency.linear_compute
        # Attention runs in 16 bits even with fp8/int8 weights or an fp8 KV cache (dequantised).
        attention_peak = hardware.peak_flops("fp16") * efficiency.attention_compute

        head_bytes = model.lm_head_params / tp * (2.0 if model.tie_embeddings else dtype_bytes(weight_dtype))
        layer_bytes = streamed_weight_bytes_per_gpu(model, weight_dtype, tp) - head_bytes
        # Seconds per unit, so that a step is a few multiply-adds over numpy arrays.
        self._layer_read_s = layer_bytes / bandwidth
        self._layer_s_per_token = model.linear_flops_per_token() / tp / linear_peak
        self._head_read_s = head_bytes / bandwidth
        self._head_s_per_seq = model.lm_head_flops_per_token() / tp / linear_peak
        self._kv_s_per_token = kv_bytes_per_token_per_gpu(model, kv_dtype, tp) / bandwidth
        self._attn_s_per_query_key = model.attention_flops(1, 1) / tp / attention_peak
        if tp > 1:
            link = hardware.interconnect_bandwidth * efficiency.interconnect
            ring = 2 * (tp - 1)
            per_reduce_s_per_token = ring / tp * model.hidden_size * ACTIVATION_BYTES / link
            self._allreduce_s_per_token = 2 * model.num_layers * per_reduce_s_per_token
            self._allreduce_fixed_s = 2 * model.num_layers * ring * hardware.interconnect_latency
        else:
            self._allreduce_s_per_token = self._allreduce_fixed_s = 0.0

    # --- the model, over arrays shaped (steps, rows) -----------------------------------------
    def _terms(self, new: np.ndarray, cached: np.ndarray) -> dict[str, np.ndarray]:
        """Seconds per term for each step (row axis last). Rows with no new tokens are padding."""
        new = np.asarray(new, dtype=np.float64)
        cached = np.asarray(cached, dtype=np.float64)
        active = new > 0
        tokens = new.sum(axis=-1)
        seqs = active.sum(axis=-1)
        any_work = tokens > 0
        oh = self.overhead

        linear_memory = np.where(any_work, self._layer_read_s, 0.0)
        linear_compute = tokens * self._layer_s_per_token
        head = np.where(any_work, np.maximum(self._head_read_s, seqs * self._head_s_per_seq), 0.0)
        # Causal attention: the new tokens see the cache plus, on average, half of themselves.
        kv_read = np.where(active, (cached + new) * self._kv_s_per_token, 0.0)
        attn_math = new * (cached + (new + 1) / 2) * self._attn_s_per_query_key
        allreduce = np.where(any_work, tokens * self._allreduce_s_per_token + self._allreduce_fixed_s, 0.0)
        return {
            "overhead": oh.constant_s + seqs * oh.per_sequence_s + tokens * oh.per_token_s,
            "linear": np.maximum(linear_memory, linear_compute),
            "lm_head": head,
            "attention": np.maximum(kv_read, attn_math).sum(axis=-1),
            "allreduce": allreduce,
            "linear_memory": linear_memory,
            "linear_compute": linear_compute,
        }

    @staticmethod
    def _total(terms: dict[str, np.ndarray]) -> np.ndarray:
        return (
            terms["overhead"] + terms["linear"] + terms["lm_head"] + terms["attention"] + terms["allreduce"]
        )

    # --- ExecutionModel ------------------------------------------------------------------------
    def step_time(self, new_tokens: np.ndarray, cached_tokens: np.ndarray) -> float:
        return float(self._total(self._terms(np.atleast_1d(new_tokens), np.atleast_1d(cached_tokens))))

    def decode_run_times(self, cached_tokens: np.ndarray, num_steps: int) -> np.ndarray:
        return decode_run_grid(lambda new, cached: self._total(self._terms(new, cached)), cached_tokens, num_steps)

    def is_extrapolated(self, new_tokens: np.ndarray, cached_tokens: np.ndarray) -> bool:
        return False  # a roofline has no fitted range

    # --- reporting ---------------------------------------------------------------------------
    def roofline_breakdown(self, new_tokens, cached_tokens) -> dict[str, float]:
        """Seconds per term of one step. `total` is overhead + linear + lm_head + attention +
        allreduce; `linear_memory` and `linear_compute` are the two sides of the linear max."""
        terms = self._terms(np.atleast_1d(new_tokens), np.atleast_1d(cached_tokens))
        out = {name: float(value) for name, value in terms.items()}
        out["total"] = float(self._total(terms))
        return out

    def describe(self) -> dict:
        out = {
            "provenance": self.provenance,
            "model": self.model.name,
            "hardware": self.hardware.name,
            "tp": self.tp,
            "weight_dtype": self.weight_dtype,
            "kv_dtype": self.kv_dtype,
            "compute_dtype": self.compute_dtype,
            "efficiency": asdict(self.efficiency),
            "overhead": asdict(self.overhead),
            "sources": {
                "model": self.model.source,
                "hardware": self.hardware.source,
                "efficiency": "gpt-fast A100 decode bandwidth; cuBLAS GEMM and FlashAttention-2 "
                "(Dao 2023) fractions of peak; nccl-tests bus bandwidth",
            },
        }
        if self.notice:
            out["notice"] = self.notice
        return out

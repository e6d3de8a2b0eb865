"""The linear layer every matmul of the model goes through, and the gated MLP built from it.

On CPU, fp32 matmuls of up to 32 rows take the native kernels and larger ones oneDNN; elsewhere
torch's own. The MLP's gate and up projections share one matmul (`gate_up_proj`, gate rows
first); a mixture-of-experts layer's experts and shared expert are the same MLP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from backend import native

__all__ = ["MLP", "Linear", "linear", "native_fp32", "silu_and_mul"]


# On CPU, fp32 matmuls run through oneDNN (as torch.compile's CPU backend does): on CPUs where the
# default BLAS takes a generic code path (MKL on AMD), it streams weights two to three times faster.
_ONEDNN_FP32 = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def native_fp32(x: torch.Tensor) -> bool:
    """Whether a [rows, features] fp32 CPU tensor can take the native kernels."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == 2 and native.available()


# oneDNN builds (JIT-compiles) a kernel for each new row count and caches it by shape; the first
# call at a count costs as much again as the matmul (an expert's MLP at 33-400 rows: +1.3-3 ms)
# and leaves fresh code pages. A mixture of experts gives each expert a new row count every
# step, so serving paid that per expert and layer while a profile, repeating its shapes, did not.
# Padding the rows to a few bucket sizes (as GPU MoE kernels pad each expert to their block size)
# keeps the row counts oneDNN sees few and compiled, for at most 1/8 more rows past 128.
_BUCKETS_PER_OCTAVE = 8
_MIN_BUCKET_STEP = 16


def padded_rows(rows: int, x: torch.Tensor) -> int:
    """The row count to run `rows` rows of `x`'s kind at: on CPU in fp32 past the native kernel's
    32 rows, the next multiple of max(16, 2^floor(log2 rows) / 8); elsewhere `rows`."""
    if rows <= native.MAX_ROWS or not (_ONEDNN_FP32 and native_fp32(x)):
        return rows
    step = max(_MIN_BUCKET_STEP, (1 << (rows.bit_length() - 1)) // _BUCKETS_PER_OCTAVE)
    return -(-rows // step) * step


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    if x.dtype == torch.float32 and x.device.type == "cpu":
        # Up to 32 rows (decode batches, short chunks) the native kernel beats oneDNN: at 1-4 it
        # streams the weight faster, beyond it tiles the FMAs better than the small-M sgemm.
        if (
            x.dim() == 2
            and 0 < x.shape[0] <= native.MAX_ROWS
            and weight.dtype == torch.float32
            and weight.is_contiguous()
            and native.available()
        ):
            return native.skinny_linear(x, weight, bias)
        if _ONEDNN_FP32:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [None], "")
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for [rows, 2 x width] holding gate columns first."""
    if native_fp32(gate_up):
        return native.silu_mul(gate_up)
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


class MLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, dtype: torch.dtype):
        super().__init__()
        self.gate_up_proj = Linear(hidden_size, 2 * intermediate_size, bias=False, dtype=dtype)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=False, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(silu_and_mul(self.gate_up_proj(x)))

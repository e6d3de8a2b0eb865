"""Int8 weight-only quantisation of the linear layers, and weight byte counts.

Each output channel (weight row) gets one symmetric scale, max|w| / 127; the weight is stored as
int8 and dequantised inside the matmul. Where torch has a fused int8-weight kernel
(`aten._weight_int8pack_mm`) it is used; elsewhere the fallback converts the int8 weight to the
activation dtype for an ordinary matmul and applies the scales to the output columns.

On CPU the fused kernel is only fast for bf16 activations (its fp32 path is a scalar loop), so
there it always runs in bf16: fp32 or fp16 activations are rounded to bf16 for the matmul and the
result is cast back. This adds bf16 rounding of the activations to the int8 rounding of the
weights; both are well under a percent. The fused kernel serves small batches (decode); larger
inputs dequantise the weight for an ordinary matmul.
"""

from __future__ import annotations

import torch
from torch import nn

from backend.model import linear

_HAS_INT8PACK = hasattr(torch.ops.aten, "_weight_int8pack_mm")


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8: returns (int8 weight [N, K], fp32 scale [N]) with weight ~ q * scale."""
    w = weight.float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(nn.Module):
    """A linear layer with int8 weights and one scale per output channel.

    The fused kernel is a matrix-vector kernel: its cost grows with every input row, so past
    FUSED_MAX_ROWS rows (prefill chunks, large batches) the weight is dequantised instead and an
    ordinary matmul runs, which is faster there.
    """

    FUSED_MAX_ROWS = 32

    def __init__(
        self,
        weight: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor | None,
        kernel: str,
        dtype: torch.dtype,
    ):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.kernel = kernel  # "int8pack" or "dequant"
        self.register_buffer("weight", weight.contiguous())
        self.register_buffer("scale", scale.to(dtype))  # in the model's dtype, for the dequantised path
        self.register_buffer("bias", bias)
        # The fused kernel takes activations and scales in one dtype: bf16 on CPU (see above).
        self.fused_dtype = torch.bfloat16 if weight.device.type == "cpu" else dtype
        self.register_buffer("fused_scale", scale.to(self.fused_dtype), persistent=False)

    @classmethod
    def from_linear(cls, layer: nn.Linear, kernel: str = "auto") -> Int8Linear:
        weight, scale = quantize_weight(layer.weight.detach())
        dtype, device = layer.weight.dtype, layer.weight.device
        if kernel == "auto":
            kernel = "int8pack" if _int8pack_works(device, dtype, layer.in_features) else "dequant"
        bias = None if layer.bias is None else layer.bias.detach().clone()
        return cls(weight, scale, bias, kernel, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        if self.kernel == "int8pack" and x2.shape[0] <= self.FUSED_MAX_ROWS:
            y = torch.ops.aten._weight_int8pack_mm(x2.to(self.fused_dtype), self.weight, self.fused_scale)
            y = y.to(x.dtype)
        else:
            y = linear(x2, self.weight.to(x.dtype)) * self.scale
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"


def _int8pack_works(device: torch.device, dtype: torch.dtype, in_features: int) -> bool:
    if not _HAS_INT8PACK:
        return False
    if device.type == "cpu":
        # The vectorised CPU kernel reads the reduction dimension in steps of 16 and crashes
        # (rather than raising) on other widths, so those are never tried.
        return in_features % 16 == 0
    if dtype not in (torch.bfloat16, torch.float16):
        return False
    try:  # other devices raise a RuntimeError for what they do not support
        w = torch.zeros(16, in_features, dtype=torch.int8, device=device)
        torch.ops.aten._weight_int8pack_mm(
            torch.zeros(1, in_features, dtype=dtype, device=device),
            w,
            torch.ones(16, dtype=dtype, device=device),
        )
        return True
    except RuntimeError:
        return False


def quantize_int8(model: nn.Module, kernel: str = "auto") -> nn.Module:
    """Replace every nn.Linear of `model` (in place) by an Int8Linear; returns the model.

    A tied LM head is the embedding table, not an nn.Linear, and stays in the model's dtype.
    kernel: "auto" (fused int8 kernel where it works), "int8pack" or "dequant".
    """
    if kernel not in ("auto", "int8pack", "dequant"):
        raise ValueError(f"unknown int8 kernel {kernel!r}; use auto, int8pack or dequant")
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, Int8Linear.from_linear(child, kernel))
    return model


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None or t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def weight_bytes(model: nn.Module, linear_only: bool = False) -> int:
    """Bytes of the model's weights (shared tensors counted once; rotary tables are not weights).

    With linear_only, only the linear layers (nn.Linear and Int8Linear: weights, scales, biases).
    """
    if linear_only:
        linears = [m for m in model.modules() if isinstance(m, (nn.Linear, Int8Linear))]
        return _tensor_bytes(t for m in linears for t in m.state_dict().values())
    return _tensor_bytes(model.state_dict().values())

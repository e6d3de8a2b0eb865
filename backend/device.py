"""Which device and dtype the backend runs on, from the short names users type ("auto", "bf16")."""

from __future__ import annotations

import torch

from simulator.common.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}

_SHORT_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" picks the first CUDA GPU when there is one, the CPU otherwise."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but torch sees no CUDA GPU")
    return resolved


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """ "fp32", "bf16" or "fp16" (or a torch dtype among those) as a torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _SHORT_NAMES:
            raise ConfigError(f"unsupported dtype {dtype}; allowed: fp32, bf16, fp16")
        return dtype
    try:
        return DTYPES[dtype.lower()]
    except (KeyError, AttributeError):
        raise ConfigError(f"unknown dtype {dtype!r}; allowed: fp32, bf16, fp16") from None


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a torch dtype, as the simulator's specs spell it ("fp32", "bf16", "fp16")."""
    return _SHORT_NAMES[resolve_dtype(dtype)]

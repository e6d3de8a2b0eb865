"""Storage dtypes: bytes per element, and the matmul dtype a weight dtype runs at."""

from __future__ import annotations

from simulator.common.errors import ConfigError

# Bytes per element of each storage dtype the simulator knows.
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}

GB = 1e9
GiB = 2**30


def dtype_bytes(dtype: str) -> float:
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPE_BYTES)}") from None


def compute_dtype_for(weight_dtype: str) -> str:
    """The matmul dtype a deployment runs at for given weights.

    fp8 weights run as W8A8 on fp8 tensor cores (as vLLM serves fp8 checkpoints); int8 and int4
    are weight-only schemes (AWQ, GPTQ, bitsandbytes) that dequantise to 16 bits for the matmul.
    """
    return {"fp8": "fp8", "fp32": "fp32"}.get(weight_dtype, "fp16")

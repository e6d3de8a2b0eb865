"""Storage dtypes: bytes per element, and the matmul dtype a weight dtype runs at."""

from __future__ import annotations

from simulator.common.errors import ConfigError

# Bytes per element of each storage dtype the simulator knows. The 4-bit float formats carry
# their block scales: NVFP4 stores one fp8 (e4m3) scale per 16 elements (4 + 8/16 = 4.5 bits),
# MXFP4 (OCP microscaling) one e8m0 scale per 32 elements (4 + 8/32 = 4.25 bits); the per-tensor
# fp32 scale of NVFP4 is negligible. `fp4` is NVFP4 under the name Blackwell datasheets use.
# gpt-oss-120b checks the MXFP4 figure: 114.7B expert parameters x 4.25 bits + 2.1B 16-bit
# parameters = 60.7 GiB, the 60.8 GiB checkpoint of its model card.
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
    "fp4": 4.5 / 8,
    "nvfp4": 4.5 / 8,
    "mxfp4": 4.25 / 8,
}
FP4_DTYPES = ("fp4", "nvfp4", "mxfp4")

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
    4-bit float weights run on fp4 tensor cores where the chip has them (Blackwell: NVFP4 W4A4);
    elsewhere `HardwareSpec.peak_flops` falls back to 16 bits, as Hopper's W4A16 kernels run.
    """
    if weight_dtype in FP4_DTYPES:
        return "fp4"
    return {"fp8": "fp8", "fp32": "fp32"}.get(weight_dtype, "fp16")

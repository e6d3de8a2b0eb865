"""Carry a measured calibration to other hardware: efficiencies measured here, peaks from the catalog.

A fit says how fast this engine streamed weights and multiplied matrices on the profiled device;
divided by that device's measured peaks (the profiler measures them) these become fractions of
peak. The roofline model applies the fractions to another catalog GPU's datasheet peaks.

What does not transfer, and why the result is a rough estimate (the file says so):
- kernel efficiency differs between a CPU and a GPU (oneDNN vs cuBLAS/FlashAttention kernels) and
  between GPU generations (Hopper kernels reach a smaller fraction of a much larger peak unless
  written for it), so the fractions are a starting point, not a measurement of the target;
- host overheads (Python scheduling, kernel launches, CUDA graphs) belong to the engine and host,
  not to the device: the target gets the roofline's default GPU-engine overheads instead.
"""

from __future__ import annotations

from dataclasses import asdict

from simulator.common.errors import ConfigError
from simulator.execution import RooflineEfficiency, StepOverhead
from simulator.execution.calibration_file import (
    Calibration,
    EfficiencySection,
    OverheadSection,
    RooflineSection,
)
from simulator.execution.fitted import Coefficients, StepWork
from simulator.spec import get_hardware, get_model

EXPECTED_ERROR = (
    "rough: efficiencies measured on {source} applied to {target}'s datasheet peaks. Expect errors of "
    "a factor of 1.5-3 from a CPU profile (CPU and GPU kernels reach different fractions of peak) and "
    "20-50% between GPU generations; host overheads do not transfer (roofline defaults are used). "
    "Profile the target to replace it."
)


def effective_rates(c: Coefficients, work: StepWork) -> dict[str, float]:
    """Achieved rates of a fit, per-token overhead included in the linear layers' compute.

    A per-token overhead and compute-bound matmuls both grow with tokens, and a fit may split
    them either way; their sum is what the data pins down, so the compute rate counts both.
    """
    per_token_s = c.overhead_per_token_s + work.layer_flops_per_token / c.matmul_flops
    rates = {
        "weight_bandwidth": c.weight_bandwidth,
        "linear_flops": work.layer_flops_per_token / per_token_s,
        "kv_read_bandwidth": (
            work.kv_bytes_per_token / c.decode_attention_s_per_token
            if c.decode_attention_s_per_token
            else 0.0
        ),
        "attention_flops": (
            work.attention_flops_per_pair / c.prefill_attention_s_per_pair
            if c.prefill_attention_s_per_pair
            else 0.0
        ),
    }
    return rates


def efficiencies(cal: Calibration) -> tuple[RooflineEfficiency, dict]:
    """Fractions of the profiled device's measured peaks that the fit achieved (capped at 1)."""
    if cal.provenance != "measured":
        raise ConfigError(f"transfer needs a measured calibration; this one is {cal.provenance}")
    peaks = cal.source.get("measured_peaks") or {}
    bandwidth, flops = peaks.get("memory_bandwidth"), peaks.get("matmul_flops")
    if not bandwidth or not flops:
        raise ConfigError(
            "transfer needs the profiled device's measured peaks (source.measured_peaks: memory_bandwidth "
            "and matmul_flops), which `llmsim profile` records; this calibration has none"
        )
    rates = effective_rates(cal.fitted.coefficients, cal.fitted.work)
    raw = {
        "memory_bandwidth": rates["weight_bandwidth"] / bandwidth,
        "linear_compute": rates["linear_flops"] / flops,
        # no prefill attention term fitted: assume attention runs as efficiently as the matmuls
        "attention_compute": (rates["attention_flops"] or rates["linear_flops"]) / flops,
    }
    capped = {name: round(min(1.0, max(value, 1e-3)), 4) for name, value in raw.items()}
    efficiency = RooflineEfficiency(interconnect=RooflineEfficiency.interconnect, **capped)
    detail = {
        "measured_peaks": {"memory_bandwidth": bandwidth, "matmul_flops": flops},
        "achieved": {name: round(value, 1) for name, value in rates.items()},
        "fractions_before_cap": {name: round(value, 4) for name, value in raw.items()},
    }
    return efficiency, detail


def transfer(
    cal: Calibration,
    target_hardware: str,
    *,
    target_model: str | None = None,
    target_dtype: str = "bf16",
    source_path: str = "",
) -> Calibration:
    """A `transferred` calibration: the fit's efficiencies on `target_hardware`'s catalog peaks."""
    hardware = get_hardware(target_hardware)
    model = get_model(target_model or cal.model)
    if target_dtype not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"--target-dtype: got {target_dtype!r}; allowed: fp32, bf16, fp16")
    efficiency, detail = efficiencies(cal)
    overhead = StepOverhead()
    source = {
        "method": "efficiencies of a measured fit (achieved / measured peak) applied to the target's "
        "datasheet peaks by the roofline model; overheads are the roofline's GPU-engine defaults",
        "from_calibration": source_path,
        "from_model": cal.model,
        "from_device": cal.device,
        "from_dtype": cal.dtype,
        "from_measurements": cal.source.get("measurements"),
        "target_hardware_source": hardware.source,
        **detail,
    }
    return Calibration(
        model=model.name,
        hardware=hardware.name,
        device=f"{hardware.name} (not measured)",
        dtype=target_dtype,
        quantization=cal.quantization,
        provenance="transferred",
        roofline=RooflineSection(
            efficiency=EfficiencySection(**asdict(efficiency)),
            overhead=OverheadSection(**asdict(overhead)),
        ),
        expected_error=EXPECTED_ERROR.format(source=cal.device or cal.hardware, target=hardware.name),
        source=source,
    )

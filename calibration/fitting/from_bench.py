"""`llmsim calibrate --from-bench`: a step-time model from `llmsim bench` runs of any server.

The runs' request intervals become sums of steps of the server's scheduler (bench_observations.py:
vLLM V1's mixed steps under one token budget by default, or prefill-first steps), and the
step-time model's coefficients are fitted to them (bench_fit.py), those the runs cannot
identify fixed at their physical prior and reported so.

Hardware: a catalog name, `cpu` (a generic CPU host, see CPU_HOST), a path to a YAML file with a
hardware spec, or an inline spec (a YAML mapping) in the catalog's units; only the physical
priors come from it, and scenarios use its name.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from calibration.fitting.bench_fit import (
    NAMES,
    NOT_IDENTIFIABLE,
    BenchFit,
    fit,
    measured_range,
    roofline_prior,
)
from calibration.fitting.bench_observations import POLICIES, observations, read_bench
from simulator.common.errors import ConfigError
from simulator.execution.calibration_file import Calibration, FittedSection
from simulator.execution.fitted import StepWork
from simulator.scheduling.policy_defaults import DeviceClass, serving_batch_defaults
from simulator.spec import HardwareSpec, ModelSpec

__all__ = ["calibrate_from_bench", "observations", "read_bench", "resolve_hardware", "roofline_prior", "run_cli"]

# `--hardware cpu`: a CPU server's priors, about one core of a current server CPU (the project's
# AMD EPYC measured 42 GB/s streaming reads and 0.24 TFLOP/s fp32 matmul on one thread). Only
# coefficients the runs cannot identify take these values.
CPU_HOST = {
    "name": "cpu-host",
    "memory_gib": 16.0,
    "memory_bandwidth_gbps": 40.0,
    "tflops": {"fp32": 0.25, "fp16": 0.25, "bf16": 0.25},
    "interconnect_gbps": 10.0,
    "source": "llmsim's generic CPU host for --from-bench priors (one core of a server CPU)",
}


def resolve_hardware(value: str) -> HardwareSpec:
    """A catalog name, `cpu`, a YAML file holding a hardware spec, or an inline YAML mapping."""
    from simulator.common.yaml_reader import parse_yaml, read_yaml_file
    from simulator.scenario.schema import resolve_hardware as from_scenario_value
    from simulator.spec import hardware_from_dict

    text = value.strip()
    if text.lower() == "cpu":
        data = dict(CPU_HOST)
        return hardware_from_dict(data.pop("name"), data, "--hardware cpu")
    if text.startswith("{") or ("\n" in text and ":" in text):
        data = parse_yaml(text, "--hardware")
    elif text.endswith((".yaml", ".yml")) or Path(text).is_file():
        if not Path(text).is_file():
            raise ConfigError(f"--hardware: no file {text!r}")
        data = read_yaml_file(text, "--hardware")
    else:
        return from_scenario_value(text, "--hardware")
    if not isinstance(data, dict):
        raise ConfigError(f"--hardware: an inline spec must be a mapping of fields to values, got {type(data).__name__}")
    return from_scenario_value(data, "--hardware")


def default_budget(hardware: HardwareSpec) -> int:
    """vLLM V1's max_num_batched_tokens for the device, as `vllm serve` picks it."""
    is_cpu = hardware.name.startswith("cpu")
    return serving_batch_defaults(DeviceClass(hardware.name, hardware.memory_bytes / 2**30, is_cpu=is_cpu))[0]


def calibrate_from_bench(
    dirs: list[str | Path],
    *,
    model: ModelSpec,
    hardware: HardwareSpec,
    dtype: str = "fp16",
    quantization: str | None = None,
    policy: str = "vllm",
    max_num_batched_tokens: int | None = None,
) -> tuple[Calibration, BenchFit]:
    """Fit a measured calibration from `llmsim bench` result folders of a server running `policy`
    (vLLM V1 `vllm`, or prefill-first `vllm-v0`) with a token budget of `max_num_batched_tokens`
    per step (default: V1's for the hardware)."""
    if not dirs:
        raise ConfigError("--from-bench: give at least one results folder")
    weight_dtype = quantization or dtype
    budget = max_num_batched_tokens or default_budget(hardware)
    obs = observations(read_bench(dirs), policy, budget)
    if obs.info["ttft_observations"] < 3:
        raise ConfigError(
            f"--from-bench: only {obs.info['ttft_observations']} requests arrived to an idle server, too few to "
            "fit the prefill cost; add a low-rate run (e.g. llmsim bench --rate 0.2 --num-requests 30)"
        )
    if obs.info["decode_observations"] < 3:
        raise ConfigError(
            "--from-bench: fewer than 3 requests with 2 or more output tokens; nothing to fit decode on"
        )
    work = StepWork.from_spec(model, weight_dtype, dtype)
    result = fit(obs, work, roofline_prior(model, hardware, weight_dtype, dtype))
    errors = result.error_summary()
    cal = Calibration(
        model=model.name,
        hardware=hardware.name,
        device=f"measured through its HTTP API (scheduler {policy}"
        + (f", {budget} tokens per step)" if policy == "vllm" else ")"),
        dtype=dtype,
        quantization=quantization,
        provenance="measured",
        fitted=FittedSection(
            coefficients=result.coefficients,
            work=work,
            measured_range=measured_range(obs),
            fit_error={"method": "in-sample relative error of the fitted intervals", **errors},
        ),
        expected_error=(
            "fitted to request intervals measured by a client, not to timed steps: TTFT of idle arrivals "
            f"within {errors.get('ttft', {}).get('median_abs_pct', '?')}% and decode spans within "
            f"{errors.get('decode', {}).get('median_abs_pct', '?')}% (median, in sample); coefficients fixed "
            "at roofline values are guesses"
        ),
        source={
            "method": "llmsim calibrate --from-bench",
            "runs": [str(d) for d in dirs],
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "observations": obs.info,
            "fixed_from_roofline": result.fixed,
            "host_overhead_per_step": {k: getattr(result.coefficients, k) for k in ("overhead_s", "overhead_per_sequence_s")},
            "relative_standard_error": {k: round(v, 4) for k, v in result.relative_se.items()},
            "ttft_offset_s": result.ttft_offset_s,
            "ttft_offset_note": "time in an idle TTFT outside any engine step (HTTP, tokenisation); "
            "the simulator does not add it",
            "roofline_reference": f"{hardware.name} datasheet with llmsim's default efficiencies",
        },
    )
    return cal, result


def run_cli(args) -> int:
    """`llmsim calibrate --from-bench DIR... --model NAME --hardware NAME --out FILE.yaml`."""
    from simulator.common.files import write_text_atomic
    from simulator.spec import get_model

    if getattr(args, "measurements", None) or getattr(args, "transfer_to", None):
        raise ConfigError("--from-bench fits bench results: give no measurements file and no --transfer-to with it")
    if not args.model:
        raise ConfigError("--model: give the catalog name of the served model (its shapes price each step)")
    if not getattr(args, "hardware", None):
        raise ConfigError(
            "--hardware: give the server's hardware: a catalog name, cpu, a YAML file or an inline YAML "
            "mapping (priors for what the runs cannot identify, and the name scenarios use)"
        )
    dtype = getattr(args, "dtype", None) or "fp16"
    if dtype not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"--dtype: got {dtype!r}; allowed: fp32, bf16, fp16")
    policy = getattr(args, "policy", None) or "vllm"
    if policy not in POLICIES:
        raise ConfigError(f"--policy: got {policy!r}; allowed with --from-bench: {', '.join(POLICIES)}")
    model, hardware = get_model(args.model), resolve_hardware(args.hardware)
    cal, result = calibrate_from_bench(args.from_bench, model=model, hardware=hardware, dtype=dtype,
                                       quantization=getattr(args, "quantization", None), policy=policy,
                                       max_num_batched_tokens=getattr(args, "max_num_batched_tokens", None))  # fmt: skip
    out = Path(args.out) if args.out else Path(f"{model.name}-{hardware.name}-from-bench.yaml")
    header = (
        f"# Calibration of {model.name} on {hardware.name} from `llmsim bench` runs of a server "
        "(`llmsim calibrate --from-bench`).\n# Use it from a scenario with execution: {calibration: PATH}\n"
    )
    write_text_atomic(out, header + cal.to_yaml())
    info = result.observations.info
    print(
        f"fitted {len(NAMES) - len(result.fixed)} of {len(NAMES)} coefficients to "
        f"{info['ttft_observations']} idle TTFTs and {info['decode_observations']} decode spans "
        f"from {info['runs']} run(s), as {info['policy']} steps"
        + (f" ({info['mixed_steps']} mixed, budget {info['max_num_batched_tokens']} tokens)" if info["policy"] == "vllm" else "")
    )
    for name, value in result.coefficients.model_dump().items():
        why = result.fixed.get(name, "")
        note = (f" fixed ({NOT_IDENTIFIABLE}): physical prior" if NOT_IDENTIFIABLE in why
                else " fixed: physical prior" if why else f" (±{result.relative_se[name]:.0%})")  # fmt: skip
        print(f"  {name:32s} {value:.4g}{note}")
    for kind, err in result.error_summary().items():
        print(
            f"  {kind}: median |error| {err['median_abs_pct']}%, p90 {err['p90_abs_pct']}% over {err['points']} points"
        )
    c = result.coefficients
    print(f"  per-step host overhead: {c.overhead_s * 1000:.3f} ms + {c.overhead_per_sequence_s * 1e6:.1f} us per "
          "sequence" + (" (fixed)" if "overhead_s" in result.fixed else ""))
    print(f"  TTFT time outside engine steps (not simulated): {result.ttft_offset_s * 1000:.2f} ms")
    print(f"calibration: {out}")
    return 0

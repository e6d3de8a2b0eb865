"""`llmsim calibrate`: fit the step-time model of simulator/execution/fitted.py to a measurements file.

The fit minimises relative errors (a 1 ms step matters as much as a 1 s one) with
`scipy.optimize.least_squares`, a soft-L1 loss (steps slowed by other processes on the machine
pull less than in plain least squares), coefficients bounded to physical values, and several
starting points around the measured peaks (the knee makes the problem non-convex). Its accuracy
is estimated honestly: k-fold cross-validation, each point predicted by a fit that never saw it,
reported as mean absolute percentage error per region.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from calibration.fitting.transfer import effective_rates
from calibration.measure.measurements import REGIONS, Measurements, load_measurements
from simulator.common.errors import ConfigError
from simulator.common.files import write_text_atomic
from simulator.execution.calibration_file import REPO_ROOT, Calibration, FittedSection
from simulator.execution.fitted import Coefficients, MeasuredRange, StepFeatures, StepWork, predict
from simulator.spec import get_model

LONG_STEP_S = 0.005  # the accuracy target applies to steps longer than this
TARGET_MAPE = 5.0
MAX_KNEE_SHARPNESS = 16.0
MAX_OVERHEAD_SHARE = 0.25  # of the fastest measured step
# Where padded decode attention may leave the caches: the fit starts in the middle
DEFAULT_CACHE_TOKENS = 16384.0
MIN_CACHE_TOKENS, MAX_CACHE_TOKENS = 1024.0, 1048576.0
_SPILL = Coefficients.names().index("decode_spill_s_per_token")
_SMALL = Coefficients.names().index("small_matmul_flops_factor")
_EXPERT = Coefficients.names().index("moe_overhead_per_expert_s")


def _subset(f: StepFeatures, index) -> StepFeatures:
    return StepFeatures(*(getattr(f, name)[index] for name in StepFeatures.__dataclass_fields__))


def initial_guess(f: StepFeatures, times: np.ndarray, work: StepWork, meta: dict) -> np.ndarray:
    """Starting coefficients from the measured peaks, or from the data when there are none."""
    fastest = float(times.min())
    bandwidth = meta.get("measured_memory_bandwidth") or (
        (work.layer_weight_bytes + work.lm_head_weight_bytes) / fastest
    )
    largest = int(np.argmax(f.tokens))
    flops = meta.get("measured_matmul_flops") or (
        f.tokens[largest] * work.layer_flops_per_token / times[largest]
    )
    return np.array(
        [
            0.1 * fastest,
            1e-3 * fastest,
            0.0,
            0.7 * bandwidth,
            0.7 * flops,
            work.attention_flops_per_pair / (0.5 * flops),
            work.kv_bytes_per_token / (0.5 * bandwidth),
            work.kv_bytes_per_token / bandwidth,
            1.0,
            4.0,
            0.0,
            DEFAULT_CACHE_TOKENS,
            1.0,
            0.0,
        ]
    )


def _expert_scale(f: StepFeatures, times: np.ndarray, work: StepWork) -> float:
    """A per-expert overhead of order one in these units: the fastest step shared by every expert
    a one-token step touches in all MoE layers."""
    return float(times.min()) / max(1.0, work.experts_per_token * work.moe_layers)


def fit_coefficients(
    f: StepFeatures, times: np.ndarray, work: StepWork, x0: np.ndarray, spill: bool = True
) -> np.ndarray:
    """Least-squares coefficients (in `Coefficients.names()` order) from several starting points;
    without `spill` the decode attention spill term is held at zero.

    Some terms look alike to the data (a per-token overhead and compute-bound matmuls both grow
    with tokens past the knee); the split between them is whatever fits best, so read achieved
    FLOP/s through `calibration.fitting.transfer.effective_rates`, which adds them back together.
    """
    fastest = float(times.min())
    # Optimise dimensionless values z = x / scale, each of order one at the start.
    scale = np.array(
        [
            fastest,
            fastest / max(1.0, f.seqs.max()),
            fastest / max(1.0, f.tokens.max()),
            x0[3],
            x0[4],
            x0[5],
            x0[6],
            x0[7],
            1.0,
            1.0,
            x0[7] if x0[7] > 0 else work.kv_bytes_per_token / x0[3],
            DEFAULT_CACHE_TOKENS,
            1.0,
            _expert_scale(f, times, work),
        ]
    )
    lower = np.array([0, 0, 0, 1e-3, 1e-3, 0, 0, 0, 0.2, 1.0, 0, MIN_CACHE_TOKENS / DEFAULT_CACHE_TOKENS, 0.1, 0])
    upper = np.array(
        [np.inf] * 8 + [2.0, MAX_KNEE_SHARPNESS, np.inf, MAX_CACHE_TOKENS / DEFAULT_CACHE_TOKENS, 10.0, np.inf]
    )
    # A fixed cost per step (scheduling, launches) is a small part of the fastest step; left free it
    # trades against the weight-read term, which small steps share, and reads as a slow host.
    upper[0] = MAX_OVERHEAD_SHARE * fastest / scale[0]
    if not spill:
        upper[_SPILL] = 1e-12  # least_squares needs lower < upper; this is zero for every purpose
    if work.small_matmul_max_tokens == 0:  # no such kernels: the factor means nothing, keep it at 1
        lower[_SMALL], upper[_SMALL] = 1.0, 1.0 + 1e-12
    if not work.moe_layers:  # a dense model touches no experts
        upper[_EXPERT] = 1e-12

    def residuals(z):
        return predict(z * scale, work, f) / times - 1.0

    best = None
    for bw_factor, flops_factor in ((1, 1), (0.3, 0.3), (3, 3), (0.3, 3), (3, 0.3)):
        start = x0 / scale
        start[3] *= bw_factor
        start[4] *= flops_factor
        start[_SPILL] = 0.0
        result = least_squares(
            residuals, np.clip(start, lower, upper), bounds=(lower, upper), loss="soft_l1", f_scale=0.05
        )
        if best is None or result.cost < best.cost:
            best = result
    return best.x * scale


def fold_indices(regions: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Fold number of each point: shuffled within each region, so every fold sees every region."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(regions), dtype=int)
    for region in np.unique(regions):
        members = rng.permutation(np.flatnonzero(regions == region))
        fold[members] = np.arange(len(members)) % folds
    return fold


def cross_validated(
    f: StepFeatures,
    times: np.ndarray,
    regions: np.ndarray,
    work: StepWork,
    x0: np.ndarray,
    folds: int,
    spill: bool = True,
) -> np.ndarray:
    """Each point's prediction from a fit on the other folds."""
    fold = fold_indices(regions, folds)
    held_out = np.empty_like(times)
    for k in range(folds):
        test = fold == k
        x = fit_coefficients(_subset(f, ~test), times[~test], work, x0, spill)
        held_out[test] = predict(x, work, _subset(f, test))
    return held_out


def percentage_errors(times, predicted, regions, min_time: float = 0.0) -> dict[str, float | None]:
    """Mean absolute percentage error per region and over all, for steps longer than min_time."""
    error = np.abs(predicted / times - 1.0) * 100
    out: dict[str, float | None] = {}
    for name in (*REGIONS, "all"):
        keep = (times > min_time) & ((regions == name) | (name == "all"))
        out[name] = round(float(error[keep].mean()), 2) if keep.any() else None
    return out


@dataclass
class FitResult:
    coefficients: Coefficients
    work: StepWork
    measured_range: MeasuredRange
    fit_error: dict
    predicted: np.ndarray
    held_out: np.ndarray


def fit_measurements(m: Measurements, work: StepWork, folds: int = 5) -> FitResult:
    if folds < 2:
        raise ConfigError(f"--folds: got {folds}; allowed: 2 or more")
    f, times, regions = m.features(), m.times, m.regions
    if folds > len(times):
        raise ConfigError(f"--folds: got {folds}, more than the {len(times)} measured steps")
    x0 = initial_guess(f, times, work, m.meta)
    # The spill term needs decode steps on both sides of the cache knee; a sweep without them
    # leaves it free to bend predictions wildly. Keep it only when it predicts held-out steps better.
    held = {spill: cross_validated(f, times, regions, work, x0, folds, spill) for spill in (False, True)}
    mape = {spill: float(np.mean(np.abs(held[spill] / times - 1.0)) * 100) for spill in held}
    spill = mape[True] < mape[False]
    x = fit_coefficients(f, times, work, x0, spill)
    predicted = predict(x, work, f)
    held_out = held[spill]
    long = times > LONG_STEP_S
    long_mape = percentage_errors(times, held_out, regions, LONG_STEP_S)["all"]
    fit_error = {
        "method": f"{folds}-fold cross-validation: each step predicted by a fit that did not see it; "
        "mean absolute percentage error of the median step time",
        "folds": folds,
        "points": {name: int((regions == name).sum()) for name in REGIONS},
        "heldout_mape_percent": percentage_errors(times, held_out, regions),
        "heldout_mape_over_5ms_percent": percentage_errors(times, held_out, regions, LONG_STEP_S),
        "in_sample_mape_percent": percentage_errors(times, predicted, regions),
        "heldout_max_error_percent": round(float(np.max(np.abs(held_out / times - 1)) * 100), 2),
        "points_over_5ms": int(long.sum()),
        "target": f"held-out MAPE <= {TARGET_MAPE:g}% on steps over {LONG_STEP_S * 1000:g} ms",
        "target_met": bool(long_mape is not None and long_mape <= TARGET_MAPE),
        "spill_term": {
            "used": spill,
            "why": "chosen by the held-out MAPE over all steps of fits with and without it",
            "heldout_mape_percent_with": round(mape[True], 2),
            "heldout_mape_percent_without": round(mape[False], 2),
        },
    }
    if work.moe_layers:
        fit_error["routing"] = routing_check(m, work)
    rng = MeasuredRange(
        max_batched_tokens=int(f.tokens.max()),
        max_num_seqs=int(f.seqs.max()),
        max_context=int(f.max_context.max()),
        max_kv_tokens=int(f.kv_tokens.max()),
    )
    return FitResult(Coefficients.from_vector(x), work, rng, fit_error, predicted, held_out)


def routing_check(m: Measurements, work: StepWork) -> dict:
    """How far the profiled steps' distinct experts were from the uniform-routing expectation the
    model prices them with (where the profile recorded them)."""
    out = {"assumed": "each token reaches k of E experts uniformly: E (1 - (1 - k/E)^tokens) per MoE layer",
           "experts": work.num_experts, "experts_per_token": work.experts_per_token}  # fmt: skip
    if "experts_touched" not in m.frame:
        return out
    touched = m.frame["experts_touched"].to_numpy(dtype=np.float64)
    expected = work.expected_experts(m.features().tokens)
    ratio = touched / expected
    out.update({
        "measured_over_expected_mean": round(float(ratio.mean()), 4),
        "measured_over_expected_range": [round(float(ratio.min()), 4), round(float(ratio.max()), 4)],
    })  # fmt: skip
    return out


def _version() -> str:
    try:
        return metadata.version("llmsim")
    except metadata.PackageNotFoundError:
        return "unknown"


def _shown_path(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def calibration_from_fit(
    m: Measurements, result: FitResult, *, model: str, hardware: str, dtype: str, quantization: str | None
) -> Calibration:
    meta, c = m.meta, result.coefficients
    source = {
        "measurements": _shown_path(m.path),
        "measured_on": meta.get("device", "unknown"),
        "date": meta.get("date"),
        "torch_version": meta.get("torch_version"),
        "llmsim_version": meta.get("llmsim_version"),
        "threads": meta.get("threads"),
        "load_average": [meta.get("load_average_before"), meta.get("load_average_after")],
        "measured_peaks": {
            "memory_bandwidth": meta.get("measured_memory_bandwidth"),
            "matmul_flops": meta.get("measured_matmul_flops"),
        },
        "achieved": {name: round(value, 1) for name, value in effective_rates(c, result.work).items()},
        "calibrated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "calibrated_with_llmsim": _version(),
    }
    long = result.fit_error["heldout_mape_over_5ms_percent"]["all"]
    expected = (
        f"held-out MAPE {long}% on measured steps over 5 ms (see fit_error); steps outside "
        "measured_range are extrapolated and counted in the run's extrapolated_steps"
    )
    return Calibration(
        model=model,
        hardware=hardware,
        device=meta.get("device", ""),
        dtype=dtype,
        quantization=quantization,
        provenance="measured",
        fitted=FittedSection(
            coefficients=result.coefficients,
            work=result.work,
            measured_range=result.measured_range,
            fit_error=result.fit_error,
        ),
        expected_error=expected,
        source=source,
    )


def calibrate(
    csv_path: str | Path,
    out: str | Path | None,
    *,
    model: str | None = None,
    hardware: str | None = None,
    dtype: str | None = None,
    folds: int = 5,
    plot: bool = True,
) -> tuple[Calibration, FitResult, Measurements]:
    """Fit a measurements CSV; write the calibration YAML (and a residual plot) when `out` is given."""
    m = load_measurements(csv_path)
    meta = m.meta
    model = model or meta.get("model")
    if not model:
        raise ConfigError(f"{csv_path}: no {Path(csv_path).stem}.meta.json names the model; pass --model")
    spec = get_model(model)
    dtype = dtype or meta.get("dtype")
    if dtype not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"dtype: got {dtype!r}; allowed: fp32, bf16, fp16 (pass --dtype)")
    quantization = meta.get("quantization")
    if hardware is None:
        if meta.get("device_type", "cpu") != "cpu":
            raise ConfigError(
                f"{csv_path} was measured on {meta.get('device')}: pass --hardware with its catalog name "
                "(e.g. h100-sxm), the name scenarios use for it"
            )
        hardware = "cpu-host"
    # Profiles written before the native CPU kernels ran matrix-vector kernels on one-token steps only.
    work = StepWork.from_spec(
        spec, quantization or dtype, dtype, int(meta.get("matvec_max_tokens", 1)),
        int(meta.get("small_matmul_max_tokens", 0)),
    )  # fmt: skip
    result = fit_measurements(m, work, folds)
    cal = calibration_from_fit(
        m, result, model=spec.name, hardware=hardware, dtype=dtype, quantization=quantization
    )
    if out is not None:
        out = Path(out)
        write_text_atomic(out, _header(cal) + cal.to_yaml())
        if plot:
            from calibration.fitting.fit_report import residual_plot

            residual_plot(m, result, residual_plot_path(out), title=f"{spec.name} on {cal.device} ({dtype})")
    return cal, result, m


def residual_plot_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".residuals.png")


def _header(cal: Calibration) -> str:
    return (
        f"# Calibration of {cal.model} on {cal.hardware} ({cal.device or 'unknown device'}), {cal.dtype}"
        f"{', ' + cal.quantization if cal.quantization else ''}: written by `llmsim calibrate`.\n"
        "# Step-time model and coefficient units: simulator/execution/fitted.py. Use it from a scenario with\n"
        "#   execution: {calibration: PATH}\n"
    )

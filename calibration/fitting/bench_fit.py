"""The fit of `llmsim calibrate --from-bench`: step-time coefficients from request intervals.

The coefficients of `simulator.execution.fitted.FittedModel` are fitted to the intervals of
bench_observations.py by least squares on relative errors. A coefficient the data cannot pin
down is fixed at its physical prior (the roofline value with llmsim's default efficiencies and
overheads) and reported as fixed, not identifiable from these runs: one whose relative standard
error is above 50% (with timings assumed no better than 1%; a direction the Jacobian cannot see,
rank deficiency, gives an infinite one), or one correlated above 0.95 with another. The weakest
is fixed first (in FIX_ORDER, then in the coefficients' order) and the fit repeated, until every
free coefficient is identified. An achieved bandwidth or FLOP/s that runs to 100x its prior (the
fit's bound) stands in for another term (the per-step overhead, typically) and is fixed too.

The per-step host overhead (`overhead_s`, `overhead_per_sequence_s`: scheduling, input
preparation, sampling, bookkeeping) is part of the fit like any other coefficient: fitted where
the runs identify it (idle TTFTs of several lengths and decode spans at several batch sizes do),
fixed at the roofline's default otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from calibration.fitting.bench_observations import BenchObservations
from simulator.execution import RooflineEfficiency, StepOverhead
from simulator.execution.fitted import Coefficients, MeasuredRange, StepWork, predict
from simulator.spec import HardwareSpec, ModelSpec, compute_dtype_for

NAMES = Coefficients.names()
MAX_RELATIVE_SE = 0.5  # a coefficient known worse than this is fixed at its roofline value
MAX_CORRELATION = 0.95  # of two coefficients this correlated, the first in FIX_ORDER is fixed
MAX_RATE_FACTOR = 100.0  # an achieved bandwidth or FLOP/s this many times its prior is not physical
TIMING_NOISE = 0.01  # relative noise floor assumed for every measured interval
KNEE_SHARPNESS = 4.0  # the smooth maximum's p: bench data cannot see the knee's shape
# When data cannot tell two coefficients apart, fix the first of them in this order.
FIX_ORDER = (
    "decode_padding_s_per_token",
    "small_matmul_flops_factor",
    "moe_overhead_per_expert_s",
    "matvec_read_factor",
    "overhead_per_token_s",
    "weight_bandwidth",
    "prefill_attention_s_per_pair",
    "decode_attention_s_per_token",
    "overhead_per_sequence_s",
    "matmul_flops",
    "overhead_s",
)
NOT_IDENTIFIABLE = "not identifiable from these runs"
_RATES = {"weight_bandwidth", "matmul_flops"}  # achieved rates, bounded by MAX_RATE_FACTOR x the prior
_POSITIVE = {"weight_bandwidth", "matmul_flops", "matvec_read_factor", "small_matmul_flops_factor"}


def roofline_prior(
    model: ModelSpec, hardware: HardwareSpec, weight_dtype: str, kv_dtype: str
) -> Coefficients:
    """The coefficients a roofline with the default efficiencies and overheads implies: what a
    coefficient the data cannot identify is fixed at."""
    eff, oh = RooflineEfficiency(), StepOverhead()
    bandwidth = hardware.memory_bandwidth * eff.memory_bandwidth
    attention_peak = hardware.peak_flops("fp16") * eff.attention_compute
    return Coefficients(
        overhead_s=oh.constant_s,
        overhead_per_sequence_s=oh.per_sequence_s,
        overhead_per_token_s=oh.per_token_s,
        weight_bandwidth=bandwidth,
        matmul_flops=hardware.peak_flops(compute_dtype_for(weight_dtype)) * eff.linear_compute,
        prefill_attention_s_per_pair=model.attention_flops(1, 1) / attention_peak,
        decode_attention_s_per_token=model.kv_bytes_per_token(kv_dtype) / bandwidth,
        decode_padding_s_per_token=0.0,
        knee_sharpness=KNEE_SHARPNESS,
        matvec_read_factor=1.0,
        small_matmul_flops_factor=1.0,
        moe_overhead_per_expert_s=0.0,
    )


@dataclass
class BenchFit:
    coefficients: Coefficients
    ttft_offset_s: float  # time in a TTFT outside the engine's steps (HTTP, tokenisation)
    fixed: dict[str, str]  # coefficient -> why it was fixed
    relative_se: dict[str, float]
    predicted: np.ndarray  # per observation
    observations: BenchObservations

    @property
    def relative_errors(self) -> np.ndarray:
        return self.predicted / self.observations.durations - 1.0

    def error_summary(self) -> dict:
        out = {}
        for kind in ("ttft", "decode"):
            err = np.abs(self.relative_errors[self.observations.kinds == kind])
            if err.size:
                out[kind] = {
                    "points": int(err.size),
                    "median_abs_pct": round(float(np.median(err)) * 100, 2),
                    "p90_abs_pct": round(float(np.percentile(err, 90)) * 100, 2),
                }
        return out


def fit(obs: BenchObservations, work: StepWork, prior: Coefficients) -> BenchFit:
    """Least squares on relative errors; unidentifiable coefficients fixed at `prior`."""
    features = obs.features
    base = prior.vector()
    scale = np.where(base > 0, base, 1e-6)  # fit x = coefficient / scale, all of order one
    is_ttft = (obs.kinds == "ttft").astype(float)
    fixed = {
        "knee_sharpness": "the bend between memory- and compute-bound steps is invisible from outside",
        "decode_spill_s_per_token": "a cache effect of single steps, invisible in sums of steps; none",
        "attention_cache_tokens": "no spill term",
    }
    x_all = base / scale  # every coefficient, scaled; fixed ones stay at their prior
    offset_ms = 0.0

    while True:
        free = [k for k, name in enumerate(NAMES) if name not in fixed]

        def residuals(x: np.ndarray, free=free) -> np.ndarray:
            full = x_all.copy()
            full[free] = x[:-1]
            step = predict(full * scale, work, features)
            return (obs.counts @ step + x[-1] * 1e-3 * is_ttft) / obs.durations - 1.0

        lower = np.array([1e-6 if NAMES[k] in _POSITIVE else 0.0 for k in free] + [0.0])
        x0 = np.maximum(np.append(x_all[free], offset_ms), lower)
        upper = np.array([MAX_RATE_FACTOR if NAMES[k] in _RATES else np.inf for k in free] + [np.inf])
        x0 = np.minimum(x0, upper * 0.5)
        result = least_squares(residuals, x0, bounds=(lower, upper), x_scale="jac")
        x_all[free], offset_ms = result.x[:-1], result.x[-1]
        names = [NAMES[k] for k in free]
        rel_se, corr = _uncertainty(result)
        rse = dict(zip(names, rel_se))
        why = {
            name: f"relative standard error {_pct(rse[name])}"
            for name in names
            if rse[name] > MAX_RELATIVE_SE
        }
        for k, name in enumerate(names):  # a rate that ran to its bound stands in for something else
            if name in _RATES and result.x[k] >= 0.99 * MAX_RATE_FACTOR:
                why[name] = f"ran to {MAX_RATE_FACTOR:g}x its physical prior (the bound)"
        for a, b in zip(*np.nonzero(np.triu(np.abs(corr) > MAX_CORRELATION, 1))):
            for one, other in ((names[a], names[b]), (names[b], names[a])):
                why.setdefault(one, f"inseparable from {other} (correlation {corr[a, b]:+.3f})")
        weak = [name for name in FIX_ORDER if name in why] + [name for name in names if name in why
                                                              and name not in FIX_ORDER]  # fmt: skip
        if not weak:
            break
        name = weak[0]
        fixed[name] = f"{NOT_IDENTIFIABLE} ({why[name]}); roofline value"
        x_all[NAMES.index(name)] = base[NAMES.index(name)] / scale[NAMES.index(name)]
    theta = x_all * scale
    offset = offset_ms * 1e-3
    predicted = obs.counts @ predict(theta, work, features) + offset * is_ttft
    return BenchFit(
        coefficients=Coefficients.from_vector(theta),
        ttft_offset_s=float(offset),
        fixed=fixed,
        relative_se=rse,
        predicted=predicted,
        observations=obs,
    )


def _uncertainty(result) -> tuple[np.ndarray, np.ndarray]:
    """Relative standard errors and correlations of the fitted values but the last (the TTFT
    offset), from the Jacobian, with the residual noise taken as at least TIMING_NOISE. A direction
    the data cannot see makes the (slightly regularised) normal matrix near-singular: huge errors
    and correlations near +-1."""
    jac, x = result.jac, result.x
    dof = max(len(result.fun) - len(x), 1)
    sigma2 = max(float(np.sum(result.fun**2)) / dof, TIMING_NOISE**2)
    normal = jac.T @ jac
    ridge = 1e-12 * max(float(np.trace(normal)), 1e-30) / len(x)
    cov = np.linalg.inv(normal + ridge * np.eye(len(x))) * sigma2
    se = np.sqrt(np.maximum(np.diag(cov), 1e-300))
    corr = cov / np.outer(se, se)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(x > 0, se / x, np.inf)
    return rel[:-1], corr[:-1, :-1]


def _pct(value: float) -> str:
    return "infinite" if not np.isfinite(value) else f"{value:.0%}"


def measured_range(obs: BenchObservations) -> MeasuredRange:
    f = obs.features
    used = np.asarray(obs.counts.sum(axis=0)).ravel() > 0
    return MeasuredRange(
        max_batched_tokens=int(f.tokens[used].max()),
        max_num_seqs=int(np.ceil(f.seqs[used].max())),
        max_context=int(f.max_context[used].max()),
        max_kv_tokens=int(f.kv_tokens[used].max()),
    )

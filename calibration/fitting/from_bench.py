"""`llmsim calibrate --from-bench`: a step-time model from `llmsim bench` runs of any server.

A server seen from outside gives, per request, its arrival, first token, finish and lengths; no
step is timed on its own. Two kinds of interval are sums of steps whose make-up can be told:

- TTFT of a request that arrived to an idle server: one prefill step of its prompt (plus any
  time outside the engine's steps, HTTP and tokenisation, fitted as a separate offset that the
  simulator does not add);
- the decode span of a request (first token to last): its `output - 1` decode steps, whose batch
  is the number of requests decoding at the time (averaged over the span, with each one's context
  grown linearly from prompt to prompt + output), plus the prefill steps of the requests whose
  first token fell inside the span (a prefill-first scheduler runs them in between).

A low-rate run provides the first kind, runs at higher rates or closed-loop concurrencies the
second. The coefficients of `simulator.execution.fitted.FittedModel` are fitted to both by least squares on
relative errors. A coefficient the data cannot pin down (relative standard error above 50%, with
timings assumed no better than 1%, or correlation above 0.95 with another) is fixed at its roofline value, and the calibration's source
says which ones were.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import least_squares

from simulator.common.errors import ConfigError
from simulator.execution import RooflineEfficiency, StepOverhead
from simulator.execution.calibration_file import Calibration, FittedSection
from simulator.execution.fitted import Coefficients, MeasuredRange, StepFeatures, StepWork, predict
from simulator.spec import HardwareSpec, ModelSpec, compute_dtype_for

NAMES = Coefficients.names()
MAX_RELATIVE_SE = 0.5  # a coefficient known worse than this is fixed at its roofline value
MAX_CORRELATION = 0.95  # of two coefficients this correlated, the first in FIX_ORDER is fixed
TIMING_NOISE = 0.01  # relative noise floor assumed for every measured interval
KNEE_SHARPNESS = 4.0  # the smooth maximum's p: bench data cannot see the knee's shape
# When data cannot tell two coefficients apart, fix the first of them in this order.
FIX_ORDER = (
    "decode_padding_s_per_token",
    "overhead_per_token_s",
    "weight_bandwidth",
    "prefill_attention_s_per_pair",
    "decode_attention_s_per_token",
    "overhead_per_sequence_s",
    "matmul_flops",
    "overhead_s",
)
_SPAN_SAMPLES = 48  # points per decode span at which the batch is averaged


@dataclass
class BenchObservations:
    """Measured intervals as weighted sums of steps: duration[i] ~ sum_k counts[i, k] x step_k."""

    durations: np.ndarray
    kinds: np.ndarray  # "ttft" or "decode"
    counts: sparse.csr_array  # [observations, steps]
    new: np.ndarray  # [steps, rows], rows with 0 new tokens are padding
    cached: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def features(self) -> StepFeatures:
        return StepFeatures.of(self.new, self.cached)


def read_bench(dirs: list[str | Path]) -> list[pd.DataFrame]:
    """The completed requests of each results folder (requests.csv), one frame per run."""
    frames = []
    for d in dirs:
        path = Path(d) / "requests.csv"
        if not path.is_file():
            raise ConfigError(
                f"--from-bench {d}: no requests.csv there (is it an `llmsim bench` output folder?)"
            )
        frame = pd.read_csv(path)
        needed = {"status", "arrival", "first_token", "finish", "prompt_tokens", "output_tokens"}
        missing = sorted(needed - set(frame.columns))
        if missing:
            raise ConfigError(f"--from-bench {path}: missing column(s) {', '.join(missing)}")
        frames.append(frame[frame["status"] == "ok"].reset_index(drop=True))
    return frames


class _Steps:
    """Unique step shapes and how often each observation contains them."""

    def __init__(self):
        self.index: dict[tuple, int] = {}
        self.rows: list[tuple[tuple[int, int], ...]] = []
        self.entries: list[tuple[int, int, float]] = []  # (observation, step, count)

    def add(self, obs: int, rows: tuple[tuple[int, int], ...], count: float) -> None:
        if count <= 0:
            return
        k = self.index.setdefault(rows, len(self.rows))
        if k == len(self.rows):
            self.rows.append(rows)
        self.entries.append((obs, k, count))

    def arrays(self, num_obs: int):
        width = max(len(r) for r in self.rows)
        new = np.zeros((len(self.rows), width))
        cached = np.zeros((len(self.rows), width))
        for k, rows in enumerate(self.rows):
            new[k, : len(rows)] = [n for n, _ in rows]
            cached[k, : len(rows)] = [c for _, c in rows]
        obs, k, count = (np.array(column) for column in zip(*self.entries))
        counts = sparse.csr_array((count, (obs, k)), shape=(num_obs, len(self.rows)))  # duplicates add up
        return counts, new, cached


def observations(frames: list[pd.DataFrame]) -> BenchObservations:
    """Idle-arrival TTFTs and decode spans of every run, as sums of steps."""
    steps = _Steps()
    durations, kinds = [], []
    batches, contexts = [], []
    for frame in frames:
        a = frame["arrival"].to_numpy(float)
        f = frame["first_token"].to_numpy(float)
        e = frame["finish"].to_numpy(float)
        p = frame["prompt_tokens"].to_numpy(int)
        n = frame["output_tokens"].to_numpy(int)
        m = len(frame)
        if m == 0:
            continue
        # TTFT of requests that found the server idle: no other request in flight from arrival
        # to first token.
        overlap = (a[None, :] < f[:, None]) & (e[None, :] > a[:, None])
        np.fill_diagonal(overlap, False)
        for i in np.flatnonzero(~overlap.any(axis=1)):
            steps.add(len(durations), ((int(p[i]), 0),), 1.0)
            durations.append(f[i] - a[i])
            kinds.append("ttft")
        # Decode spans.
        decoding = n >= 2
        for i in np.flatnonzero(decoding & (e > f)):
            t = f[i] + (np.arange(_SPAN_SAMPLES) + 0.5) / _SPAN_SAMPLES * (e[i] - f[i])
            active = (f[None, :] <= t[:, None]) & (e[None, :] > t[:, None]) & decoding[None, :]
            progress = np.clip((t[:, None] - f[None, :]) / np.maximum(e - f, 1e-12)[None, :], 0, 1)
            context = p[None, :] + 1 + (n[None, :] - 1) * progress
            size = active.sum(axis=1)
            batch = float(size.mean())
            per_row = float((context * active).sum() / max(size.sum(), 1))
            cached = max(round(per_row) - 1, 0)
            low = max(int(np.floor(batch)), 1)
            frac = batch - low if batch > low else 0.0
            obs = len(durations)
            steps.add(obs, ((1, cached),) * low, (n[i] - 1) * (1 - frac))
            steps.add(obs, ((1, cached),) * (low + 1), (n[i] - 1) * frac)
            for j in np.flatnonzero((f > f[i]) & (f < e[i])):
                steps.add(obs, ((int(p[j]), 0),), 1.0)
            durations.append(e[i] - f[i])
            kinds.append("decode")
            batches.append(batch)
            contexts.append(per_row)
    if not durations:
        raise ConfigError("--from-bench: the runs hold no completed request to fit")
    counts, new, cached = steps.arrays(len(durations))
    kinds_arr = np.array(kinds)
    in_ttft = np.asarray(counts[kinds_arr == "ttft"].sum(axis=0)).ravel() > 0
    ttft_prompts = new[in_ttft, 0]
    info = {
        "runs": len(frames),
        "ttft_observations": int((kinds_arr == "ttft").sum()),
        "decode_observations": int((kinds_arr == "decode").sum()),
        "idle_prompt_tokens": [int(ttft_prompts.min()), int(ttft_prompts.max())]
        if ttft_prompts.size
        else None,
        "decode_batch": [round(min(batches), 2), round(max(batches), 2)] if batches else None,
        "decode_context": [round(min(contexts)), round(max(contexts))] if contexts else None,
    }
    return BenchObservations(np.asarray(durations), kinds_arr, counts, new, cached, info)


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
    positive = {"weight_bandwidth", "matmul_flops"}
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

        lower = np.array([1e-6 if NAMES[k] in positive else 0.0 for k in free] + [0.0])
        x0 = np.maximum(np.append(x_all[free], offset_ms), lower)
        result = least_squares(residuals, x0, bounds=(lower, np.inf), x_scale="jac")
        x_all[free], offset_ms = result.x[:-1], result.x[-1]
        names = [NAMES[k] for k in free]
        rel_se, corr = _uncertainty(result)
        rse = dict(zip(names, rel_se))
        why = {
            name: f"relative standard error {_pct(rse[name])}"
            for name in names
            if rse[name] > MAX_RELATIVE_SE
        }
        for a, b in zip(*np.nonzero(np.triu(np.abs(corr) > MAX_CORRELATION, 1))):
            for one, other in ((names[a], names[b]), (names[b], names[a])):
                why.setdefault(one, f"inseparable from {other} (correlation {corr[a, b]:+.3f})")
        weak = [name for name in FIX_ORDER if name in why]
        if not weak:
            break
        name = weak[0]
        fixed[name] = f"not identifiable from these runs ({why[name]}); roofline value"
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


def calibrate_from_bench(
    dirs: list[str | Path],
    *,
    model: ModelSpec,
    hardware: HardwareSpec,
    dtype: str = "fp16",
    quantization: str | None = None,
) -> tuple[Calibration, BenchFit]:
    """Fit a measured calibration from `llmsim bench` result folders."""
    if not dirs:
        raise ConfigError("--from-bench: give at least one results folder")
    weight_dtype = quantization or dtype
    obs = observations(read_bench(dirs))
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
        device="measured through its HTTP API",
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
    from simulator.spec import get_hardware, get_model

    if getattr(args, "measurements", None) or getattr(args, "transfer_to", None):
        raise ConfigError("--from-bench fits bench results: give no measurements file and no --transfer-to with it")
    if not args.model:
        raise ConfigError("--model: give the catalog name of the served model (its shapes price each step)")
    if not getattr(args, "hardware", None):
        raise ConfigError(
            "--hardware: give the catalog name of the server's GPU (roofline values for what "
            "the runs cannot identify, and the name scenarios use)"
        )
    dtype = getattr(args, "dtype", None) or "fp16"
    if dtype not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"--dtype: got {dtype!r}; allowed: fp32, bf16, fp16")
    model, hardware = get_model(args.model), get_hardware(args.hardware)
    cal, result = calibrate_from_bench(args.from_bench, model=model, hardware=hardware, dtype=dtype,
                                       quantization=getattr(args, "quantization", None))  # fmt: skip
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
        f"from {info['runs']} run(s)"
    )
    for name, value in result.coefficients.model_dump().items():
        note = " (fixed: roofline)" if name in result.fixed else f" (±{result.relative_se[name]:.0%})"
        print(f"  {name:32s} {value:.4g}{note}")
    for kind, err in result.error_summary().items():
        print(
            f"  {kind}: median |error| {err['median_abs_pct']}%, p90 {err['p90_abs_pct']}% over {err['points']} points"
        )
    print(f"  TTFT time outside engine steps (not simulated): {result.ttft_offset_s * 1000:.2f} ms")
    print(f"calibration: {out}")
    return 0

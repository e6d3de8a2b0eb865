"""`llmsim profile`: time the real engine's steps over a sweep of shapes, write a measurements CSV.

Each point is one step shape, built as the engine builds steps (Sequences with KV blocks from a
fresh BlockManager, synthetic token ids) and run through `ModelRunner.execute`, the call the engine
makes, so forward pass, sampling and device synchronisation are all timed. Three regions:

- prefill: one sequence, new tokens from 2 to the maximum, on cached prefixes from 0 up;
- decode: batches from 1 to the maximum at several contexts, plus ragged batches (contexts spread
  from short to long) that expose attention padding;
- mixed: a prefill chunk together with a batch of decodes.

A mixture of experts also gets every step size up to where its tokens reach nearly all experts
(step_grid.with_routing_range), and each row records the distinct experts its tokens touched per
MoE layer (`experts_touched`) beside the number the fit assumes for uniform routing
(`expected_experts`). Synthetic rows carry different token ids, so they route apart as real
requests do.

Repeats are interleaved: every round runs every point once, in a new random order, so a burst of
load from another process lands on one repeat of many points instead of every repeat of one; the
median discards it. The first `warmup` rounds are not recorded.
"""

from __future__ import annotations

import json
import random
import resource
import time
from dataclasses import asdict
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from backend import native
from backend.device import dtype_name
from backend.runner import ModelRunner
from calibration.measure import peaks
from calibration.measure.measurements import describe_step, encode_layout, meta_path
from calibration.measure.step_grid import (
    FULL,
    QUICK,
    Point,
    SweepPlan,
    build_step,
    sweep_points,
    with_routing_range,
)
from simulator.common.errors import ConfigError
from simulator.common.files import write_text_atomic
from simulator.execution.fitted import StepWork
from simulator.scheduling import Step

FORMAT = "llmsim-measurements/1"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_steps(runner, steps: list[Step], warmup: int, repeats: int, seed: int = 0, progress=True):
    """Wall seconds, core share (process CPU time / (threads x wall), about 1 when no other
    process took the cores) and distinct experts touched per MoE layer (0 for a dense model) of
    each execution of each step, interleaved in random order."""
    times: list[list[float]] = [[] for _ in steps]
    shares: list[list[float]] = [[] for _ in steps]
    touched: list[list[float]] = [[] for _ in steps]
    threads = torch.get_num_threads()
    order = list(range(len(steps)))
    rng = random.Random(seed)
    total = len(steps) * (warmup + repeats)
    with tqdm(total=total, desc="profiling", unit="step", disable=not progress, leave=False) as bar:
        for round_ in range(warmup + repeats):
            rng.shuffle(order)
            for i in order:
                cpu = _cpu_seconds()
                start = time.perf_counter()
                runner.execute(steps[i])
                elapsed = time.perf_counter() - start
                if round_ >= warmup:
                    times[i].append(elapsed)
                    shares[i].append((_cpu_seconds() - cpu) / (threads * elapsed))
                    touched[i].append(runner.model.experts_touched())
                bar.update()
    return times, shares, touched


def _row(point: Point, samples: list[float], shares: list[float], touched: list[float], work) -> dict:
    s = np.asarray(samples)
    moe = {}
    if work.moe_layers:
        tokens = sum(n for n, _ in point.rows)
        moe = {"experts_touched": round(float(np.median(touched)), 3),
               "expected_experts": round(float(work.expected_experts(tokens)), 3)}  # fmt: skip
    return {
        "region": point.region,
        "layout": encode_layout(list(point.rows)),
        **describe_step(list(point.rows)),
        "repeats": len(s),
        "median_s": float(np.median(s)),
        "p25_s": float(np.percentile(s, 25)),
        "p75_s": float(np.percentile(s, 75)),
        "min_s": float(s.min()),
        "max_s": float(s.max()),
        "core_share": round(float(np.median(shares)), 3),
        **moe,
    }


def _moe_meta(runner) -> dict:
    """What a mixture of experts' fit reads besides the spec: which experts a step can touch."""
    spec = runner.spec
    if not spec.is_moe:
        return {}
    return {"moe": {"num_experts": spec.num_experts, "experts_per_token": spec.num_experts_per_token,
                    "moe_layers": spec.num_moe_layers, "expert_weight_bytes_per_layer": runner.expert_weight_bytes,
                    "routing": "softmax top-k" + (", renormalised" if runner.model.variant.normalize_top_k else ""),
                    "fused_decode_layers": spec.first_dense_layers}}  # fmt: skip


def _peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # Linux reports KiB


def _version() -> str:
    try:
        return metadata.version("llmsim")
    except metadata.PackageNotFoundError:
        return "unknown"


def profile(
    model: str,
    out: str | Path,
    *,
    device: str = "auto",
    dtype: str = "fp32",
    quantization: str | None = None,
    quick: bool = False,
    max_tokens: int | None = None,
    max_batch: int | None = None,
    kv_cache_gb: float | None = None,
    repeats: int | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict]:
    """Measure the engine over the sweep and write `out` (CSV) and its `.meta.json` sidecar.

    threads: torch's intra-op threads for the run (default: torch's own choice). On a CPU shared
    with other work, one thread is far steadier: two threads spin-waiting for each other each
    time one is descheduled can slow a step tenfold. The engine must run with the same count for
    the calibration to describe it (`llmsim serve --threads`).
    """
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads: got {threads}; allowed: 1 or more")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _profile(model, out, device, dtype, quantization, quick, max_tokens, max_batch, kv_cache_gb,
                        repeats, progress)  # fmt: skip
    finally:
        torch.set_num_threads(previous_threads)


def _profile(
    model, out, device, dtype, quantization, quick, max_tokens, max_batch, kv_cache_gb, repeats, progress
):
    out = Path(out)
    if out.suffix != ".csv":
        raise ConfigError(f"--out {out}: the measurements file must end in .csv")
    if repeats is not None and repeats < 1:
        raise ConfigError(f"--repeats: got {repeats}; allowed: 1 or more")
    started = time.perf_counter()
    load_before = peaks.load_average()
    runner = ModelRunner(
        model, device=device, dtype=dtype, quantization=quantization, kv_cache_gb=kv_cache_gb, seed=0
    )
    spec = runner.spec
    plan = QUICK if quick else FULL
    if repeats is not None:
        plan = SweepPlan(**{**asdict(plan), "repeats": repeats})
    plan = with_routing_range(plan, spec.num_experts, spec.num_experts_per_token)
    work = StepWork.from_spec(spec, quantization or dtype_name(runner.dtype), dtype_name(runner.dtype))
    # --quick stops at smaller steps: a smoke test of the whole pipeline, not a calibration to ship
    max_tokens = max_tokens or min(spec.max_context, 512 if quick else 2048)
    max_batch = max_batch or (32 if quick else 256 if runner.device.type == "cuda" else 128)
    for name, value in (("--max-tokens", max_tokens), ("--max-batch", max_batch)):
        if value < 2:
            raise ConfigError(f"{name}: got {value}; allowed: 2 or more")
    points = sweep_points(
        plan,
        max_tokens=max_tokens,
        max_batch=max_batch,
        max_context=spec.max_context,
        kv_blocks=runner.num_blocks,
        block_size=runner.block_size,
    )
    steps = [build_step(p.rows, runner.num_blocks, runner.block_size) for p in points]
    bandwidth = peaks.memory_read_bandwidth(runner.device, runner.dtype)
    flops = peaks.matmul_flops(runner.device, runner.dtype)
    times, shares, touched = time_steps(runner, steps, plan.warmup, plan.repeats, progress=progress)
    bandwidth = max(bandwidth, peaks.memory_read_bandwidth(runner.device, runner.dtype))
    flops = max(flops, peaks.matmul_flops(runner.device, runner.dtype))

    frame = pd.DataFrame([_row(p, t, c, e, work) for p, t, c, e in zip(points, times, shares, touched)])
    frame = frame.sort_values(["region", "batched_tokens", "num_seqs", "cached_tokens"], kind="stable")
    meta = {
        "format": FORMAT,
        "model": spec.name,
        "device_type": runner.device.type,
        "device": peaks.device_name(runner.device),
        "cpu": peaks.cpu_name(),
        "gpu": torch.cuda.get_device_name(runner.device) if runner.device.type == "cuda" else None,
        "dtype": dtype_name(runner.dtype),
        "quantization": quantization,
        "native_kernels": native.status() if runner.device.type == "cpu" else None,
        "matvec_max_tokens": runner.matvec_max_tokens,
        "small_matmul_max_tokens": runner.small_matmul_max_tokens,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "llmsim_version": _version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "weight_bytes": runner.weight_bytes,
        "streamed_weight_bytes": runner.streamed_weight_bytes,
        "kv_bytes_per_token": runner.kv_bytes_per_token,
        **_moe_meta(runner),
        "kv_blocks": runner.num_blocks,
        "block_size": runner.block_size,
        "peak_memory_bytes": _peak_memory_bytes(runner.device),
        "measured_memory_bandwidth": bandwidth,
        "measured_matmul_flops": flops,
        "sweep": "quick" if quick else "full",
        "max_tokens": max_tokens,
        "max_batch": max_batch,
        "warmup_rounds": plan.warmup,
        "repeats": plan.repeats,
        "load_average_before": load_before,
        "load_average_after": peaks.load_average(),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    write_text_atomic(out, frame.to_csv(index=False, float_format="%.6g"))
    write_text_atomic(meta_path(out), json.dumps(meta, indent=2) + "\n")
    return frame, meta

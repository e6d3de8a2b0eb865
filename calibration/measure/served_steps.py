"""Engine steps of a served workload as a measurements file, so `llmsim calibrate` can fit them.

A profile sweeps step shapes evenly; a served workload runs the shapes that matter to it, as often
as they occur. Fitting the step-time model to the steps the engine ran under a representative
workload (`engine_steps.csv` of `llmsim validate`) weights the fit where that workload spends its
time. Validate the result on other requests (another seed), not on the ones it was fitted to.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from calibration.measure.measurements import describe_step, encode_layout, meta_path
from simulator.common.errors import ConfigError
from simulator.common.files import write_text_atomic

FORMAT = "llmsim-measurements/1"


def _rows(new: str, cached: str) -> list[tuple[int, int]]:
    return list(zip(map(int, str(new).split()), map(int, str(cached).split())))


def _region(rows: list[tuple[int, int]]) -> str:
    decodes = sum(n == 1 for n, _ in rows)
    return "decode" if decodes == len(rows) else "prefill" if decodes == 0 else "mixed"


def steps_to_measurements(
    steps: list[pd.DataFrame],
    out: str | Path,
    *,
    model: str,
    dtype: str,
    device: str = "cpu",
    threads: int | None = None,
    max_points: int = 3000,
    seed: int = 0,
    profile: str | Path | None = None,
) -> Path:
    """Write engine step records (Engine.records_frame rows) as a measurements CSV plus sidecar.

    Each step is one point timed once (its `execute_s`); at most `max_points`, drawn at random
    when there are more, so the fit stays quick. With `profile` (a measurements CSV of `llmsim
    profile`), its points are kept too, so that step shapes the served runs never reached (larger
    batches, longer prompts) stay covered."""
    frame = pd.concat(steps, ignore_index=True) if steps else pd.DataFrame()
    if frame.empty:
        raise ConfigError("no engine steps to turn into measurements")
    if len(frame) > max_points:
        frame = frame.sample(max_points, random_state=seed).sort_index()
    points = []
    for new, cached, seconds in zip(frame["new_tokens"], frame["cached_tokens"], frame["execute_s"]):
        rows = _rows(new, cached)
        points.append({"region": _region(rows), "layout": encode_layout(rows), **describe_step(rows),
                       "repeats": 1, "median_s": float(seconds)})  # fmt: skip
    table = pd.DataFrame(points)
    if profile is not None:
        from calibration.measure.measurements import load_measurements

        table = pd.concat([load_measurements(profile).frame, table], ignore_index=True)
    out = Path(out)
    write_text_atomic(out, table.to_csv(index=False, float_format="%.6g"))
    meta = {
        "format": FORMAT,
        "model": model,
        "device_type": "cuda" if device.startswith("cuda") else "cpu",
        "device": device,
        "dtype": dtype,
        "quantization": None,
        "threads": threads,
        "source": "engine steps of served workloads (calibration/measure/served_steps.py), each timed once"
        + (f", with the points of {profile}" if profile is not None else ""),
        "steps": len(frame),
        "execute_s_total": float(np.sum(frame["execute_s"])),
    }
    write_text_atomic(meta_path(out), json.dumps(meta, indent=2) + "\n")
    return out

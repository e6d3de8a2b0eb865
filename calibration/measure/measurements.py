"""The measurements file `llmsim profile` writes and `llmsim calibrate` reads.

One CSV row per measured step shape, plus a sidecar `NAME.meta.json` with what the numbers were
measured on (device, versions, measured peaks, weight and KV bytes). Columns:

    region                   prefill | decode | mixed
    layout                   the step's rows, run-length coded: `NEW+CACHED*COUNT` items separated
                             by spaces (`*1` omitted), e.g. `512+0 1+1024*16` is a 512-token prefill
                             chunk plus 16 decodes with 1024 tokens cached each
    num_seqs                 rows in the step
    num_prefill_seqs         rows with more than one new token
    num_decode_seqs          rows with one new token
    batched_tokens           new tokens, summed over rows
    cached_tokens            cached tokens, summed over rows
    max_context              longest row (cached + new)
    prefill_attention_pairs  sum over prefill rows of new x (cached + (new + 1) / 2)
    decode_kv_tokens         sum over decode rows of cached + 1 (KV entries read)
    decode_padded_kv_tokens  decode rows x longest decode context (what padded attention reads)
    repeats                  timed executions (after warm-up)
    median_s, p25_s, p75_s, min_s, max_s   step time statistics, seconds
    core_share               median of process CPU time / (threads x wall time) over the repeats:
                             about 1 when the profiler had its cores, lower when other work took them
    experts_touched          mixtures of experts only: median over the repeats of the distinct experts
                             the step's tokens reached, averaged over MoE layers
    expected_experts         mixtures of experts only: E (1 - (1 - k/E)^tokens), what the fit assumes

`calibrate` needs `region`, `layout` and `median_s`; the other columns describe the step for
readers and plots and are recomputed from `layout` when fitting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.common.errors import ConfigError
from simulator.execution.fitted import StepFeatures

REGIONS = ("prefill", "decode", "mixed")
REQUIRED_COLUMNS = ("region", "layout", "median_s")
TIME_COLUMNS = ("median_s", "p25_s", "p75_s", "min_s", "max_s")
MIN_POINTS = 16  # fourteen coefficients (at most) and a few points to spare


def encode_layout(rows: list[tuple[int, int]]) -> str:
    """`[(512, 0), (1, 64), (1, 64)]` -> `512+0 1+64*2` (consecutive equal rows are counted)."""
    items: list[str] = []
    previous, count = None, 0
    for row in [*rows, None]:
        if row == previous:
            count += 1
            continue
        if previous is not None:
            items.append(f"{previous[0]}+{previous[1]}" + (f"*{count}" if count > 1 else ""))
        previous, count = row, 1
    return " ".join(items)


def decode_layout(text: str) -> list[tuple[int, int]]:
    rows: list[tuple[int, int]] = []
    for item in str(text).split():
        shape, _, count = item.partition("*")
        new, sep, cached = shape.partition("+")
        try:
            n, c, k = int(new), int(cached), int(count or 1)
        except ValueError:
            raise ValueError(f"bad layout item {item!r}; expected NEW+CACHED or NEW+CACHED*COUNT") from None
        if not sep or n < 1 or c < 0 or k < 1:
            raise ValueError(f"bad layout item {item!r}; expected NEW+CACHED*COUNT, NEW >= 1, CACHED >= 0")
        rows += [(n, c)] * k
    if not rows:
        raise ValueError("empty layout")
    return rows


def describe_step(rows: list[tuple[int, int]]) -> dict[str, int | float]:
    """The descriptive columns of one step."""
    new = np.array([n for n, _ in rows])
    cached = np.array([c for _, c in rows])
    f = StepFeatures.of(new, cached)
    decode = new == 1
    return {
        "num_seqs": len(rows),
        "num_prefill_seqs": int((~decode).sum()),
        "num_decode_seqs": int(decode.sum()),
        "batched_tokens": int(new.sum()),
        "cached_tokens": int(cached.sum()),
        "max_context": int(f.max_context),
        "prefill_attention_pairs": float(f.prefill_pairs),
        "decode_kv_tokens": int(f.decode_tokens),
        "decode_padded_kv_tokens": int(f.decode_tokens + f.decode_padding),
    }


def meta_path(csv_path: str | Path) -> Path:
    """`profile.csv` -> `profile.meta.json`."""
    path = Path(csv_path)
    return path.with_name(path.stem + ".meta.json")


@dataclass
class Measurements:
    frame: pd.DataFrame
    meta: dict
    path: Path

    @property
    def times(self) -> np.ndarray:
        return self.frame["median_s"].to_numpy(dtype=np.float64)

    @property
    def regions(self) -> np.ndarray:
        return self.frame["region"].to_numpy(dtype=str)

    def row_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(new, cached), each [points, most rows], padded with rows of zero new tokens."""
        layouts = [decode_layout(text) for text in self.frame["layout"]]
        width = max(len(rows) for rows in layouts)
        new = np.zeros((len(layouts), width))
        cached = np.zeros((len(layouts), width))
        for i, rows in enumerate(layouts):
            new[i, : len(rows)] = [n for n, _ in rows]
            cached[i, : len(rows)] = [c for _, c in rows]
        return new, cached

    def features(self) -> StepFeatures:
        return StepFeatures.of(*self.row_arrays())


def load_measurements(path: str | Path) -> Measurements:
    """Read and check a measurements CSV (and its sidecar metadata, when present)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"measurements file not found: {path}")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable CSV file: {exc}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{path}: missing column(s) {', '.join(missing)}; a measurements file needs "
            f"{', '.join(REQUIRED_COLUMNS)} (see calibration/measure/measurements.py)"
        )
    for column in REQUIRED_COLUMNS:
        bad = frame.index[frame[column].isna()]
        if len(bad):
            raise ConfigError(
                f"{path}: column {column} is empty or NaN on {len(bad)} row(s), first at data row {bad[0] + 1}"
            )
    times = pd.to_numeric(frame["median_s"], errors="coerce")
    bad = frame.index[~(times > 0) | ~np.isfinite(times)]
    if len(bad):
        raise ConfigError(
            f"{path}: median_s must be a positive number of seconds; data row {bad[0] + 1} has "
            f"{frame['median_s'].iloc[bad[0]]!r}"
        )
    frame["median_s"] = times
    unknown = sorted(set(frame["region"]) - set(REGIONS))
    if unknown:
        raise ConfigError(
            f"{path}: unknown region(s) {', '.join(map(str, unknown))}; allowed: {', '.join(REGIONS)}"
        )
    for i, text in enumerate(frame["layout"]):
        try:
            decode_layout(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: layout of data row {i + 1}: {exc}") from None
    if len(frame) < MIN_POINTS:
        raise ConfigError(
            f"{path}: {len(frame)} measured steps are too few to fit the model's coefficients; "
            f"at least {MIN_POINTS} are needed (llmsim profile --quick measures about 30)"
        )
    meta = {}
    sidecar = meta_path(path)
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{sidecar}: not valid JSON: {exc}") from None
    return Measurements(frame, meta, path)

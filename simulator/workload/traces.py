"""Readers for request traces and length files.

Formats:

- `azure`: Azure LLM inference trace 2023, CSV `TIMESTAMP,ContextTokens,GeneratedTokens`, with
  timestamps such as `2023-11-16 18:15:46.6805900` (7 fractional digits).
- `mooncake`: JSON lines `{"timestamp": ms, "input_length": n, "output_length": n, "hash_ids": [...]}`,
  each hash id naming one 512-token block of the prompt.
- `csv`: generic CSV with header `arrival_time,prompt_tokens,output_tokens`, arrival in seconds.
- `burstgpt`: the BurstGPT trace (github.com/HPMLL/BurstGPT), CSV with columns `Timestamp`
  (seconds from the trace's start), `Model` (ChatGPT, GPT-4), `Request tokens`, `Response
  tokens`, `Total tokens`, `Log Type` (Conversation log, API log), and in later releases `Session
  ID` and `Elapsed time`. Failed requests (0 response tokens) and empty prompts (0 request tokens)
  are skipped and counted in `Trace.skipped_rows`; rows may be selected by model and log type.

Every reader returns a `Trace` sorted by arrival, times in seconds from the first request. Parsed
files are cached (keyed on path, size, modification time and selection), so replaying a trace in
a sweep parses it once. Bad input raises `ConfigError` naming the file, the line and the
offending value (checks in simulator.workload.trace_rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.common.errors import ConfigError
from simulator.common.limits import MAX_TIME_S
from simulator.workload import trace_rows as rows
from simulator.workload.jsonl_trace import read_jsonl_records

TRACE_FORMATS = ("azure", "mooncake", "csv", "burstgpt")
MOONCAKE_BLOCK_TOKENS = 512  # tokens covered by one Mooncake hash id

_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_CSV_COLUMNS = ("arrival_time", "prompt_tokens", "output_tokens")
_BURSTGPT_COLUMNS = ("Timestamp", "Request tokens", "Response tokens")


@dataclass(frozen=True)
class Trace:
    """Requests of a trace file; arrays are read-only and share one index."""

    arrival: np.ndarray  # float64 seconds, ascending, first is 0
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    block_hashes: list[list[int]] | None = None  # prefix-block ids per request (Mooncake)
    hash_block_tokens: int | None = None  # tokens covered by one hash id
    source: str = ""
    skipped_rows: int = 0  # rows of the file left out as failed requests (BurstGPT)

    def __len__(self) -> int:
        return int(self.arrival.size)


def read_trace(
    path: str | Path, fmt: str, *, models: list[str] | None = None, log_types: list[str] | None = None
) -> Trace:
    """Read a trace file in one of `TRACE_FORMATS`; `models` and `log_types` select BurstGPT rows."""
    readers = {"azure": read_azure, "mooncake": read_mooncake, "csv": read_csv_trace}
    if fmt == "burstgpt":
        return read_burstgpt(path, models=models, log_types=log_types)
    if fmt not in readers:
        raise ConfigError(f"trace format {fmt!r} is not supported; allowed: {', '.join(TRACE_FORMATS)}")
    if models or log_types:
        raise ConfigError(f"models and log_types select rows of a burstgpt trace, not of format {fmt!r}")
    return readers[fmt](path)


def read_azure(path: str | Path) -> Trace:
    return _cached(_parse_azure, path)


def read_mooncake(path: str | Path) -> Trace:
    return _cached(_parse_mooncake, path)


def read_csv_trace(path: str | Path) -> Trace:
    return _cached(_parse_csv, path)


def read_burstgpt(
    path: str | Path, *, models: list[str] | None = None, log_types: list[str] | None = None
) -> Trace:
    selection = (tuple(models) if models else None, tuple(log_types) if log_types else None)
    return _cached(_parse_burstgpt, path, *selection)


def read_length_column(path: str | Path, column: str) -> np.ndarray:
    """One column of a length file (e.g. `num_prefill_tokens`) as read-only int64 tokens >= 1."""
    path = rows.existing(path, "length file")
    stat = path.stat()
    return _length_column(str(path), column, stat.st_size, stat.st_mtime_ns)


# --- shared helpers ---------------------------------------------------------------------------


def _cached(parse, path: str | Path, *options) -> Trace:
    path = rows.existing(path, "trace file")
    stat = path.stat()
    return _parse_cached(parse, str(path), stat.st_size, stat.st_mtime_ns, options)


@lru_cache(maxsize=16)
def _parse_cached(parse, path: str, _size: int, _mtime_ns: int, options: tuple) -> Trace:
    return parse(Path(path), *options)


def _make_trace(
    path: Path, lines, arrival, prompt, output, hashes=None, hash_tokens=None, skipped=0
) -> Trace:
    order = np.argsort(arrival, kind="stable")  # real traces are sorted; tolerate ones that are not
    first, last = order[0], order[-1]
    if arrival[last] - arrival[first] > MAX_TIME_S:
        raise ConfigError(
            f"{path}: the requests span {arrival[last] - arrival[first]:.3g} s (line {lines[first]} to line "
            f"{lines[last]}), more than {MAX_TIME_S:.3g} s (10 years); check the timestamps' unit"
        )
    arrival = arrival[order] - arrival[first]
    prompt, output = prompt[order], output[order]
    for array in (arrival, prompt, output):
        array.setflags(write=False)
    if hashes is not None:
        hashes = [hashes[i] for i in order]
    return Trace(arrival, prompt, output, hashes, hash_tokens, str(path), skipped)


# --- formats ----------------------------------------------------------------------------------


def _parse_azure(path: Path) -> Trace:
    frame = rows.read_table(path, _AZURE_COLUMNS)
    stamps = frame["TIMESTAMP"].str.strip()
    # strptime's %f takes at most 6 digits: parse whole seconds and the fraction separately.
    parts = stamps.str.partition(".")
    whole, dot, fraction = parts[0], parts[1], parts[2]
    seconds = pd.to_datetime(whole, format="%Y-%m-%d %H:%M:%S", errors="coerce")
    fraction_ok = fraction.str.fullmatch(r"\d{0,9}") & ((dot == "") | (fraction != ""))
    bad = np.flatnonzero(seconds.isna().to_numpy() | ~fraction_ok.to_numpy())
    if bad.size:
        raise rows.bad_row(
            path,
            int(frame.index[bad[0]]),
            "TIMESTAMP",
            stamps.iloc[bad[0]],
            "a time 'YYYY-MM-DD HH:MM:SS.fff'",
        )
    nanos = seconds.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    frac = pd.to_numeric("0." + fraction.where(fraction != "", "0"), errors="coerce").to_numpy()
    arrival = (nanos - nanos.min()) / 1e9 + frac
    prompt = rows.column_tokens(path, frame, "ContextTokens")
    output = rows.column_tokens(path, frame, "GeneratedTokens")
    return _make_trace(path, frame.index.to_numpy(), arrival, prompt, output)


def _parse_csv(path: Path) -> Trace:
    frame = rows.read_table(path, _CSV_COLUMNS)
    arrival = rows.column_times(path, frame, "arrival_time")
    prompt = rows.column_tokens(path, frame, "prompt_tokens")
    output = rows.column_tokens(path, frame, "output_tokens")
    return _make_trace(path, frame.index.to_numpy(), arrival, prompt, output)


def _selected(path: Path, frame: pd.DataFrame, column: str, wanted: tuple[str, ...] | None) -> np.ndarray:
    """Rows whose `column` is one of `wanted` (case and surrounding spaces ignored); all when None."""
    if wanted is None:
        return np.ones(len(frame), dtype=bool)
    if column not in frame.columns:
        raise ConfigError(f"{path}: no {column} column to select {', '.join(wanted)} by")
    values = frame[column].str.strip().str.casefold()
    keep = values.isin([w.strip().casefold() for w in wanted]).to_numpy()
    if not keep.any():
        found = ", ".join(rows.shown(v) for v in sorted(frame[column].str.strip().unique())[:10])
        raise ConfigError(f"{path}: no row has {column} {' or '.join(map(repr, wanted))}; found {found}")
    return keep


def _parse_burstgpt(path: Path, models: tuple[str, ...] | None, log_types: tuple[str, ...] | None) -> Trace:
    optional = tuple(c for c, w in (("Model", models), ("Log Type", log_types)) if w is not None)
    frame = rows.read_table(path, _BURSTGPT_COLUMNS + optional)
    frame = frame[_selected(path, frame, "Model", models) & _selected(path, frame, "Log Type", log_types)]
    arrival = rows.column_times(path, frame, "Timestamp")
    prompt = rows.column_tokens(path, frame, "Request tokens", low=0)
    output = rows.column_tokens(path, frame, "Response tokens", low=0)
    served = (prompt > 0) & (output > 0)  # 0 response tokens: the request failed (BurstGPT's README)
    if not served.any():
        raise ConfigError(f"{path}: every row has 0 request or response tokens; no request to replay")
    lines = frame.index.to_numpy()[served]
    skipped = int(np.count_nonzero(~served))
    return _make_trace(path, lines, arrival[served], prompt[served], output[served], skipped=skipped)


def _parse_mooncake(path: Path) -> Trace:
    keys = ("timestamp", "input_length", "output_length")
    records, lines = read_jsonl_records(path, keys)
    rows.check_row_count(path, len(records))
    line_numbers = np.asarray(lines)
    hashes: list[list[int] | None] = []
    for record, number in zip(records, lines):
        ids = record.get("hash_ids")
        if ids is not None and not (
            isinstance(ids, list) and all(type(h) is int and -(2**63) <= h < 2**63 for h in ids)
        ):
            raise rows.bad_row(path, number, "hash_ids", ids, "a list of 64-bit integers")
        hashes.append(ids)
    columns = []
    for key in keys:
        raw = [record[key] for record in records]
        numeric = [v if isinstance(v, int | float) and not isinstance(v, bool) else None for v in raw]
        values = pd.to_numeric(pd.Series(numeric, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise rows.bad_row(path, int(line_numbers[bad[0]]), key, raw[bad[0]], "a finite number")
        columns.append(values)
    stamp_ms, prompt, output = columns
    stamp_ms = rows.times(path, line_numbers, "timestamp", stamp_ms, unit=1000)
    prompt = rows.token_counts(path, line_numbers, "input_length", prompt)
    output = rows.token_counts(path, line_numbers, "output_length", output)
    with_ids = [h is not None for h in hashes]
    if any(with_ids) and not all(with_ids):
        first = lines[with_ids.index(False)]
        raise ConfigError(f"{path}, line {first}: hash_ids missing while other lines have them")
    block_hashes = hashes if all(with_ids) else None
    hash_tokens = MOONCAKE_BLOCK_TOKENS if block_hashes is not None else None
    return _make_trace(path, line_numbers, stamp_ms / 1000.0, prompt, output, block_hashes, hash_tokens)


@lru_cache(maxsize=16)
def _length_column(path: str, column: str, _size: int, _mtime_ns: int) -> np.ndarray:
    file = Path(path)
    frame = rows.read_table(file, (column,))
    values = rows.numbers(file, frame, column)
    # lengths are rounded to whole tokens; 0 is not a request
    lines, raw = frame.index.to_numpy(), frame[column].to_numpy()
    tokens = rows.token_counts(file, lines, column, np.round(values), raw)
    tokens.setflags(write=False)
    return tokens

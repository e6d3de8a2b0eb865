"""Readers for request traces and length files.

Formats:

- `azure`: Azure LLM inference trace 2023, CSV `TIMESTAMP,ContextTokens,GeneratedTokens`, with
  timestamps such as `2023-11-16 18:15:46.6805900` (7 fractional digits).
- `mooncake`: JSON lines `{"timestamp": ms, "input_length": n, "output_length": n, "hash_ids": [...]}`,
  each hash id naming one 512-token block of the prompt.
- `csv`: generic CSV with header `arrival_time,prompt_tokens,output_tokens`, arrival in seconds.

Every reader returns a `Trace` sorted by arrival, times in seconds from the first request. Parsed
files are cached (keyed on path, size and modification time), so replaying a trace in a sweep
parses it once. Bad input raises `ConfigError` naming the file, the line and the offending value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.common.errors import ConfigError

TRACE_FORMATS = ("azure", "mooncake", "csv")
MOONCAKE_BLOCK_TOKENS = 512  # tokens covered by one Mooncake hash id

_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_CSV_COLUMNS = ("arrival_time", "prompt_tokens", "output_tokens")


@dataclass(frozen=True)
class Trace:
    """Requests of a trace file; arrays are read-only and share one index."""

    arrival: np.ndarray  # float64 seconds, ascending, first is 0
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    block_hashes: list[list[int]] | None = None  # prefix-block ids per request (Mooncake)
    hash_block_tokens: int | None = None  # tokens covered by one hash id
    source: str = ""

    def __len__(self) -> int:
        return int(self.arrival.size)


def read_trace(path: str | Path, fmt: str) -> Trace:
    """Read a trace file in one of `TRACE_FORMATS`."""
    readers = {"azure": read_azure, "mooncake": read_mooncake, "csv": read_csv_trace}
    if fmt not in readers:
        raise ConfigError(f"trace format {fmt!r} is not supported; allowed: {', '.join(TRACE_FORMATS)}")
    return readers[fmt](path)


def read_azure(path: str | Path) -> Trace:
    return _cached(_parse_azure, path)


def read_mooncake(path: str | Path) -> Trace:
    return _cached(_parse_mooncake, path)


def read_csv_trace(path: str | Path) -> Trace:
    return _cached(_parse_csv, path)


def read_length_column(path: str | Path, column: str) -> np.ndarray:
    """One column of a length file (e.g. `num_prefill_tokens`) as read-only int64 tokens >= 1."""
    path = _existing(path, "length file")
    stat = path.stat()
    return _length_column(str(path), column, stat.st_size, stat.st_mtime_ns)


# --- shared helpers ---------------------------------------------------------------------------


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    return path


def _cached(parse, path: str | Path) -> Trace:
    path = _existing(path, "trace file")
    stat = path.stat()
    return _parse_cached(parse, str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _parse_cached(parse, path: str, _size: int, _mtime_ns: int) -> Trace:
    return parse(Path(path))


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """CSV as strings; the index is the 1-based file line of each row (blank lines skipped)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except pd.errors.ParserError as exc:
        raise ConfigError(f"{path}: malformed CSV: {exc}") from None
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{path}: file is empty, expected a header {','.join(columns)}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))}"
        )
    frame = frame[list(columns)]
    frame.index = frame.index + 2  # line 1 is the header
    blank = (frame == "").all(axis=1)
    frame = frame[~blank]
    if frame.empty:
        raise ConfigError(f"{path}: no data rows")
    return frame


def _bad_row(path: Path, line: int, column: str, value, allowed: str) -> ConfigError:
    return ConfigError(f"{path}, line {line}: {column} = {value!r} is not {allowed}")


def _numbers(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64; the first non-numeric cell raises with its line."""
    raw = frame[column]
    values = pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise _bad_row(path, int(frame.index[bad[0]]), column, raw.iloc[bad[0]], "a number")
    return values


def _token_counts(path: Path, lines: np.ndarray, column: str, values: np.ndarray, raw=None) -> np.ndarray:
    """Validate token counts: whole numbers >= 1."""
    bad = np.flatnonzero((values < 1) | (values != np.round(values)))
    if bad.size:
        i = bad[0]
        shown = raw[i] if raw is not None else values[i]
        raise _bad_row(path, int(lines[i]), column, shown, "a whole number of tokens >= 1")
    return values.astype(np.int64)


def _column_tokens(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    values = _numbers(path, frame, column)
    return _token_counts(path, frame.index.to_numpy(), column, values, frame[column].to_numpy())


def _make_trace(path: Path, arrival, prompt, output, hashes=None, hash_tokens=None) -> Trace:
    order = np.argsort(arrival, kind="stable")  # real traces are sorted; tolerate ones that are not
    arrival = arrival[order] - arrival[order[0]]
    prompt, output = prompt[order], output[order]
    for array in (arrival, prompt, output):
        array.setflags(write=False)
    if hashes is not None:
        hashes = [hashes[i] for i in order]
    return Trace(arrival, prompt, output, hashes, hash_tokens, str(path))


# --- formats ----------------------------------------------------------------------------------


def _parse_azure(path: Path) -> Trace:
    frame = _read_table(path, _AZURE_COLUMNS)
    stamps = frame["TIMESTAMP"].str.strip()
    # strptime's %f takes at most 6 digits: parse whole seconds and the fraction separately.
    parts = stamps.str.partition(".")
    whole, dot, fraction = parts[0], parts[1], parts[2]
    seconds = pd.to_datetime(whole, format="%Y-%m-%d %H:%M:%S", errors="coerce")
    fraction_ok = fraction.str.fullmatch(r"\d*") & ((dot == "") | (fraction != ""))
    bad = np.flatnonzero(seconds.isna().to_numpy() | ~fraction_ok.to_numpy())
    if bad.size:
        raise _bad_row(
            path,
            int(frame.index[bad[0]]),
            "TIMESTAMP",
            stamps.iloc[bad[0]],
            "a time 'YYYY-MM-DD HH:MM:SS.fff'",
        )
    nanos = seconds.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    frac = pd.to_numeric("0." + fraction.where(fraction != "", "0"), errors="coerce").to_numpy()
    arrival = (nanos - nanos.min()) / 1e9 + frac
    prompt = _column_tokens(path, frame, "ContextTokens")
    output = _column_tokens(path, frame, "GeneratedTokens")
    return _make_trace(path, arrival, prompt, output)


def _parse_csv(path: Path) -> Trace:
    frame = _read_table(path, _CSV_COLUMNS)
    lines = frame.index.to_numpy()
    arrival = _numbers(path, frame, "arrival_time")
    negative = np.flatnonzero(arrival < 0)
    if negative.size:
        i = negative[0]
        raise _bad_row(path, int(lines[i]), "arrival_time", frame["arrival_time"].iloc[i], "a time >= 0 s")
    prompt = _column_tokens(path, frame, "prompt_tokens")
    output = _column_tokens(path, frame, "output_tokens")
    return _make_trace(path, arrival, prompt, output)


def _parse_mooncake(path: Path) -> Trace:
    keys = ("timestamp", "input_length", "output_length")
    rows: list[tuple] = []
    lines: list[int] = []
    hashes: list[list[int] | None] = []
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"{path}, line {number}: not valid JSON ({exc.msg}): {text.strip()[:80]!r}"
                ) from None
            if not isinstance(record, dict) or any(k not in record for k in keys):
                raise ConfigError(f"{path}, line {number}: expected an object with keys {', '.join(keys)}")
            ids = record.get("hash_ids")
            if ids is not None and not (isinstance(ids, list) and all(type(h) is int for h in ids)):
                raise _bad_row(path, number, "hash_ids", ids, "a list of integers")
            rows.append(tuple(record[k] for k in keys))
            lines.append(number)
            hashes.append(ids)
    if not rows:
        raise ConfigError(f"{path}: no data rows")
    line_numbers = np.asarray(lines)
    columns = []
    for j, key in enumerate(keys):
        raw = [row[j] for row in rows]
        values = np.asarray(pd.to_numeric(pd.Series(raw, dtype=object), errors="coerce"), dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values) | np.array([isinstance(v, bool) for v in raw]))
        if bad.size:
            raise _bad_row(path, int(line_numbers[bad[0]]), key, raw[bad[0]], "a number")
        columns.append(values)
    stamp_ms, prompt, output = columns
    negative = np.flatnonzero(stamp_ms < 0)
    if negative.size:
        raise _bad_row(
            path, int(line_numbers[negative[0]]), "timestamp", stamp_ms[negative[0]], "a time >= 0 ms"
        )
    prompt = _token_counts(path, line_numbers, "input_length", prompt)
    output = _token_counts(path, line_numbers, "output_length", output)
    with_ids = [h is not None for h in hashes]
    if any(with_ids) and not all(with_ids):
        first = lines[with_ids.index(False)]
        raise ConfigError(f"{path}, line {first}: hash_ids missing while other lines have them")
    block_hashes = hashes if all(with_ids) else None
    hash_tokens = MOONCAKE_BLOCK_TOKENS if block_hashes is not None else None
    return _make_trace(path, stamp_ms / 1000.0, prompt, output, block_hashes, hash_tokens)


@lru_cache(maxsize=16)
def _length_column(path: str, column: str, _size: int, _mtime_ns: int) -> np.ndarray:
    file = Path(path)
    frame = _read_table(file, (column,))
    values = _numbers(file, frame, column)
    bad = np.flatnonzero(values < 0.5)  # lengths are rounded to whole tokens; 0 is not a request
    if bad.size:
        raise _bad_row(file, int(frame.index[bad[0]]), column, frame[column].iloc[bad[0]], "a length >= 1")
    tokens = np.round(values).astype(np.int64)
    tokens.setflags(write=False)
    return tokens

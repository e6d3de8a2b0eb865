"""Reading the rows of trace and length files, and checking their numbers.

Every check names the file, the line and the value, and says what is allowed: token counts are
whole numbers up to MAX_TOKENS, times finite and within MAX_TIMESTAMP_S, files under
MAX_TRACE_BYTES and at most MAX_NUM_REQUESTS rows, text UTF-8.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from simulator.common.encoding import check_utf8
from simulator.common.errors import ConfigError
from simulator.common.limits import MAX_NUM_REQUESTS, MAX_TIMESTAMP_S, MAX_TOKENS, MAX_TRACE_BYTES


def existing(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    size = path.stat().st_size
    if size > MAX_TRACE_BYTES:
        raise ConfigError(f"{path}: {size:,} bytes is larger than a {what} may be ({MAX_TRACE_BYTES:,})")
    return path


def shown(value) -> str:
    if isinstance(value, np.generic):
        value = value.item()  # 1e+19, not np.float64(1e+19)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def bad_row(path: Path, line: int, column: str, value, allowed: str) -> ConfigError:
    return ConfigError(f"{path}, line {line}: {column} = {shown(value)} is not {allowed}")


def check_row_count(path: Path, rows: int) -> None:
    if rows > MAX_NUM_REQUESTS:
        raise ConfigError(f"{path}: {rows:,} rows, more than the {MAX_NUM_REQUESTS:,} a run may hold")


def read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """CSV as strings; the index is the 1-based file line of each row (blank lines skipped)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False, encoding="utf-8")
    except UnicodeDecodeError:
        check_utf8(path)  # names the byte
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except pd.errors.EmptyDataError:
        raise ConfigError(f"{path}: file is empty, expected a header {','.join(columns)}") from None
    except (ValueError, OverflowError, MemoryError) as exc:  # ParserError is a ValueError
        raise ConfigError(f"{path}: malformed CSV: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(frame.index, pd.RangeIndex):  # pandas took the extra fields of line 2 as an index
        raise ConfigError(f"{path}, line 2: more fields than the header's {len(frame.columns)}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        found = ", ".join(str(c)[:40] for c in frame.columns[:20])
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}; found {found}")
    frame = frame[list(columns)]
    frame.index = frame.index + 2  # line 1 is the header
    blank = (frame == "").all(axis=1)
    frame = frame[~blank]
    if frame.empty:
        raise ConfigError(f"{path}: no data rows")
    check_row_count(path, len(frame))
    return frame


def numbers(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64; the first cell that is not a finite number raises with its line."""
    raw = frame[column]
    values = pd.to_numeric(raw.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise bad_row(path, int(frame.index[bad[0]]), column, raw.iloc[bad[0]], "a finite number")
    return values


def times(
    path: Path, lines: np.ndarray, column: str, values: np.ndarray, raw=None, unit: float = 1.0
) -> np.ndarray:
    """Validate times in seconds / `unit` (1000 for milliseconds): finite, >= 0, at most MAX_TIMESTAMP_S."""
    bad = np.flatnonzero(~((values >= 0) & (values <= MAX_TIMESTAMP_S * unit)))
    if bad.size:
        i = bad[0]
        shown_value = raw[i] if raw is not None else values[i]
        what = "ms" if unit == 1000 else "s"
        limit = f"{MAX_TIMESTAMP_S * unit:.0e}"
        raise bad_row(path, int(lines[i]), column, shown_value, f"a time from 0 to {limit} {what}")
    return values


def token_counts(
    path: Path, lines: np.ndarray, column: str, values: np.ndarray, raw=None, low: int = 1
) -> np.ndarray:
    """Validate token counts: whole numbers from `low` to MAX_TOKENS, as int64."""
    bad = np.flatnonzero(~((values >= low) & (values <= MAX_TOKENS)) | (values != np.round(values)))
    if bad.size:
        i = bad[0]
        shown_value = raw[i] if raw is not None else values[i]
        allowed = f"a whole number of tokens from {low} to {MAX_TOKENS:,}"
        raise bad_row(path, int(lines[i]), column, shown_value, allowed)
    return values.astype(np.int64)


def column_tokens(path: Path, frame: pd.DataFrame, column: str, low: int = 1) -> np.ndarray:
    values = numbers(path, frame, column)
    return token_counts(path, frame.index.to_numpy(), column, values, frame[column].to_numpy(), low)


def column_times(path: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    values = numbers(path, frame, column)
    return times(path, frame.index.to_numpy(), column, values, frame[column].to_numpy())

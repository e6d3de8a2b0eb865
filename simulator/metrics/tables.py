"""Tables of results on disk: CSV always, Parquet as well when asked (`--format parquet`).

Parquet keeps column types (booleans, integers with missing values, floats at full precision)
for analysis in pandas, polars or DuckDB; it needs pyarrow (`pip install 'llmsim[parquet]'`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from simulator.common.errors import ConfigError

FORMATS = ("csv", "parquet")


def check_formats(formats: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"--format {bad[0]!r}: not one of {', '.join(FORMATS)}")
    if "parquet" in formats:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("--format parquet needs pyarrow: pip install 'llmsim[parquet]' (or pyarrow)") from None
    return tuple(dict.fromkeys(["csv", *formats]))


def write_table(frame: pd.DataFrame, stem: Path, formats: tuple[str, ...] = ("csv",),
                float_format: str = "%.6g") -> list[Path]:
    """`stem`.csv, and `stem`.parquet when asked; object columns holding mixed values become text
    in Parquet (its columns have one type)."""
    paths = [stem.with_suffix(".csv")]
    frame.to_csv(paths[0], index=False, float_format=float_format)
    if "parquet" in formats:
        out = frame.copy()
        for col in out.columns:
            if out[col].dtype == object:
                out[col] = out[col].map(lambda v: None if v is None or pd.isna(v) is True else str(v))
        paths.append(stem.with_suffix(".parquet"))
        out.to_parquet(paths[1], index=False)
    return paths

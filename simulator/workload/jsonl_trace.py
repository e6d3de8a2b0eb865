"""JSON-lines trace files: one object per line, read with the line of every record kept."""

from __future__ import annotations

import json
from pathlib import Path

from simulator.common.encoding import check_utf8
from simulator.common.errors import ConfigError


def _parse_line(path: Path, number: int, text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}, line {number}: not valid JSON ({exc.msg}): {text.strip()[:80]!r}"
        ) from None
    except ValueError as exc:  # an integer beyond Python's digit limit for str -> int
        raise ConfigError(f"{path}, line {number}: {' '.join(str(exc).split())[:120]}") from None
    except RecursionError:
        raise ConfigError(f"{path}, line {number}: nested too deeply to read") from None


def read_jsonl_records(path: Path, keys: tuple[str, ...]) -> tuple[list[dict], list[int]]:
    """The objects of a JSON-lines file (blank lines skipped), each required to hold `keys`, and
    the 1-based line each came from."""
    records: list[dict] = []
    lines: list[int] = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                record = _parse_line(path, number, text)
                if not isinstance(record, dict) or any(k not in record for k in keys):
                    raise ConfigError(
                        f"{path}, line {number}: expected an object with keys {', '.join(keys)}"
                    )
                records.append(record)
                lines.append(number)
    except UnicodeDecodeError:
        check_utf8(path)  # names the byte
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if not records:
        raise ConfigError(f"{path}: no data rows")
    return records, lines

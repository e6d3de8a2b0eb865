"""Reading users' YAML files and writing results so that readers never see half a file or folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from simulator.common.errors import ConfigError
from simulator.common.yaml_reader import read_yaml_file


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """The mapping a user's YAML file holds; `what` ("scenario", "calibration") names it in errors.
    The file is read defensively (size, encoding, duplicate keys, nesting, aliases; see
    simulator.common.yaml_reader)."""
    data = read_yaml_file(path, what)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a mapping of keys to values")
    return data


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` so that readers see the old file or the new one, never a part.

    The bytes go to a temporary file in the same directory (same filesystem), are flushed to disk,
    then renamed over `path`. Parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """`write_bytes_atomic` for UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"))


@contextmanager
def atomic_directory(out: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling folder to fill; on success it replaces `out`, on error it goes."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

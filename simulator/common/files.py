"""Reading users' YAML files, and writing results so that readers never see half a file and no
file llmsim did not write is ever replaced or removed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
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


# Every folder of results llmsim writes lists its files here: what llmsim may replace or remove
# there next time, and the proof that the folder is llmsim's.
MANIFEST = ".llmsim-files.json"
_STAGING = ".staging-"


def _manifest(folder: Path) -> set[str] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
        return set(data["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _foreign(folder: Path, ours: set[str]) -> list[str]:
    """Entries of `folder` llmsim did not write: not in its manifest, not staging, not a result
    folder of llmsim's own (a sub-folder with a manifest, such as sweep/ beside a run's files)."""
    tops = {name.split("/", 1)[0] for name in ours}
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.name == MANIFEST or entry.name.startswith(_STAGING) or entry.name in tops:
            continue
        if entry.is_dir() and (entry / MANIFEST).is_file():
            continue
        out.append(entry.name)
    return out


@contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Ctrl-C while files are moved into place waits until they all are (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda sig, frame: received.append(sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


@contextmanager
def result_files(out: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a staging folder to write a set of result files into; on success each file is moved
    into `out` (atomically, file by file, interrupts deferred), and files llmsim wrote there before
    that this set no longer has are removed. Nothing else in `out` is touched: other files, other
    result sets' sub-folders. On error or interrupt before the end, `out` is left as it was.

    `out` must be new, empty or written by llmsim before (it holds a manifest); another folder
    holding files is refused unless `force`, and even then they are left alone."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file, not a folder; results are written into a folder")
    manifest = _manifest(out) if out.is_dir() else None
    previous = manifest or set()
    if out.is_dir() and manifest is None and not force:
        foreign = _foreign(out, previous)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise ConfigError(
                f"{out}: the folder holds files llmsim did not write ({shown}); llmsim writes results into "
                "a new folder, an empty one or one it wrote before. Choose another folder, or pass --force to "
                "add llmsim's files to it (nothing else there is touched or removed)"
            )
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=_STAGING))
    try:
        yield stage
        written = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
        with _interrupts_deferred():
            for name in written:
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(stage / name, out / name)
            for name in sorted(previous - set(written)):  # ours, from the last write of this set
                stale = out / name
                if stale.is_file() and not stale.is_symlink():
                    stale.unlink()
                    _remove_empty_parents(stale.parent, out)
            write_text_atomic(out / MANIFEST, json.dumps({"written_by": "llmsim", "files": written}, indent=1) + "\n")
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _remove_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and folder.is_relative_to(root) and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent

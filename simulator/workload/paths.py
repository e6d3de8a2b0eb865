"""Where a data file named in a scenario is looked for."""

from __future__ import annotations

from pathlib import Path

from simulator.common.errors import ConfigError

_REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_path(path: str, base_dir: Path | None, field: str) -> Path:
    """A data file named in a scenario: absolute, or relative to the scenario's folder, the project
    root, or the working directory, tried in that order."""
    given = Path(path).expanduser()
    if given.is_absolute():
        candidates = [given]
    else:
        roots = [base_dir] if base_dir is not None else []
        candidates = list(dict.fromkeys(Path(r) / given for r in [*roots, _REPO_ROOT, Path.cwd()]))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"{field}: file {path!r} not found (tried {tried})")

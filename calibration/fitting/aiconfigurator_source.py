"""Reading NVIDIA aiconfigurator-core's measured kernel tables (Apache-2.0), without importing it.

The package ships, under `aiconfigurator_core/systems/`, one YAML file per GPU system (peak
rates, node shape, the NCCL version its collectives were measured with) and a data tree
`data/<system>/<family>/<backend>/<version>/<table>_perf.parquet` of kernel latencies in
milliseconds. `query_versions.yaml` names the backend version each system is maintained at. We
locate the package with importlib (its compiled extension never loads) and read the files with
pandas; a folder of the same layout holding CSV files (`<table>_perf.csv`, or the `.txt` CSV of
earlier releases) reads the same way.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import yaml

from simulator.common.errors import ConfigError
from simulator.execution.kernels.op_table import version_key

PACKAGE = "aiconfigurator-core"
PINNED_VERSION = "0.12.0"
LICENCE = "Apache-2.0"
EXTRA_HINT = f"pip install 'llmsim[aiconfigurator]' (installs {PACKAGE}=={PINNED_VERSION})"

# llmsim catalog hardware -> aiconfigurator system.
SYSTEMS = {
    "a100-80gb": "a100_sxm",
    "h100-sxm": "h100_sxm",
    "h200": "h200_sxm",
    "b200": "b200_sxm",
    "l40s": "l40s",
}
BACKENDS = ("vllm", "sglang", "trtllm")


@dataclass(frozen=True)
class AicSystem:
    root: Path  # the systems folder
    name: str  # e.g. h100_sxm
    spec: dict  # the system YAML
    package_version: str

    @property
    def data_dir(self) -> Path:
        return self.root / self.spec.get("data_dir", f"data/{self.name}")

    def versions(self, family: str, backend: str) -> list[str]:
        folder = self.data_dir / family / backend
        if not folder.is_dir():
            return []
        return sorted((p.name for p in folder.iterdir() if p.is_dir()), key=version_key)

    def current_version(self, backend: str) -> str:
        """The version aiconfigurator queries by default (query_versions.yaml), else the newest."""
        slots = self.root / "query_versions.yaml"
        if slots.is_file():
            doc = yaml.safe_load(slots.read_text()) or {}
            entry = (doc.get("overrides") or {}).get(self.name, {}).get(backend) or (doc.get("defaults") or {}).get(
                backend
            )
            if entry and entry.get("current"):
                return str(entry["current"])
        found = self.versions("gemm", backend)
        if not found:
            raise ConfigError(f"aiconfigurator system {self.name!r} has no {backend} tables")
        return found[-1]

    def table_dir(self, family: str, backend: str, version: str, table: str) -> tuple[Path, str] | None:
        """The folder holding `table` for `version`, or for the newest older version that has it
        (aiconfigurator fills a family missing from a version from older ones the same way)."""
        candidates = [v for v in self.versions(family, backend) if version_key(v) <= version_key(version)]
        for v in reversed(candidates):
            folder = self.data_dir / family / backend / v
            if _table_file(folder, table) is not None:
                return folder, v
        return None


def _table_file(folder: Path, table: str) -> Path | None:
    for suffix in (".parquet", ".csv", ".txt"):
        path = folder / f"{table}_perf{suffix}"
        if path.is_file():
            return path
    return None


def read_table(folder: Path, table: str):
    """A table as a pandas DataFrame (parquet needs pyarrow, which the extra installs)."""
    import pandas as pd

    path = _table_file(folder, table)
    if path is None:
        raise ConfigError(f"no {table}_perf table in {folder}")
    if path.suffix == ".parquet":
        try:
            return pd.read_parquet(path)
        except ImportError:
            raise ConfigError(f"reading {path} needs pyarrow: {EXTRA_HINT}") from None
    return pd.read_csv(path)


def relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def locate_systems(explicit_root: str | None = None) -> tuple[Path, str]:
    """The package's systems folder and its version; `explicit_root` is a folder of the same layout."""
    if explicit_root is not None:
        root = Path(explicit_root)
        if not (root / "data").is_dir():
            raise ConfigError(f"--aiconfigurator-root {root}: expected a systems folder with a data/ subfolder")
        version_file = root / "VERSION"
        return root, version_file.read_text().strip() if version_file.is_file() else "unknown"
    spec = importlib.util.find_spec("aiconfigurator_core")
    if spec is None or spec.origin is None:
        raise ConfigError(f"--from-aiconfigurator reads the tables of {PACKAGE}, which is not installed: {EXTRA_HINT}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        package_version = version(PACKAGE)
    except PackageNotFoundError:
        package_version = "unknown"
    return Path(spec.origin).parent / "systems", package_version


def open_system(hardware_or_system: str, explicit_root: str | None = None) -> tuple[AicSystem, str]:
    """The aiconfigurator system for a catalog GPU (or a system name) and the catalog name."""
    root, package_version = locate_systems(explicit_root)
    by_system = {v: k for k, v in SYSTEMS.items()}
    if hardware_or_system in SYSTEMS:
        hardware, system = hardware_or_system, SYSTEMS[hardware_or_system]
    elif hardware_or_system in by_system:
        hardware, system = by_system[hardware_or_system], hardware_or_system
    else:
        raise ConfigError(
            f"unknown system {hardware_or_system!r}; allowed: {', '.join(SYSTEMS)} "
            f"(or aiconfigurator's names {', '.join(SYSTEMS.values())})"
        )
    spec_path = root / f"{system}.yaml"
    if not spec_path.is_file():
        raise ConfigError(f"{spec_path} not found: this aiconfigurator tree has no system {system!r}")
    return AicSystem(root, system, yaml.safe_load(spec_path.read_text()) or {}, package_version), hardware

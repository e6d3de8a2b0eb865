"""Which kernel-table file a scenario's deployment uses, if any.

Shipped files live in calibration/kernel_tables/<engine>-<version>/<hardware>/<model>.yaml. A
scenario names the serving engine (default vLLM) and optionally its version (default: the newest
shipped for that model and GPU). A model, GPU or weight dtype without tables runs on the
roofline model, and the run says so.
"""

from __future__ import annotations

from pathlib import Path

from simulator.errors import ConfigError
from simulator.kernel_model.op_table import load_kernel_tables, version_key
from simulator.kernel_model.overhead import host_overhead_for
from simulator.kernel_model.step_model import KernelTableModel

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
TABLES_DIR = REPO_ROOT / "calibration" / "kernel_tables"


def shipped(engine: str, hardware: str, model: str, root: Path = TABLES_DIR) -> dict[str, Path]:
    """version -> file of the shipped tables for a model on a GPU under an engine."""
    out = {}
    if root.is_dir():
        for folder in root.glob(f"{engine}-*"):
            path = folder / hardware / f"{model}.yaml"
            if path.is_file():
                out[folder.name[len(engine) + 1 :]] = path
    return out


def find_tables(engine: str, version: str | None, hardware: str, model: str, root: Path = TABLES_DIR):
    """(path or None, why not): the file for these names, the newest version when none is given."""
    found = shipped(engine, hardware, model, root)
    if not found:
        return None, f"no {engine} kernel tables for {model} on {hardware}"
    if version is None:
        version = max(found, key=version_key)
    if version not in found:
        raise ConfigError(
            f"execution.engine_version: no {engine} {version} kernel tables for {model} on {hardware}; "
            f"shipped versions: {', '.join(sorted(found, key=version_key))}"
        )
    return found[version], ""


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def kernel_model_for(scenario):
    """(KernelTableModel or None, notice): the kernel-table model a scenario's execution section
    asks for, or None and the reason the roofline is used instead."""
    ex, dep = scenario.execution, scenario.deployment
    model, hardware = scenario.model_spec(), scenario.hardware_spec()
    if isinstance(ex.kernel_tables, str):
        path = scenario.resolve(ex.kernel_tables)
        if not path.is_file():
            path = REPO_ROOT / ex.kernel_tables
        if not path.is_file():
            raise ConfigError(f"execution.kernel_tables: file {ex.kernel_tables!r} not found")
        tables = load_kernel_tables(path)
        wrong = [f"{what} {have!r} but the scenario's is {want!r}" for what, have, want in
                 (("model", tables.model, model.name), ("hardware", tables.hardware, hardware.name))
                 if have != want]
        if wrong:
            raise ConfigError(f"execution.kernel_tables: {path} is for {'; '.join(wrong)}")
    else:
        path, why = find_tables(ex.engine, ex.engine_version, hardware.name, model.name)
        if path is None:
            return None, f"{why}: step times from the roofline model"
        tables = load_kernel_tables(path)
    overhead = host_overhead_for(tables.engine, ex.host_overhead.model_dump(exclude_none=True))
    try:
        return KernelTableModel(tables, model, hardware, tp=dep.tensor_parallel, weight_dtype=dep.weight_dtype,
                                kv_dtype=dep.kv_dtype, overhead=overhead, allreduce=ex.allreduce,
                                where=_relative(path)), ""
    except LookupError as exc:
        return None, f"{_relative(path)}: {exc}: step times from the roofline model"


def describe_execution(execution) -> dict:
    """An execution model's description, with the reason kernel tables were not used, if any."""
    out = execution.describe()
    notice = getattr(execution, "kernel_tables_notice", "")
    if notice:
        out["notice"] = notice
    return out

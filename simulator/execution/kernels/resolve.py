"""Which kernel-table file a deployment uses, if any, and the model built from it.

Shipped files live in calibration/kernel_tables/<engine>-<version>/<hardware>/<model>.yaml. A
scenario names the serving engine (default vLLM) and optionally its version (default: the newest
shipped for that model and GPU). A dense model's file gives the kernel-table model, a mixture of
experts' file the MoE kernel-table model (measured MoE layers and GEMMs on the MoE roofline's
layout). A model, GPU or weight dtype without tables runs on the roofline model, and the run
says so.
"""

from __future__ import annotations

from pathlib import Path

from simulator.common.errors import ConfigError
from simulator.execution.kernels.moe_step_model import MoEKernelTableModel
from simulator.execution.kernels.op_table import load_kernel_tables, version_key
from simulator.execution.kernels.overhead import host_overhead_for
from simulator.execution.kernels.step_model import KernelTableModel
from simulator.spec import HardwareSpec, ModelSpec
from simulator.spec.parallel import Parallelism

REPO_ROOT = Path(__file__).resolve().parents[3]
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


def relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _check_names(tables, path: Path, model: ModelSpec, hardware: HardwareSpec) -> None:
    wrong = [f"{what} {have!r} but the scenario's is {want!r}" for what, have, want in
             (("model", tables.model, model.name), ("hardware", tables.hardware, hardware.name))
             if have != want]  # fmt: skip
    if wrong:
        raise ConfigError(f"execution.kernel_tables: {path} is for {'; '.join(wrong)}")


def moe_kernel_model(
    path: Path, model: ModelSpec, hardware: HardwareSpec, *, layout: Parallelism, weight_dtype: str, kv_dtype: str,
    expert_dtype: str | None, micro_batches: int | None, routing_imbalance: float, check_names: bool = False,
) -> tuple[MoEKernelTableModel | None, str]:  # fmt: skip
    """(MoEKernelTableModel or None, notice) for a mixture of experts, as `kernel_model`."""
    tables = load_kernel_tables(path)
    if check_names:
        _check_names(tables, path, model, hardware)
    try:
        return MoEKernelTableModel(tables, model, hardware, layout=layout, weight_dtype=weight_dtype,
                                   kv_dtype=kv_dtype, expert_dtype=expert_dtype, micro_batches=micro_batches,
                                   routing_imbalance=routing_imbalance, where=relative(path)), ""  # fmt: skip
    except LookupError as exc:
        return None, f"{relative(path)}: {exc}: step times from the roofline model"


def kernel_model(
    path: Path, model: ModelSpec, hardware: HardwareSpec, *, tp: int, weight_dtype: str, kv_dtype: str,
    host_overhead: dict, allreduce: str, check_names: bool = False,
) -> tuple[KernelTableModel | None, str]:  # fmt: skip
    """(KernelTableModel or None, notice): the model a kernel-table file gives this deployment, or
    None and the reason the roofline is used instead. `check_names`: the file was named by the
    user, so it must describe this model and GPU."""
    tables = load_kernel_tables(path)
    if check_names:
        _check_names(tables, path, model, hardware)
    overhead = host_overhead_for(tables.engine, host_overhead)
    try:
        return KernelTableModel(tables, model, hardware, tp=tp, weight_dtype=weight_dtype, kv_dtype=kv_dtype,
                                overhead=overhead, allreduce=allreduce, where=relative(path)), ""  # fmt: skip
    except LookupError as exc:
        return None, f"{relative(path)}: {exc}: step times from the roofline model"

"""Specs are data: model and hardware catalogs (YAML, each number with its source), the quantities
derived from them, and what fits in GPU memory. Imports only simulator.common."""

from simulator.spec.catalog import get_hardware, get_model, hardware_names, model_names
from simulator.spec.dtypes import DTYPE_BYTES, GB, GiB, compute_dtype_for, dtype_bytes
from simulator.spec.hardware import HardwareSpec
from simulator.spec.inline import hardware_from_dict, model_from_dict
from simulator.spec.model import ModelSpec
from simulator.spec.parallel import Parallelism

__all__ = [
    "DTYPE_BYTES",
    "GB",
    "GiB",
    "HardwareSpec",
    "ModelSpec",
    "Parallelism",
    "compute_dtype_for",
    "dtype_bytes",
    "get_hardware",
    "get_model",
    "hardware_from_dict",
    "hardware_names",
    "model_from_dict",
    "model_names",
]

"""Calibration files: a step-time model for one model, device and dtype, with where it came from.

One YAML file per (model, hardware, dtype, quantization). Three provenances:

- `measured`: coefficients fitted to steps timed on a real device (`llmsim profile` then
  `llmsim calibrate`), with the measured ranges and the held-out fit errors;
- `roofline`: efficiency factors and overheads for the roofline model, each from a named source;
- `transferred`: roofline efficiencies derived from a measured fit on another device.

A scenario uses one with `execution: {calibration: PATH}`. The file must describe the scenario's
model, hardware and dtypes: a calibration of another model or dtype predicts nothing about this one.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from simulator.common.errors import ConfigError
from simulator.common.files import read_yaml_mapping
from simulator.common.schema_errors import format_validation_error
from simulator.execution.fitted import Coefficients, FittedModel, MeasuredRange, StepWork, _Strict
from simulator.execution.roofline import RooflineEfficiency, RooflineModel, StepOverhead
from simulator.spec import HardwareSpec, ModelSpec

FORMAT = "llmsim-calibration/1"
REPO_ROOT = Path(__file__).resolve().parents[2]


class FittedSection(_Strict):
    coefficients: Coefficients
    work: StepWork
    measured_range: MeasuredRange
    fit_error: dict[str, Any] = Field(
        default_factory=dict, description="held-out errors, see calibration/fit.py"
    )


class EfficiencySection(_Strict):
    memory_bandwidth: float = Field(..., gt=0, le=1)
    linear_compute: float = Field(..., gt=0, le=1)
    attention_compute: float = Field(..., gt=0, le=1)
    interconnect: float = Field(RooflineEfficiency.interconnect, gt=0, le=1)


class OverheadSection(_Strict):
    constant_s: float = Field(..., ge=0)
    per_sequence_s: float = Field(0.0, ge=0)
    per_token_s: float = Field(0.0, ge=0)


class RooflineSection(_Strict):
    efficiency: EfficiencySection
    overhead: OverheadSection


class Calibration(_Strict):
    format: Literal["llmsim-calibration/1"] = FORMAT
    model: str = Field(..., description="catalog model name")
    hardware: str = Field(..., description="catalog hardware name, or the name of an inline spec")
    device: str = Field("", description="the device as the profiler saw it (CPU or GPU name)")
    dtype: Literal["fp32", "bf16", "fp16"] = Field(..., description="activation and KV-cache dtype")
    quantization: Literal["int8"] | None = Field(None, description="weight-only quantisation, if any")
    tensor_parallel: int = Field(1, gt=0)
    provenance: Literal["measured", "roofline", "transferred"]
    fitted: FittedSection | None = None
    roofline: RooflineSection | None = None
    expected_error: str = Field("", description="how far predictions may be off, in words")
    source: dict[str, Any] = Field(
        default_factory=dict, description="device, dates, versions, files, references"
    )

    @model_validator(mode="after")
    def _one_model_section(self) -> Calibration:
        if self.provenance == "measured" and (self.fitted is None or self.roofline is not None):
            raise ValueError("a measured calibration has a fitted: section and no roofline: section")
        if self.provenance != "measured" and (self.roofline is None or self.fitted is not None):
            raise ValueError(
                f"a {self.provenance} calibration has a roofline: section and no fitted: section"
            )
        return self

    @property
    def weight_dtype(self) -> str:
        return self.quantization or self.dtype

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False, width=110)


def load_calibration(path: str | Path) -> Calibration:
    data = read_yaml_mapping(path, "calibration")
    try:
        return Calibration.model_validate(data)
    except ValidationError as exc:
        message = format_validation_error(exc, Calibration, str(path))
        raise ConfigError(message.replace("invalid scenario", "invalid calibration file", 1)) from None


def check_matches(
    cal: Calibration, where: str, *, model: str, hardware: str, weight_dtype: str, kv_dtype: str,
    tensor_parallel: int,
) -> None:  # fmt: skip
    """Raise ConfigError when the calibration describes another model, hardware or dtype."""
    wrong = []
    if cal.model != model:
        wrong.append(f"model {cal.model!r} but the scenario's model is {model!r}")
    if cal.hardware != hardware:
        wrong.append(f"hardware {cal.hardware!r} but the scenario's hardware is {hardware!r}")
    if cal.weight_dtype != weight_dtype:
        wrong.append(f"weight dtype {cal.weight_dtype!r} but deployment.weight_dtype is {weight_dtype!r}")
    if cal.dtype != kv_dtype:
        wrong.append(f"KV-cache dtype {cal.dtype!r} but deployment.kv_dtype is {kv_dtype!r}")
    if cal.provenance == "measured" and tensor_parallel != cal.tensor_parallel:
        wrong.append(
            f"tensor_parallel {cal.tensor_parallel} but deployment.tensor_parallel is {tensor_parallel}"
        )
    if wrong:
        raise ConfigError(
            f"execution.calibration: {where} is for {'; '.join(wrong)}. Use a calibration of this model, "
            "hardware and dtype, or change the scenario to match it"
        )


class CalibratedRoofline(RooflineModel):
    """The roofline model with efficiencies and overheads from a calibration file."""

    def __init__(self, cal: Calibration, where: str, model: ModelSpec, hardware: HardwareSpec, *, tp: int,
                 weight_dtype: str, kv_dtype: str):  # fmt: skip
        eff, oh = cal.roofline.efficiency, cal.roofline.overhead
        super().__init__(
            model,
            hardware,
            tp=tp,
            weight_dtype=weight_dtype,
            kv_dtype=kv_dtype,
            efficiency=RooflineEfficiency(**eff.model_dump()),
            overhead=StepOverhead(**oh.model_dump()),
        )
        self.provenance = cal.provenance
        self._calibration = {"calibration": where, "source": cal.source, "expected_error": cal.expected_error}

    def describe(self) -> dict:
        out = super().describe()
        out.update(self._calibration)
        out["efficiency"] = asdict(self.efficiency)
        out.pop("sources", None)  # the calibration names its own
        return out


def fitted_model(cal: Calibration, where: str = "") -> FittedModel:
    f = cal.fitted
    description = {
        "calibration": where,
        "model": cal.model,
        "hardware": cal.hardware,
        "device": cal.device,
        "dtype": cal.dtype,
        "quantization": cal.quantization,
        "fit_error": f.fit_error,
        "source": cal.source,
    }
    return FittedModel(f.coefficients, f.work, f.measured_range, description)


def calibrated_model(
    path: Path, model: ModelSpec, hardware: HardwareSpec, *, tp: int, weight_dtype: str, kv_dtype: str
) -> FittedModel | CalibratedRoofline:
    """The step-time model a calibration file describes, checked against the deployment it prices."""
    cal = load_calibration(path)
    where = str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
    check_matches(cal, where, model=model.name, hardware=hardware.name, weight_dtype=weight_dtype,
                  kv_dtype=kv_dtype, tensor_parallel=tp)  # fmt: skip
    if cal.provenance == "measured":
        return fitted_model(cal, where)
    return CalibratedRoofline(cal, where, model, hardware, tp=tp, weight_dtype=weight_dtype, kv_dtype=kv_dtype)

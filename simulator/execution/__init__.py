"""Step-time models: how long one engine step takes (roofline from specs, fitted from measurements,
calibration files), each saying where its numbers come from. Imports simulator.spec and
simulator.common."""

from simulator.execution.base import ExecutionModel
from simulator.execution.roofline import RooflineEfficiency, RooflineModel, StepOverhead

__all__ = ["ExecutionModel", "RooflineEfficiency", "RooflineModel", "StepOverhead"]

"""Roofline stand-ins for attention when a kernel-table file has no slice for the deployment's
heads or KV dtype: the formulas of simulator/execution/roofline.py (KV bytes over derated bandwidth,
causal FLOPs over derated peak), per layer and per row, behind the table pricers' interface."""

from __future__ import annotations

import numpy as np

from simulator.execution import RooflineEfficiency
from simulator.execution.kernels.interpolate import Provenance
from simulator.execution.kernels.shapes import RankShapes
from simulator.spec import HardwareSpec

DEFAULT_EFFICIENCY = RooflineEfficiency()


class RooflineDecode:
    knot_len = np.array([1.0])

    def __init__(self, shapes: RankShapes, hardware: HardwareSpec, kv_bytes: float,
                 efficiency: RooflineEfficiency = DEFAULT_EFFICIENCY):
        bandwidth = hardware.memory_bandwidth * efficiency.memory_bandwidth
        self.s_per_kv_token = 2 * shapes.kv_heads * shapes.head_dim * kv_bytes / bandwidth

    def segments(self, rows: int):
        return np.array([0.0, 0.0]), np.array([self.s_per_kv_token, self.s_per_kv_token]), 0.0, Provenance.ROOFLINE

    def seconds(self, rows: int, kv_len: np.ndarray) -> np.ndarray:
        return (self.s_per_kv_token * kv_len).sum(axis=-1)

    def provenance(self, rows: int, shortest: float, longest: float) -> Provenance:
        return Provenance.ROOFLINE


class RooflinePrefill:
    def __init__(self, shapes: RankShapes, hardware: HardwareSpec, kv_bytes: float,
                 efficiency: RooflineEfficiency = DEFAULT_EFFICIENCY):
        self.decode = RooflineDecode(shapes, hardware, kv_bytes, efficiency)
        peak = hardware.peak_flops("fp16") * efficiency.attention_compute
        self.s_per_pair = 4.0 * shapes.heads * shapes.head_dim / peak

    def seconds(self, new: np.ndarray, cached: np.ndarray) -> tuple[float, Provenance]:
        if len(new) == 0:
            return 0.0, Provenance.MEASURED
        math = new * (cached + (new + 1) / 2) * self.s_per_pair
        read = (cached + new) * self.decode.s_per_kv_token
        return float(np.maximum(math, read).sum()), Provenance.ROOFLINE

"""Collective times (all-reduce, all-gather) from measured curves over message bytes, per number
of ranks and implementation; the ring formula of the roofline model where no curve exists."""

from __future__ import annotations

import numpy as np

from simulator.execution.kernels.interpolate import Provenance, curve_on
from simulator.execution.kernels.op_table import CollectiveTable, parse_numbers
from simulator.spec import HardwareSpec


class Collectives:
    def __init__(self, table: CollectiveTable | None, hardware: HardwareSpec, link_efficiency: float):
        self.hardware, self.link_efficiency = hardware, link_efficiency
        self._curves: dict[tuple[str, str, int], np.ndarray] = {}
        self.kernels: dict[tuple[str, str, int], str] = {}
        self.bytes = np.array([])
        if table is not None:
            self.bytes = parse_numbers(table.bytes, "collectives.bytes")
            for c in table.curves:
                key = (c.op, c.implementation, c.ranks)
                self._curves[key] = parse_numbers(c.us, f"collective {key}") * 1e-6
                self.kernels[key] = c.kernel

    def has(self, op: str, implementation: str, ranks: int) -> bool:
        return (op, implementation, ranks) in self._curves

    def seconds(self, op: str, implementation: str, ranks: int, message_bytes) -> tuple[np.ndarray, np.ndarray]:
        """Seconds and provenance codes of one collective over `message_bytes` (array)."""
        message_bytes = np.asarray(message_bytes, dtype=np.float64)
        if ranks <= 1:
            return np.zeros_like(message_bytes), np.zeros(message_bytes.shape, dtype=np.int8)
        curve = self._curves.get((op, implementation, ranks))
        if curve is None:
            return self._ring(op, ranks, message_bytes), np.full(message_bytes.shape, Provenance.ROOFLINE, np.int8)
        values, codes = curve_on(np.maximum(message_bytes, 1.0), self.bytes, curve)
        # Below the smallest measured message the latency floor holds: still the measured range.
        codes = np.where(message_bytes < self.bytes[0], Provenance.MEASURED, codes).astype(np.int8)
        return np.where(message_bytes > 0, values, 0.0), codes

    def _ring(self, op: str, ranks: int, message_bytes: np.ndarray) -> np.ndarray:
        """The roofline's ring collective: (ranks-1)/ranks of the message per direction (twice for
        an all-reduce) over the derated link, plus a latency per hop."""
        hw = self.hardware
        passes = 2 if op == "all_reduce" else 1
        link = hw.interconnect_bandwidth * self.link_efficiency
        hops = passes * (ranks - 1)
        t = passes * (ranks - 1) / ranks * message_bytes / link + hops * hw.interconnect_latency
        return np.where(message_bytes > 0, t, 0.0)

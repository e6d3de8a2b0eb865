"""GEMM times from a measured table: by M along each measured N x K, and across N x K when the
exact shape was not measured.

Each measured shape (a "site") is a curve over M. A shape that was measured is read off its curve
(log-log between measured M). One that was not, but lies between measured N and K, blends the
four surrounding sites in log N x log K on log time (interpolated). One wider than the widest
measured N runs as equal column blocks (`shapes.gemm_query_shape`). Anything else takes the
nearest site's time scaled by the ratio of speed-of-light times, i.e. at that site's efficiency
(extrapolated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.execution.kernels.interpolate import Provenance, curve_on
from simulator.execution.kernels.op_table import GemmTable, parse_numbers
from simulator.execution.kernels.shapes import gemm_query_shape


@dataclass(frozen=True)
class SpeedOfLight:
    """Peak rates for work-proportional scaling: bytes/s and FLOP/s of the GEMM's dtype."""

    bandwidth: float
    flops: float
    weight_bytes: float  # bytes per weight element
    activation_bytes: float = 2.0

    def gemm_s(self, m, n: float, k: float) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        moved = k * n * self.weight_bytes + (m * k + m * n) * self.activation_bytes
        return np.maximum(moved / self.bandwidth, 2.0 * m * n * k / self.flops)


class GemmCurves:
    """The sites of one GEMM table, in seconds, with the rule that picks sites for a shape."""

    def __init__(self, table: GemmTable):
        self.table = table
        self.m = parse_numbers(table.m, "gemm.m")
        self.sites = {(s.n, s.k): parse_numbers(s.us, f"gemm site {s.n}x{s.k}") * 1e-6 for s in table.sites}
        self.ns = np.array(sorted({n for n, _ in self.sites}), dtype=np.float64)
        self.ks = np.array(sorted({k for _, k in self.sites}), dtype=np.float64)

    def plan(self, n: int, k: int) -> tuple[list[tuple[tuple[int, int], float]], int, Provenance]:
        """Sites and log-space weights for shape n x k, the number of column blocks, and the
        provenance of the shape (before the M axis is considered)."""
        n_eff, k, blocks = gemm_query_shape(n, k, self.table.n_max)
        split = Provenance.INTERPOLATED if blocks > 1 else Provenance.MEASURED
        if (n_eff, k) in self.sites:
            return [((n_eff, k), 1.0)], blocks, split
        corners = self._corners(n_eff, k)
        if corners is not None:
            return corners, blocks, Provenance.INTERPOLATED
        nearest = min(self.sites, key=lambda s: np.hypot(np.log(s[0] / n_eff), np.log(s[1] / k)))
        return [(nearest, 1.0)], blocks, Provenance.EXTRAPOLATED

    def _corners(self, n: int, k: int):
        def bracket(x, axis):
            if x < axis[0] or x > axis[-1]:
                return None
            hi = int(np.searchsorted(axis, x))
            if axis[hi] == x:
                return [(int(x), 1.0)]
            lo = hi - 1
            w = np.log(x / axis[lo]) / np.log(axis[hi] / axis[lo])
            return [(int(axis[lo]), 1.0 - w), (int(axis[hi]), w)]

        bn, bk = bracket(n, self.ns), bracket(k, self.ks)
        if bn is None or bk is None:
            return None
        corners = [((cn, ck), wn * wk) for cn, wn in bn for ck, wk in bk]
        return corners if all(site in self.sites for site, _ in corners) else None

    def times(self, n: int, k: int, m_grid, sol: SpeedOfLight) -> tuple[np.ndarray, np.ndarray]:
        """Seconds and provenance codes of the n x k GEMM at every M of `m_grid`."""
        plan, blocks, shape_code = self.plan(n, k)
        n_eff, k_eff, _ = gemm_query_shape(n, k, self.table.n_max)
        m_grid = np.asarray(m_grid, dtype=np.float64)
        log_t = np.zeros_like(m_grid)
        codes = np.zeros(m_grid.shape, dtype=np.int8)
        for (sn, sk), weight in plan:
            values, site_codes = curve_on(m_grid, self.m, self.sites[(sn, sk)])
            if shape_code == Provenance.EXTRAPOLATED:  # carry the site's efficiency to this shape
                values = values * sol.gemm_s(m_grid, n_eff, k_eff) / sol.gemm_s(m_grid, sn, sk)
            log_t += weight * np.log(values)
            codes = np.maximum(codes, site_codes)
        return blocks * np.exp(log_t), np.maximum(codes, shape_code).astype(np.int8)

    def used_sites(self, n: int, k: int) -> set[tuple[int, int]]:
        plan, _, _ = self.plan(n, k)
        return {site for site, _ in plan}

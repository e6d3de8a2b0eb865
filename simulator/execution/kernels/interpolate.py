"""Interpolation of measured kernel times, and the provenance of each answer.

Kernel times are multiplicative in their sizes (twice the rows, about twice the time once a
kernel is saturated; a floor below), so interpolation runs on log(time) against log(size):
exact at every measured point, and a straight line between neighbours on a log-log plot.
Outside the measured range a time is carried from the nearest measured point in proportion to
the work (bytes or FLOPs) the kernel does, i.e. at that point's efficiency.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Provenance(IntEnum):
    """Where a step's time came from; a step takes the worst of its kernels."""

    MEASURED = 0  # every kernel at a measured shape, inside the measured range of its axes
    INTERPOLATED = 1  # some kernel at a shape between measured ones (N/K, heads)
    EXTRAPOLATED = 2  # some kernel beyond the measured range, scaled by its work
    ROOFLINE = 3  # some kernel had no table at all

    @property
    def label(self) -> str:
        return ("measured-range", "interpolated", "extrapolated", "roofline")[self]


LABELS = tuple(p.label for p in Provenance)


def log_interp(x, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """log-log linear interpolation; `xs` ascending and positive, `ys` positive. Outside
    [xs[0], xs[-1]] the end values are held (callers decide how to extrapolate)."""
    return np.exp(np.interp(np.log(np.asarray(x, dtype=np.float64)), np.log(xs), np.log(ys)))


def log_bracket(x: float, xs: np.ndarray) -> tuple[int, int, float]:
    """Indices of the neighbours of x in ascending `xs` and the weight of the upper one, in log
    space; x is clipped into [xs[0], xs[-1]]."""
    x = min(max(float(x), float(xs[0])), float(xs[-1]))
    hi = int(np.searchsorted(xs, x, side="left"))
    if hi < len(xs) and xs[hi] == x:
        return hi, hi, 0.0
    lo = hi - 1
    w = (np.log(x) - np.log(xs[lo])) / (np.log(xs[hi]) - np.log(xs[lo]))
    return lo, hi, float(w)


def curve_on(grid: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A measured curve (NaNs dropped) evaluated on `grid`: log-log between points, held flat below
    the first (a kernel's floor), proportional to x beyond the last (its efficiency held).
    Returns (values, provenance codes)."""
    ok = np.isfinite(ys) & (ys > 0)
    xs, ys = xs[ok], ys[ok]
    grid = np.asarray(grid, dtype=np.float64)
    values = log_interp(grid, xs, ys)
    beyond = grid > xs[-1]
    values = np.where(beyond, ys[-1] * grid / xs[-1], values)
    codes = np.where((grid < xs[0]) | beyond, Provenance.EXTRAPOLATED, Provenance.MEASURED)
    return values, codes.astype(np.int8)

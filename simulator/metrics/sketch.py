"""A mergeable quantile sketch with a relative-error bound (the DDSketch construction), vectorised.

Values are counted in logarithmic buckets: with gamma = (1 + a) / (1 - a), bucket i holds the
values in (gamma^(i-1), gamma^i] and answers every quantile falling in it with
2 gamma^i / (gamma + 1). Any value in the bucket is then within a factor (1 +- a) of the answer,
so a quantile q is answered with relative error at most `a`: the answer lies between
(1 - a) x_q and (1 + a) x_q, where x_q is the exact value of rank ceil(q (n - 1)) (the lower
neighbour of numpy's interpolated percentile, whose neighbours both lie in [x_lo, x_hi]).
Values at or below `min_value` (zeros included) share one bucket answered with 0. Two sketches
with the same `a` merge by adding their bucket counts, so chunks, replicas or whole runs combine
exactly as if every value had been added to one sketch. Count, sum, minimum and maximum are kept
exactly. Memory: one counter per occupied bucket, about log(max / min) / log(gamma) of them
(1,150 for 1 us to 10,000 s at a = 1%).
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_RELATIVE_ERROR = 0.01


class LogBucketSketch:
    def __init__(self, relative_error: float = DEFAULT_RELATIVE_ERROR, min_value: float = 1e-9):
        if not 0 < relative_error < 1:
            raise ValueError(f"relative_error must be in (0, 1), got {relative_error}")
        self.relative_error = relative_error
        self.gamma = (1 + relative_error) / (1 - relative_error)
        self._log_gamma = math.log(self.gamma)
        self.min_value = min_value
        self.offset = 0  # bucket index of counts[0]
        self.counts = np.zeros(0, dtype=np.int64)
        self.zeros = 0  # values at or below min_value
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, values) -> None:
        """Count every finite value of an array (NaN are skipped; negative values are an error)."""
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        v = v[~np.isnan(v)]
        if v.size == 0:
            return
        if (v < 0).any():
            raise ValueError("the sketch holds non-negative values only")
        self.count += int(v.size)
        self.sum += float(v.sum())
        self.min, self.max = min(self.min, float(v.min())), max(self.max, float(v.max()))
        small = v <= self.min_value
        self.zeros += int(small.sum())
        v = v[~small]
        if v.size:
            self._add_buckets(np.ceil(np.log(v) / self._log_gamma).astype(np.int64))

    def _add_buckets(self, idx: np.ndarray, weights: np.ndarray | None = None) -> None:
        lo, hi = int(idx.min()), int(idx.max())
        if self.counts.size == 0:
            self.offset, self.counts = lo, np.zeros(hi - lo + 1, dtype=np.int64)
        elif lo < self.offset or hi >= self.offset + self.counts.size:
            new_lo, new_hi = min(lo, self.offset), max(hi, self.offset + self.counts.size - 1)
            grown = np.zeros(new_hi - new_lo + 1, dtype=np.int64)
            grown[self.offset - new_lo : self.offset - new_lo + self.counts.size] = self.counts
            self.offset, self.counts = new_lo, grown
        self.counts += np.bincount(idx - self.offset, weights=weights, minlength=self.counts.size).astype(np.int64)

    def merge(self, other: LogBucketSketch) -> None:
        """Add another sketch's values (same relative error)."""
        if other.relative_error != self.relative_error or other.min_value != self.min_value:
            raise ValueError("sketches merge only with the same relative_error and min_value")
        if other.count == 0:
            return
        self.count += other.count
        self.sum += other.sum
        self.zeros += other.zeros
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        occupied = np.flatnonzero(other.counts)
        if occupied.size:
            self._add_buckets(occupied + other.offset, other.counts[occupied].astype(np.float64))

    def quantile(self, q: float) -> float | None:
        """The value at quantile q in [0, 1] (None when empty), within the relative error; the
        extremes are exact."""
        if self.count == 0:
            return None
        if q <= 0:
            return self.min
        if q >= 1:
            return self.max
        rank = math.ceil(q * (self.count - 1))  # 0-based rank of the lower neighbour
        if rank < self.zeros:
            return 0.0 if self.min <= 0 else self.min
        cumulative = np.cumsum(self.counts)
        i = int(np.searchsorted(cumulative, rank - self.zeros, side="right"))
        value = 2 * self.gamma ** (i + self.offset) / (self.gamma + 1)
        return min(max(value, self.min), self.max)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

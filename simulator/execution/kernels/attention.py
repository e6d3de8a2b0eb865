"""Attention times from measured batch x sequence grids, priced per row of a step.

A table measures `batch` identical sequences at once. A step's rows differ, so each row is
charged its share of a batch of the step's size: T(B, s_row) / B, which is exact for a uniform
batch and spreads the kernel's floor and batch efficiency over ragged rows.

Decode (KV length L): on the batch axis log-log between measured batches, on the L axis linear
between measured lengths (time is affine in the KV read), so a row's cost is piecewise linear in
L and a run of decode steps prices exactly with the same arithmetic as single steps.
Prefill (prompt of s tokens after p cached): log-log on the batch axis; on the s axis linear in
sqrt(time), which straightens the ~s^2 growth of causal attention (aiconfigurator's choice for
this table, and the better one in benchmarks/bench_kernel_tables.py); times the share of causal
work that is new, (s^2 - p^2) / s^2, and never less than reading the row's KV once (the decode
cost at s).

Cells the collector did not measure (large batch x long sequence) hold the per-sequence cost of
the largest measured batch at that length; lengths past the longest measured grow with the work
(L for decode, s^2 for prefill). Both are extrapolations and reported as such.
"""

from __future__ import annotations

import numpy as np

from simulator.execution.kernels.interpolate import Provenance, log_bracket
from simulator.execution.kernels.op_table import AttentionSlice, AttentionTable, parse_numbers


class Grid:
    """One slice's times (seconds) on batch x seq, with unmeasured cells filled."""

    def __init__(self, batch: np.ndarray, seq: np.ndarray, seconds: np.ndarray, growth: float):
        """`growth`: the power of seq that work grows with (1 for decode's KV read, 2 for causal
        prefill), which carries a column nothing was measured in from the one before it."""
        self.batch, self.seq = batch, seq
        measured = np.isfinite(seconds) & (seconds > 0)
        if not measured.any():
            raise ValueError("attention grid: nothing measured")
        filled = seconds.copy()
        first = int(np.flatnonzero(measured.any(axis=0))[0])
        for j in range(len(seq)):
            rows = np.flatnonzero(measured[:, j])
            if rows.size == 0:
                if j < first:  # shorter than anything measured: the kernel's floor
                    continue
                filled[:, j] = filled[:, j - 1] * (seq[j] / seq[j - 1]) ** growth
                continue
            inside = np.exp(np.interp(np.log(batch), np.log(batch[rows]), np.log(seconds[rows, j])))
            last = rows[-1]
            beyond = np.arange(len(batch)) > last
            filled[:, j] = np.where(beyond, seconds[last, j] * batch / batch[last], inside)
            filled[measured[:, j], j] = seconds[measured[:, j], j]
        filled[:, :first] = filled[:, [first]]
        self.seconds = filled
        # The longest seq up to which a batch row is measured without a gap.
        gaps = ~measured
        first_gap = np.where(gaps.any(axis=1), gaps.argmax(axis=1), len(seq))
        self.measured_until = np.where(first_gap > 0, seq[np.maximum(first_gap - 1, 0)], 0.0)

    def knots_at(self, b: float) -> tuple[np.ndarray, float, bool]:
        """Times at every seq knot for batch b, the longest seq measured on both neighbouring
        batch rows, and whether b lies inside the measured batches."""
        if b > self.batch[-1]:
            return self.seconds[-1] * b / self.batch[-1], 0.0, False
        lo, hi, w = log_bracket(b, self.batch)
        knots = np.exp((1 - w) * np.log(self.seconds[lo]) + w * np.log(self.seconds[hi]))
        return knots, float(min(self.measured_until[lo], self.measured_until[hi])), True


def _slice_grid(table: AttentionTable, s: AttentionSlice, growth: float) -> Grid:
    batch, seq = parse_numbers(table.batch, "attention batch"), parse_numbers(table.seq, "attention seq")
    us = parse_numbers(s.us, f"attention slice {s.heads}/{s.kv_heads}").reshape(len(batch), len(seq))
    return Grid(batch, seq, us * 1e-6, growth)


def resolve_slice(table: AttentionTable, heads: int, kv_heads: int, head_dim: int, kv_dtype: str):
    """The slices and rule that price (heads, kv_heads): a list of (slice, weight) blended in log
    space, a batch multiplier r (a slice with r times fewer heads at r times the batch does the
    same work in the same kernel grid), and the provenance. None when nothing fits."""
    same = [s for s in table.slices if s.head_dim == head_dim and s.kv_dtype == kv_dtype]
    exact = [s for s in same if (s.heads, s.kv_heads) == (heads, kv_heads)]
    if exact:
        return [(exact[0], 1.0)], 1, Provenance.MEASURED
    by_q = sorted((s for s in same if s.kv_heads == kv_heads), key=lambda s: s.heads)
    lower = [s for s in by_q if s.heads < heads]
    upper = [s for s in by_q if s.heads > heads]
    if lower and upper:
        lo, hi = lower[-1], upper[0]
        w = np.log(heads / lo.heads) / np.log(hi.heads / lo.heads)
        return [(lo, 1.0 - w), (hi, w)], 1, Provenance.INTERPOLATED
    group = heads // kv_heads if heads % kv_heads == 0 else None
    if group is not None:
        for s in sorted(same, key=lambda s: -s.kv_heads):
            if s.heads == group * s.kv_heads and s.kv_heads < kv_heads and kv_heads % s.kv_heads == 0:
                return [(s, 1.0)], kv_heads // s.kv_heads, Provenance.INTERPOLATED
    return None


class SlicePricer:
    """Per-row seconds of one layer's attention for a rank's heads, from resolved slices."""

    def __init__(self, table: AttentionTable, heads: int, kv_heads: int, head_dim: int, kv_dtype: str,
                 growth: float):
        resolved = resolve_slice(table, heads, kv_heads, head_dim, kv_dtype)
        if resolved is None:
            raise LookupError(f"no slice for {heads} heads / {kv_heads} KV heads / head dim {head_dim} / {kv_dtype}")
        parts, self.multiplier, self.provenance = resolved
        self.slices = [s for s, _ in parts]
        grids = [_slice_grid(table, s, growth) for s in self.slices]
        self.weights = [w for _, w in parts]
        self.batch, self.seq = grids[0].batch, grids[0].seq
        self._grids = grids

    def knots(self, rows: int) -> tuple[np.ndarray, float, Provenance]:
        """Per-row seconds at each seq knot for a step of `rows` rows of this kind, the longest
        seq measured there, and the provenance of the batch axis."""
        b = rows * self.multiplier
        log_k, until, inside = 0.0, np.inf, True
        for grid, w in zip(self._grids, self.weights):
            k, u, ok = grid.knots_at(b)
            log_k = log_k + w * np.log(k)
            until, inside = min(until, u), inside and ok
        per_row = np.exp(log_k) / rows  # a batch-b time shared by `rows` rows
        code = max(self.provenance, Provenance.MEASURED if inside else Provenance.EXTRAPOLATED)
        return per_row, until, Provenance(code)


class DecodeAttention:
    """Decode rows: per-row cost a[s] + b[s] x L on segment s of the KV-length knots."""

    def __init__(self, pricer: SlicePricer):
        self.pricer = pricer
        self.knot_len = pricer.seq
        self._by_rows: dict[int, tuple] = {}

    def segments(self, rows: int):
        """(a, b, longest measured L, provenance) for steps with `rows` decode rows (cached)."""
        hit = self._by_rows.get(rows)
        if hit is None:
            c, until, code = self.pricer.knots(rows)
            x = self.knot_len
            slope = np.diff(c) / np.diff(x)
            a = np.concatenate([[c[0]], c[:-1] - slope * x[:-1], [0.0]])
            b = np.concatenate([[0.0], slope, [c[-1] / x[-1]]])
            hit = self._by_rows[rows] = (a, b, until, code)
        return hit

    def seconds(self, rows: int, kv_len: np.ndarray) -> np.ndarray:
        """Per-step seconds of one layer for a (steps, rows) array of KV lengths (row axis last)."""
        a, b, _, _ = self.segments(rows)
        seg = np.searchsorted(self.knot_len, kv_len, side="right")
        return (a[seg] + b[seg] * kv_len).sum(axis=-1)

    def provenance(self, rows: int, shortest: float, longest: float) -> Provenance:
        _, _, until, code = self.segments(rows)
        inside = self.knot_len[0] <= shortest and longest <= until
        return Provenance(max(code, Provenance.MEASURED if inside else Provenance.EXTRAPOLATED))


class PrefillAttention:
    """Prefill rows (chunks after a cached prefix), priced on batch and prompt length."""

    def __init__(self, pricer: SlicePricer, decode: DecodeAttention | None):
        self.pricer, self.decode = pricer, decode
        self._by_rows: dict[int, tuple] = {}

    def _knots(self, rows: int):
        """sqrt of the per-row seconds at each prompt-length knot, its last value, the longest
        measured length and the provenance, for steps of `rows` prefill rows (cached)."""
        hit = self._by_rows.get(rows)
        if hit is None:
            per_row, until, code = self.pricer.knots(rows)
            hit = self._by_rows[rows] = (np.sqrt(per_row), float(per_row[-1]), until, code)
        return hit

    def seconds(self, new: np.ndarray, cached: np.ndarray, batch: int | None = None) -> tuple[float, Provenance]:
        """Seconds of one layer for prefill rows, and the provenance. `batch`: the rows one kernel
        launch holds when that is not all of them (attention groups, micro-batches)."""
        rows = batch or len(new)
        if len(new) == 0:
            return 0.0, Provenance.MEASURED
        root, last, until, code = self._knots(rows)
        full = new + cached
        base = np.interp(full, self.pricer.seq, root) ** 2
        top = self.pricer.seq[-1]
        if full.max() > top:
            base = np.where(full > top, last * (full / top) ** 2, base)
        cost = base * (1.0 - (cached / full) ** 2)  # the new share of the causal work
        if self.decode is not None:  # a chunk reads its whole KV at least once
            cost = np.maximum(cost, self._kv_read(rows, full))
        inside = bool(full.max() <= until)
        code = max(code, Provenance.MEASURED if inside else Provenance.EXTRAPOLATED)
        return float(cost.sum()), Provenance(code)

    def _kv_read(self, rows: int, full: np.ndarray) -> np.ndarray:
        a, b, _, _ = self.decode.segments(rows)
        seg = np.searchsorted(self.decode.knot_len, full, side="right")
        return a[seg] + b[seg] * full

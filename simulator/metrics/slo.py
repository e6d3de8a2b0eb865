"""Per-request objectives of a request class, and whether each completed request met them."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, PositiveFloat

# An ITL SLO holds for a request when at least this fraction of its inter-token gaps are within it.
ITL_SLO_FRACTION = 0.99
_SLO_TOLERANCE_S = 1e-9  # absorbs float noise from ms -> s conversions


class SLO(BaseModel):
    """Latency objectives of one request class, in milliseconds; unset ones are not checked.

    - `ttft_ms`, `e2e_ms`: the request's TTFT / E2E must not exceed them.
    - `tpot_ms`: the request's TPOT must not exceed it (a 1-token request has no TPOT and passes).
    - `itl_ms`: at least 99% of the request's inter-token gaps must be within it. A request with
      fewer than 100 gaps therefore needs every gap within it; a long one may have 1% of stalls.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ttft_ms: PositiveFloat | None = None
    tpot_ms: PositiveFloat | None = None
    e2e_ms: PositiveFloat | None = None
    itl_ms: PositiveFloat | None = None


def meets_slos(
    ok: np.ndarray,
    classes: np.ndarray,
    ttft: np.ndarray,
    tpot: np.ndarray,
    e2e: np.ndarray,
    gaps: np.ndarray,
    num_gaps: np.ndarray,
    slos: dict[str, SLO],
) -> np.ndarray:
    """True for completed requests meeting every SLO of their class (see `SLO`)."""
    met = ok.copy()
    multi = num_gaps > 0
    gap_starts = np.cumsum(num_gaps) - num_gaps
    for name, slo in slos.items():
        rows = ok & (classes == name)
        if not rows.any():
            continue
        good = np.ones(len(ok), dtype=bool)
        for value, limit_ms in ((ttft, slo.ttft_ms), (e2e, slo.e2e_ms)):
            if limit_ms is not None:
                good &= value <= limit_ms / 1000 + _SLO_TOLERANCE_S
        if slo.tpot_ms is not None:  # NaN TPOT (one output token) passes
            good &= ~(tpot > slo.tpot_ms / 1000 + _SLO_TOLERANCE_S)
        if slo.itl_ms is not None and gaps.size:
            over = (gaps > slo.itl_ms / 1000 + _SLO_TOLERANCE_S).astype(np.int64)
            exceed = np.zeros(len(ok), dtype=np.int64)
            exceed[multi] = np.add.reduceat(over, gap_starts[multi])
            allowed = np.floor((1 - ITL_SLO_FRACTION) * num_gaps + 1e-9)
            good &= exceed <= allowed
        met[rows] = good[rows]
    return met

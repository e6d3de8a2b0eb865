"""MoE layer times from a measured table: by the tokens entering the layer, at one expert layout.

The table times one rank's whole MoE layer (routing, the grouped expert GEMMs, activation) for T
tokens entering the layer across its moe_tp x ep ranks, under a named routing distribution. A
deployment reads the curve of its own layout and dtype: log-log between measured token counts
(measured range), the smallest measured count's time below it (the kernel's floor), and past the
largest the roofline's growth carried from that point, i.e. at the measured efficiency there
(extrapolated). A layout or dtype the table lacks has no curve: the roofline prices it.

Routing: a table measured with balanced routing gives the time of a rank that receives the mean
share; under expert parallelism the busiest rank receives `imbalance` times that, which is the
balanced time at imbalance x T tokens. A table measured with a skewed distribution already holds
its imbalance and is read at T.
"""

from __future__ import annotations

import numpy as np

from simulator.execution.kernels.interpolate import Provenance
from simulator.execution.kernels.op_table import MoETable, parse_numbers

TABLE_EXPERT_DTYPE = {"fp16": "bf16", "bf16": "bf16", "fp8": "fp8", "fp4": "fp4", "nvfp4": "fp4", "mxfp4": "mxfp4"}


class MoECurve:
    """One layout's measured MoE-layer times (seconds) over tokens."""

    def __init__(self, table: MoETable, tp: int, ep: int):
        layout = next((x for x in table.layouts if (x.tp, x.ep) == (tp, ep)), None)
        if layout is None:
            raise LookupError(f"no {table.dtype} MoE layout moe_tp {tp} x ep {ep}")
        tokens = parse_numbers(table.tokens, "moe.tokens")
        seconds = parse_numbers(layout.us, f"moe layout {tp}x{ep}") * 1e-6
        if seconds.shape != tokens.shape:
            raise ValueError(f"moe layout {tp}x{ep}: {seconds.size} times for {tokens.size} token counts")
        ok = np.isfinite(seconds) & (seconds > 0)
        if not ok.any():
            raise LookupError(f"MoE layout moe_tp {tp} x ep {ep}: nothing measured")
        self.table, self.kernel = table, layout.kernel
        self.tokens, self.seconds = tokens[ok], seconds[ok]
        self._log_t, self._log_s = np.log(self.tokens), np.log(self.seconds)
        self.balanced = table.distribution == "balanced"

    def seconds_at(self, tokens, roofline=None) -> tuple[np.ndarray, np.ndarray]:
        """Seconds and provenance codes at `tokens` (any shape). `roofline(tokens)`: the roofline's
        time of the same layer, whose growth carries the curve past its last point (without it,
        time grows in proportion to the tokens)."""
        t = np.maximum(np.asarray(tokens, dtype=np.float64), self.tokens[0] * 1e-9)
        values = np.exp(np.interp(np.log(t), self._log_t, self._log_s))
        last_t, last_s = self.tokens[-1], self.seconds[-1]
        beyond = t > last_t
        if beyond.any():
            if roofline is None:
                grown = last_s * t / last_t
            else:
                grown = last_s * roofline(t) / roofline(np.full_like(t, last_t))
            values = np.where(beyond, grown, values)
        codes = np.where(beyond, Provenance.EXTRAPOLATED, Provenance.MEASURED).astype(np.int8)
        return values, codes

    def describe(self) -> str:
        t = self.table
        return (f"{t.dtype} ({t.source_dtype or t.dtype}) {t.hidden}x{t.inter} top-{t.topk} of {t.experts}, "
                f"{t.distribution} routing, tokens {self.tokens[0]:g}-{self.tokens[-1]:g} ({self.kernel})")


def find_curve(tables: list[MoETable], hidden: int, inter: int, topk: int, experts: int, tp: int, ep: int
               ) -> tuple[MoECurve | None, str]:  # fmt: skip
    """The first table (the file's order is its preference) of this shape holding the layout, or
    None and why not."""
    same = [t for t in tables if (t.hidden, t.inter, t.topk, t.experts) == (hidden, inter, topk, experts)]
    if not same:
        return None, f"no MoE table for hidden {hidden}, expert width {inter}, top-{topk} of {experts}"
    for t in same:
        if any((x.tp, x.ep) == (tp, ep) for x in t.layouts):
            return MoECurve(t, tp, ep), ""
    have = sorted({(x.tp, x.ep) for t in same for x in t.layouts})
    return None, (f"no {same[0].dtype} MoE measurement at moe_tp {tp} x ep {ep} (measured: "
                  f"{', '.join(f'{a}x{b}' for a, b in have)})")

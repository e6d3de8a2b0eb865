"""The noise floor of a validation: how far two measurements of the same requests are apart.

`llmsim validate --noise-floor` measures the real side twice, on the same requests (same arrival
times and lengths; prompts of the same lengths but new tokens, so a prefix cache cannot serve the
second run from the first). The difference of the repeat from the first run (repeat / first - 1,
per statistic) is the real-vs-real error: no model can be expected to be closer to one run than
the other run is. Each checked statistic is then judged against max(tolerance, |real-vs-real|),
and the report says which of the two set the limit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from calibration.validation.accuracy import Comparison

TOLERANCE, FLOOR = "tolerance", "noise floor"


def judge_against_floor(comparison: Comparison, floor: Comparison) -> Comparison:
    """`comparison` (simulated vs measured) with the real-vs-real errors of `floor` beside it,
    each checked statistic passing within max(tolerance, |real-vs-real error|)."""
    table = comparison.table.copy()
    keyed = floor.table.set_index(["metric", "stat"])["error"]
    table["real_vs_real"] = [keyed.get((m, s)) for m, s in zip(table["metric"], table["stat"])]
    limits, dominant, oks = [], [], []
    abs_ms = comparison.tolerances.abs_ms
    for row in table.itertuples():
        if row.tolerance is None or pd.isna(row.tolerance):
            limits.append(None)
            dominant.append(None)
            oks.append(None)
            continue
        noise = abs(row.real_vs_real) if row.real_vs_real is not None and not pd.isna(row.real_vs_real) else 0.0
        limit = max(row.tolerance, noise)
        limits.append(limit)
        dominant.append(FLOOR if noise > row.tolerance else TOLERANCE)
        if row.error is None or pd.isna(row.error):
            oks.append(False)
            continue
        slack = abs_ms if row.stat != "rate" else 0.0
        oks.append(bool(abs(row.error) <= limit or abs(row.simulated - row.measured) <= slack))
    table["limit"] = limits
    table["limit_set_by"] = dominant
    table["ok"] = oks
    checked = table["ok"].dropna()
    return Comparison(table, bool(checked.all()) if len(checked) else False, comparison.tolerances)


def floor_summary(comparison: Comparison) -> str:
    """One line: how many checked statistics had their limit set by the noise floor, and the
    largest real-vs-real error beside the largest simulated one."""
    t = comparison.table
    checked = t[t["limit_set_by"].notna()]
    if not len(checked):
        return "noise floor: nothing checked"
    by_floor = int((checked["limit_set_by"] == FLOOR).sum())
    noise = np.nanmax(np.abs(checked["real_vs_real"].astype(float))) if checked["real_vs_real"].notna().any() else 0
    sim = np.nanmax(np.abs(checked["error"].astype(float))) if checked["error"].notna().any() else float("nan")
    which = FLOOR if by_floor * 2 > len(checked) else TOLERANCE
    return (f"noise floor: the {which} dominates ({by_floor} of {len(checked)} checked statistics limited by the "
            f"real-vs-real difference); largest |real vs real| {noise:.1%}, largest |sim vs real| {sim:.1%}")

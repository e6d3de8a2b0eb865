"""The longer-run check keeps the planner's order: of equal-price candidates that all hold over
the longer window, the answer is the one with the lower decisive TTFT, whatever the row order."""

import pandas as pd

from simulator.scenario.plan_schema import LAYOUT_KEYS
from simulator.studies import plan_confirm

DECISIVE = [{"key": "ttft_p99", "metric": "ttft"}, {"key": "tpot_p99", "metric": "tpot"}]


def _frame(ttfts, prices):
    rows = []
    for i, (ttft, price) in enumerate(zip(ttfts, prices)):
        row = {"hardware": "h100-sxm", **{k: 1 for k in LAYOUT_KEYS}, "weight_dtype": f"d{i}",
               "max_num_seqs": 256, "chunk_size": 512, "replicas": 4, "usd_per_hour": price,
               "usd_per_month": price * 730, "status": "met", "reason": "", "stage": "full",
               "warmup_s": 30.0, "window_s": 120.0, "ttft_p99_ms": ttft, "tpot_p99_ms": 30.0}
        rows.append(row)
    return pd.DataFrame(rows)


def _jobs(frame):
    return [{"group": {k: row[k] for k in plan_confirm.GROUP_KEYS}, "counts": [1, 8]} for _, row in frame.iterrows()]


def _holds(tasks, **_):
    return [{"window_s": 480.0, "slo_met": True, "steady": True, "misses": "", "ttft_p99_ms": 1.0,
             "tpot_p99_ms": 1.0} for _ in tasks]


def test_equal_prices_are_ordered_by_the_decisive_ttft(monkeypatch):
    monkeypatch.setattr(plan_confirm, "run_tasks", lambda fn, tasks, **kw: _holds(tasks))
    frame = _frame(ttfts=[396.0, 243.0], prices=[11.96, 11.96])  # the slower one comes first
    winner, runs, _ = plan_confirm.confirm(frame, _jobs(frame), 0, 4.0, DECISIVE, workers=2, ray=None,
                                           progress=False)
    assert winner == 1 and runs == 2


def test_the_cheaper_candidate_still_wins(monkeypatch):
    monkeypatch.setattr(plan_confirm, "run_tasks", lambda fn, tasks, **kw: _holds(tasks))
    frame = _frame(ttfts=[396.0, 243.0], prices=[10.0, 11.96])
    winner, _, _ = plan_confirm.confirm(frame, _jobs(frame), 0, 4.0, DECISIVE, workers=2, ray=None, progress=False)
    assert winner == 0

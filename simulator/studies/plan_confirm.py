"""The plan's longer-run check: does the answer still hold when the run is made longer?

A window of a few thousand requests can miss a slow drift that a longer one shows. The cheapest
candidates meeting the SLOs are re-simulated over a window `factor` times as long (first seed, no
extensions), cheapest first, as many at once as there are workers; the answer is the cheapest that
holds. One that fails is retried with one more replica (priced accordingly) before dearer
candidates are considered. Results go to the candidate's `long_*` columns.
"""

from __future__ import annotations

import heapq

import pandas as pd

from simulator.scenario.plan_schema import LAYOUT_KEYS
from simulator.studies.parallel import default_workers, run_tasks
from simulator.studies.plan_search import confirm_candidate

MAX_CONFIRMATIONS = 6
GROUP_KEYS = ["hardware", *LAYOUT_KEYS, "weight_dtype", "max_num_seqs", "chunk_size"]


def _gkey(row) -> tuple:
    return tuple(row[k] for k in GROUP_KEYS)


def tie_break(decisive: list[dict]) -> str:
    """The column that orders candidates of equal price: the decisive TTFT, lower first."""
    ttft = [d["key"] for d in decisive if d["metric"] == "ttft"]
    return f"{ttft[0]}_ms" if ttft else "ttft_p90_ms"


def _order(frame: pd.DataFrame, idx: int, tie: str, cost: float | None = None) -> tuple[float, float, int]:
    """Heap key: price, then the tie-break latency (unknown last), then the row."""
    value = frame.loc[idx, tie] if tie in frame.columns else None
    value = float(value) if value is not None and pd.notna(value) else float("inf")
    return (float(frame.loc[idx, "usd_per_hour"]) if cost is None else cost, value, idx)


def confirm(frame: pd.DataFrame, jobs: list[dict], winner: int, factor: float, decisive: list[dict],
            workers: int | None, ray: str | None, progress: bool) -> tuple[int | None, int, pd.DataFrame]:
    """(the confirmed answer's index or None, simulations run, the candidates with long_* columns)."""
    frame = frame.copy()
    job_of = {tuple(j["group"][k] for k in GROUP_KEYS): j for j in jobs}
    ok = frame[(frame["status"] == "met") & (frame["stage"] != "screen")]
    tie = tie_break(decisive)
    heap = [_order(frame, int(idx), tie) for idx in ok.index]
    heapq.heapify(heap)
    for col in ("long_window_s", "long_slo_met", "long_steady", "long_misses", *(
            f"long_{d['key']}_ms" for d in decisive)):
        frame[col] = None
    per_round = max(1, min(workers or default_workers(), 2 if ray is None else 4))
    runs = 0
    while heap and runs < MAX_CONFIRMATIONS:
        batch = [heapq.heappop(heap) for _ in range(min(per_round, len(heap), MAX_CONFIRMATIONS - runs))]
        tasks = []
        for *_, idx in batch:
            row = frame.loc[idx]
            job = job_of[_gkey(row)]
            tasks.append(job | {"replicas": int(row["replicas"]), "factor": factor, "warmup_s": row["warmup_s"],
                                "window_s": row["window_s"]})
        results = run_tasks(confirm_candidate, tasks, workers=workers, ray=ray, desc="plan: longer-run check",
                            progress=progress)
        runs += len(tasks)
        passed = []
        for (cost, _, idx), task, res in zip(batch, tasks, results):
            frame.loc[idx, "long_window_s"] = res["window_s"]
            frame.loc[idx, "long_slo_met"] = res["slo_met"]
            frame.loc[idx, "long_steady"] = res["steady"]
            frame.loc[idx, "long_misses"] = res["misses"]
            for d in decisive:
                frame.loc[idx, f"long_{d['key']}_ms"] = res[f"{d['key']}_ms"]
            if frame.loc[idx, "stage"] == "long":  # simulated only here: its numbers are the long run's
                for key, value in res.items():
                    if key in frame.columns and key not in ("replicas", "usd_per_hour"):
                        frame.at[idx, key] = value
            if res["slo_met"]:
                passed.append(_order(frame, idx, tie, cost))
                continue
            frame.loc[idx, "status"] = "missed"
            frame.loc[idx, "reason"] = f"met the SLOs over {task['window_s']:.0f} s but not over a {factor:g}x " \
                                       f"longer window: {res['misses']}"
            more = _next_count(frame, idx, task)
            if more is not None:
                heapq.heappush(heap, _order(frame, more[1], tie, more[0]))
        if passed:
            return min(passed)[2], runs, frame
    return None, runs, frame


def _next_count(frame: pd.DataFrame, idx: int, task: dict) -> tuple[float, int] | None:
    """The same group with one more replica, made a candidate with its long-run numbers to come."""
    row = frame.loc[idx]
    r = int(row["replicas"]) + 1
    if r > task["counts"][-1]:
        return None
    same = (frame[GROUP_KEYS] == pd.Series({k: row[k] for k in GROUP_KEYS})).all(axis=1) & (frame["replicas"] == r)
    if not same.any():
        return None
    nxt = int(frame.index[same][0])
    if frame.loc[nxt, "status"] == "met":
        return None  # already queued as a candidate of its own
    cost = row["usd_per_hour"] / int(row["replicas"]) * r
    for col in ("usd_per_hour", "usd_per_month"):
        frame.loc[nxt, col] = row[col] / int(row["replicas"]) * r
    frame.loc[nxt, ["status", "reason", "stage", "window_s", "warmup_s"]] = [
        "met", "added by the longer-run check", "long", row["window_s"], row["warmup_s"]]
    return cost, nxt

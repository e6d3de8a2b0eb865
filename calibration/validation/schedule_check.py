"""Does the simulator, fed the engine's own step times, make the engine's schedule?

This is the property sim-vs-real validation rests on: both sides drive the same scheduler
objects, so with identical step durations they must run identical steps (same rows, same token
counts) and stamp identical token times. Any difference is a bug in the machinery (admission,
completion, capacity, clocks), never noise: the check is exact, whatever the machine's load.

`RecordedStepTimes` is an execution model that replays a replay's step records (see
calibration/replay.py): step k lasts from its boundary (`decided_at`) to its recorded end, and
must ask for the rows the engine ran, or the check stops at the first step that differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from calibration.validation.matched import simulate_like
from simulator.metrics.results import Results
from simulator.scenario import Scenario
from simulator.workload import Workload


def _ints(cell) -> list[int]:
    return [int(x) for x in str(cell).split()]


class ScheduleDiverged(Exception):
    """The simulator asked for a step the engine did not run."""


class RecordedStepTimes:
    """Step k takes `end_k - decided_at_k` seconds and must have the engine's rows of step k."""

    provenance = "measured"

    def __init__(self, steps: pd.DataFrame):
        self.rows = [(_ints(n), _ints(c)) for n, c in zip(steps["new_tokens"], steps["cached_tokens"])]
        self.durations = (steps["end"] - steps["decided_at"]).to_numpy(dtype=float)
        self.next = 0

    def step_time(self, new_tokens, cached_tokens) -> float:
        k = self.next
        asked = (np.atleast_1d(new_tokens).tolist(), np.atleast_1d(cached_tokens).tolist())
        if k >= len(self.rows):
            raise ScheduleDiverged(f"the simulator ran a step {k} the engine never ran: {self._show(asked)}")
        if asked != self.rows[k]:
            raise ScheduleDiverged(
                f"step {k}: the engine ran {self._show(self.rows[k])}, the simulator {self._show(asked)}"
            )
        self.next += 1
        return float(self.durations[k])

    def decode_run_times(self, cached_tokens, num_steps: int) -> np.ndarray:
        raise ScheduleDiverged("recorded step times are replayed one step at a time: run with merge_decode_steps off")

    def is_extrapolated(self, new_tokens, cached_tokens) -> bool:
        return False

    def describe(self) -> dict:
        return {"source": "an engine run's recorded step times", "provenance": self.provenance,
                "steps": len(self.rows)}  # fmt: skip

    @staticmethod
    def _show(rows) -> str:
        new, cached = rows
        return f"{len(new)} rows (new+cached: {' '.join(f'{n}+{c}' for n, c in zip(new, cached))})"


@dataclass
class ScheduleCheck:
    """The outcome: identical when every step and every token time matched."""

    steps: int  # steps the engine ran
    steps_matched: int
    requests: int
    requests_matched: int  # same status, preemptions and token count, times within `atol_s`
    max_time_difference_s: float
    first_difference: str | None
    atol_s: float

    @property
    def identical(self) -> bool:
        return self.first_difference is None

    def line(self) -> str:
        if self.identical:
            return (f"schedule check: the simulator, fed the engine's step times, ran the same {self.steps} steps "
                    f"and stamped all {self.requests} requests' tokens within "
                    f"{self.max_time_difference_s:.1e} s")  # fmt: skip
        return (f"schedule check FAILED: {self.first_difference} ({self.steps_matched} of {self.steps} steps, "
                f"{self.requests_matched} of {self.requests} requests matched)")  # fmt: skip


def check_schedule(
    measured: Results, steps: pd.DataFrame, scenario: Scenario, workload: Workload, settings: dict,
    seed: int, atol_s: float = 1e-9,
) -> ScheduleCheck:  # fmt: skip
    """Simulate `workload` with the engine's settings and its recorded step times, and compare
    the schedule step by step and request by request with the engine's."""
    model = RecordedStepTimes(steps)
    first = None
    simulated = None
    try:
        simulated = simulate_like(scenario, workload, settings, seed, execution=model, merge_decode_steps=False)
    except ScheduleDiverged as diverged:
        first = str(diverged)
    if first is None and model.next != len(model.rows):
        first = f"the simulator stopped after {model.next} steps; the engine ran {len(model.rows)}"
    matched, worst = 0, 0.0
    if simulated is not None:
        sim = {r.request_id: r for r in simulated.records}
        for real in measured.records:
            twin = sim.get(real.request_id)
            problem = _difference(real, twin, atol_s)
            if twin is not None and len(twin.token_times) == len(real.token_times) and len(real.token_times):
                worst = max(worst, float(np.max(np.abs(twin.token_times - real.token_times))))
            if problem is None:
                matched += 1
            elif first is None:
                first = f"request {real.request_id}: {problem}"
    return ScheduleCheck(len(model.rows), model.next, len(measured.records), matched, worst, first, atol_s)


def _difference(real, twin, atol_s: float) -> str | None:
    if twin is None:
        return "not simulated"
    if twin.status != real.status:
        return f"status {real.status!r} on the engine, {twin.status!r} simulated"
    if twin.num_preemptions != real.num_preemptions:
        return f"{real.num_preemptions} preemptions on the engine, {twin.num_preemptions} simulated"
    if len(twin.token_times) != len(real.token_times):
        return f"{len(real.token_times)} tokens on the engine, {len(twin.token_times)} simulated"
    if len(real.token_times) and not np.allclose(twin.token_times, real.token_times, rtol=0, atol=atol_s):
        k = int(np.argmax(np.abs(twin.token_times - real.token_times)))
        return f"token {k} at {real.token_times[k]:.9f} s on the engine, {twin.token_times[k]:.9f} s simulated"
    return None

"""The real side of a validation: the backend engine serving a workload in real time.

Each request is added at its arrival time on the engine clock (at the first step boundary after
it, as a busy engine notices it), with token-id prompts of the requested length and `ignore_eos`,
so output lengths are exactly those the simulator gets. Prompts are the request's own, except
the blocks a request names by hash ids (as trace requests do): their tokens follow from the id,
so requests naming the same blocks share a prefix on the engine as in the simulator. Times in
the results start at 0 at the first arrival, like the simulator's.

Host overhead: a profile times `ModelRunner.execute`; the engine also spends time scheduling and
completing each step. A short warm-up run (which also takes the first-call costs of the kernels
out of the measurement) times that overhead per step, seconds = a + b x rows; `WithHostOverhead`
adds it to an execution model so that the simulator's steps last as long as the engine's.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm

from calibration.measure.prompts import token_prompt
from simulator.common.errors import ConfigError
from simulator.execution import ExecutionModel
from simulator.metrics import RequestRecord, summarize
from simulator.metrics.results import Results
from simulator.scenario import Scenario
from simulator.workload import Request, Workload

_SPIN_S = 0.002  # the last part of an idle wait is spun, so arrivals are not late by a sleep's slack
IDLE_MODES = ("sleep", "spin")


@dataclass(frozen=True)
class HostOverhead:
    """Engine time per step outside `ModelRunner.execute`: seconds = constant_s + per_sequence_s x rows."""

    constant_s: float = 0.0
    per_sequence_s: float = 0.0
    steps: int = 0  # steps it was measured on

    @classmethod
    def measure(cls, steps: pd.DataFrame) -> HostOverhead:
        """Fit from engine step records: for back-to-back steps, the time from one step's end to
        the next one's minus the next one's execution."""
        steps = steps.sort_values("index")
        period = np.diff(steps["end"].to_numpy())
        later = steps.iloc[1:]
        back_to_back = (later["start"].to_numpy() - steps["end"].to_numpy()[:-1]) < 0.002
        host = (period - later["execute_s"].to_numpy())[back_to_back]
        rows = later["num_seqs"].to_numpy(dtype=float)[back_to_back]
        if host.size < 4:
            return cls()
        if np.ptp(rows) > 0:
            b, a = np.polyfit(rows, host, 1)
        else:
            a, b = float(np.median(host)), 0.0
        return cls(max(float(a), 0.0), max(float(b), 0.0), int(host.size))


class WithHostOverhead:
    """An execution model plus the engine's per-step host overhead."""

    def __init__(self, inner: ExecutionModel, overhead: HostOverhead):
        self.inner, self.overhead = inner, overhead
        self.provenance = inner.provenance

    def step_time(self, new_tokens, cached_tokens) -> float:
        rows = int(np.count_nonzero(np.atleast_1d(new_tokens)))
        return (
            self.inner.step_time(new_tokens, cached_tokens)
            + self.overhead.constant_s
            + self.overhead.per_sequence_s * rows
        )

    def decode_run_times(self, cached_tokens, num_steps: int) -> np.ndarray:
        rows = np.atleast_1d(cached_tokens).size
        extra = self.overhead.constant_s + self.overhead.per_sequence_s * rows
        return self.inner.decode_run_times(cached_tokens, num_steps) + extra

    def is_extrapolated(self, new_tokens, cached_tokens) -> bool:
        return self.inner.is_extrapolated(new_tokens, cached_tokens)

    def describe(self) -> dict:
        out = dict(self.inner.describe())
        out["host_overhead"] = {"constant_s": self.overhead.constant_s,
                                "per_sequence_s": self.overhead.per_sequence_s,
                                "measured_steps": self.overhead.steps}  # fmt: skip
        return out


@dataclass
class EngineRun:
    """A workload served by the real engine: results, step records and the engine's settings."""

    results: Results
    steps: pd.DataFrame
    settings: dict = field(default_factory=dict)


def engine_dtype(scenario: Scenario) -> str:
    """The engine's dtype for a scenario: its weight dtype (the engine runs fp32, bf16 or fp16)."""
    dtype = scenario.deployment.weight_dtype
    if dtype not in ("fp32", "bf16", "fp16"):
        raise ConfigError(
            f"deployment.weight_dtype: got {dtype!r}; the engine runs fp32, bf16 or fp16 "
            "(int8 weights: quantize a 16-bit engine, not supported by validate)"
        )
    if scenario.deployment.kv_dtype != dtype:
        raise ConfigError(
            f"deployment.kv_dtype: got {scenario.deployment.kv_dtype!r}; the engine keeps its KV cache in "
            f"the weights' dtype, {dtype!r}"
        )
    return dtype


def build_engine(scenario: Scenario, *, device: str = "cpu", num_blocks: int | None = None, seed: int = 0):
    """The backend engine for a scenario's model, dtype and scheduler settings."""
    from backend.engine import Engine
    from backend.runner import ModelRunner

    cfg = scenario.scheduler
    runner = ModelRunner(scenario.model_spec(), device=device, dtype=engine_dtype(scenario),
                         num_blocks=num_blocks, block_size=cfg.block_size, seed=seed)  # fmt: skip
    return Engine(runner, cfg, max_model_len=scenario.max_model_len())


def warm_up(engine, seed: int = 0) -> HostOverhead:
    """Serve a few requests (kernels warm up; the host overhead per step is measured)."""
    start = len(engine.records)
    longest = min(engine.max_model_len - 16, 256)
    for i, prompt in enumerate((8, 64, longest, 32, 128, 16, 16, 16)):
        req = _warm_request(i, prompt)
        engine.add_request(token_prompt(req, seed), 16, ignore_eos=True)
    engine.run_until_idle()
    return HostOverhead.measure(engine.records_frame().iloc[start:])


def replay_prompt(request: Request, seed: int, hash_block_tokens: int | None, run: int = 0) -> list[int]:
    """The request's own token ids, with the tokens of each block it names by a hash id drawn from
    that id alone (the same tokens in every request naming it; calibration/measure/prompts.py);
    another `run` draws other tokens of the same lengths."""
    return token_prompt(request, seed, run, hash_block_tokens)


def _warm_request(i: int, prompt: int) -> Request:
    return Request(request_id=2**30 + i, arrival=0.0, prompt_tokens=prompt, output_tokens=16)


def replay(
    engine, workload: Workload, *, seed: int = 0, progress: bool = True, run: int = 0, idle: str = "sleep"
) -> EngineRun:
    """Serve `workload` on `engine` in real time; times in the results start at the first arrival.

    Requests join at step boundaries, decided on the recorded clock as the simulator decides
    them: a busy engine admits what arrived by the end of its last step, an idle one sleeps until
    the next arrival and admits what arrived by then. Each step's boundary is recorded
    (`decided_at`), so the schedule is a function of the recorded step times alone and the
    simulator, fed those times, must reproduce it exactly (calibration/schedule_check.py).

    idle: how the engine waits for the next arrival: "sleep" (as a server blocks) or "spin" (the
    core stays busy). A core woken from sleep runs its first steps slower, on a shared VM by 5-15%
    (caches and clocks taken by others meanwhile); a profile times steps back to back, so "spin"
    compares the step-time model with the engine under the conditions it was measured in."""
    if idle not in IDLE_MODES:
        raise ConfigError(f"--idle: got {idle!r}; allowed: {', '.join(IDLE_MODES)}")
    first_step = len(engine.records)
    pending = deque(workload.requests)
    served: list[tuple] = []  # (request, sequence)
    samples = []
    decided: list[float] = []
    bar = tqdm(total=len(workload), desc="engine", unit="req", disable=not progress, leave=False)
    offset = engine.now()
    boundary = 0.0  # the current step boundary, on the run's clock
    done = 0
    while pending or engine.has_work:
        while pending and pending[0].arrival <= boundary:
            r = pending.popleft()
            prompt = replay_prompt(r, seed, workload.hash_block_tokens, run)
            seq = engine.add_request(prompt, r.output_tokens, ignore_eos=True,
                                     arrival=offset + r.arrival, request_class=r.request_class,
                                     priority=r.priority)  # fmt: skip
            served.append((r, seq))
        sched = engine.scheduler
        state = (boundary, sched.num_waiting, sched.num_running, sched.blocks.usage)  # before the step
        record = engine.step(at=offset + boundary) if engine.has_work else None
        samples.append((*state, int(record is not None)))
        if record is not None:
            decided.append(boundary)
            boundary = record.end - offset
        else:  # idle, or nothing can run now: wait for the next arrival, if any
            if not pending:
                break  # anything still queued is left as unfinished
            boundary = max(boundary, pending[0].arrival)
            _wait_until(engine, offset + boundary, spin=idle == "spin")
        if progress:  # counting costs a pass over the requests: only when someone watches
            finished = sum(seq.finish_time is not None for _, seq in served)
            bar.update(finished - done)
            done = finished
    bar.close()
    samples.append((max(boundary, engine.now() - offset), 0, 0, engine.scheduler.blocks.usage, 0))

    from backend.engine import to_request_records

    records = []
    for (r, _), rec in zip(served, to_request_records([seq for _, seq in served])):
        records.append(RequestRecord(r.request_id, rec.request_class, rec.arrival - offset, rec.prompt_tokens,
                                     rec.token_times - offset, rec.status, 0, rec.num_preemptions,
                                     rec.cached_prompt_tokens, rec.reason or r.clipping))  # fmt: skip
    timeseries = pd.DataFrame(samples, columns=["time", "waiting", "running", "kv_usage", "busy"])
    timeseries["replica"] = 0
    steps = engine.records_frame().iloc[first_step:].reset_index(drop=True)
    for column in ("start", "end"):
        steps[column] -= offset
    steps.insert(1, "decided_at", decided)
    summary = summarize(records, slos=workload.slos, timeseries=timeseries)
    runner = engine.runner
    info = {"measured": True, "engine": "backend.engine.Engine (in process)", "device": str(runner.device),
            "dtype": str(runner.dtype).removeprefix("torch."), "steps": len(steps),
            "preemptions": int(sum(r.num_preemptions for r in records))}  # fmt: skip
    results = Results(summary, records, timeseries, workload.slos, "measured on the engine", info)
    return EngineRun(results, steps)


def _wait_until(engine, target: float, spin: bool) -> None:
    remaining = target - engine.now()
    if remaining > _SPIN_S and not spin:
        time.sleep(remaining - _SPIN_S)
    while engine.now() < target:
        pass


def engine_settings(engine, threads: int | None) -> dict:
    """What the simulator must share with the engine for a like-for-like comparison."""
    import torch

    runner = engine.runner
    return {
        "num_blocks": runner.num_blocks,
        "block_size": runner.block_size,
        "max_model_len": engine.max_model_len,
        # As the scheduler runs it, the policy's defaults resolved for the engine's device.
        "scheduler": engine.scheduler.config.model_dump(mode="json", exclude_none=True),
        "device": str(runner.device),
        "dtype": str(runner.dtype).removeprefix("torch."),
        "threads": threads or torch.get_num_threads(),
    }

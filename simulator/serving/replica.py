"""One model replica as a SimPy process: one event per engine step.

The replica asks its scheduler for a step, asks the execution-time model how long it takes, and
waits that long. Consecutive decode steps with an unchanged batch are merged into one timeout
(their per-step times still come from the model, so token timestamps are exact); an arrival at
this replica cuts the run at the next step boundary, exactly where a real engine would notice it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import simpy

from simulator.execution import ExecutionModel
from simulator.execution.kernels.provenance import run_sources
from simulator.scheduling import Scheduler, Sequence, Step


class Replica:
    def __init__(
        self,
        env: simpy.Environment,
        replica_id: int,
        scheduler: Scheduler,
        execution: ExecutionModel,
        on_finish: Callable[[Sequence], None],
        merge_decode_steps: bool = True,
        swap_s_per_token: float = 0.0,
        speculation=None,
        keep_samples: bool = True,
    ):
        self.env = env
        self.id = replica_id
        self.scheduler = scheduler
        self.execution = execution
        self.on_finish = on_finish
        self.merge_decode_steps = merge_decode_steps
        self.swap_s_per_token = swap_s_per_token  # KV copy time over the host link, per token
        self.speculation = speculation  # simulator.serving.speculation.Speculation, or None
        self.busy_time = 0.0
        self.num_steps = 0
        self.num_extrapolated_steps = 0
        self.step_sources: Counter = Counter()  # provenance label -> steps
        # (time, replica, waiting, running, kv_usage, busy): the state from this moment until the next sample
        self.samples: list[tuple[float, int, int, int, float, int]] = []
        # Without samples kept (a streamed run): first and last sample time, the last busy and
        # KV usage, and their integrals over time, for the time-weighted means.
        self.keep_samples = keep_samples
        self._integrals: list[float] | None = None
        self._wakeup = env.event()
        env.process(self._loop())

    # --- what the router sees --------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        return self.scheduler.num_waiting + self.scheduler.num_running

    @property
    def kv_usage(self) -> float:
        return self.scheduler.blocks.usage

    def submit(self, seq: Sequence) -> None:
        seq.replica = self.id
        if not self.scheduler.add(seq, self.env.now):
            self.on_finish(seq)  # rejected: it can never fit here
            return
        if not self._wakeup.triggered:
            self._wakeup.succeed()

    def wake(self) -> None:
        """Re-plan at the next step boundary: something outside the scheduler changed (e.g. KV
        blocks held for a transfer were returned), as a new request does."""
        if not self._wakeup.triggered:
            self._wakeup.succeed()

    def _side_time(self, step: Step) -> float:
        """Seconds a step spends besides its forward pass: swapping KV over the host link (before
        the pass, as vLLM does) and drafting the speculative tokens it verifies."""
        seconds = (step.swapped_out_tokens + step.swapped_in_tokens) * self.swap_s_per_token
        if self.speculation is not None and step.draft_tokens:
            seconds += self.speculation.draft_time(step)
        return seconds

    # --- the engine loop -------------------------------------------------------------------
    def _first_of(self, *events: simpy.Event) -> simpy.Event:
        """An event that fires when the first of `events` does: what `a | b` gives, with the
        same scheduling (so the same order among simultaneous events) and less bookkeeping."""
        first = self.env.event()

        def fire(_event) -> None:
            if not first.triggered:
                first.succeed()

        for event in events:
            event.callbacks.append(fire)
        return first

    def _sample(self, busy: int) -> None:
        s = self.scheduler
        if self.keep_samples:
            self.samples.append((self.env.now, self.id, s.num_waiting, s.num_running, s.blocks.usage, busy))
            return
        now, acc = self.env.now, self._integrals
        if acc is None:
            self._integrals = [now, now, busy, s.blocks.usage, 0.0, 0.0]
            return
        dt = now - acc[1]
        acc[4] += acc[2] * dt
        acc[5] += acc[3] * dt
        acc[1], acc[2], acc[3] = now, busy, s.blocks.usage

    def time_weighted_means(self) -> tuple[float, float] | None:
        """(busy fraction, KV usage) averaged over time from the first sample to the last, when
        samples are not kept; None before any sample."""
        acc = self._integrals
        if acc is None:
            return None
        span = acc[1] - acc[0]
        return (acc[4] / span, acc[5] / span) if span > 0 else (float(acc[2]), float(acc[3]))

    def _loop(self):
        env = self.env
        while True:
            step = self.scheduler.schedule(env.now)
            if step is None:
                self._sample(0)
                self._wakeup = env.event()
                yield self._wakeup
                continue
            if not step.seqs:  # only preemptions happened; schedule again
                if step.swapped_out_tokens:
                    yield env.timeout(self._side_time(step))
                continue
            runs = self.scheduler.decode_run_length(step) if self.merge_decode_steps else 1
            start = env.now
            self._sample(1)
            new, cached = step.arrays()
            if runs == 1:
                emitted = self.speculation.emitted(step) if self.speculation and step.draft_tokens else None
                yield env.timeout(self.execution.step_time(new, cached) + self._side_time(step))
                finished = self.scheduler.complete(step, env.now, num_emitted=emitted)
                done = 1
            else:
                ends = start + np.cumsum(self.execution.decode_run_times(cached, runs))
                self._wakeup = env.event()
                yield self._first_of(env.timeout(ends[-1] - start), self._wakeup)
                done = runs
                if env.now < ends[-1]:  # a request arrived: finish the step in flight, then stop
                    done = int(np.searchsorted(ends, env.now)) + 1
                    yield env.timeout(ends[done - 1] - env.now)
                finished = self.scheduler.complete_decode_run(step, ends[:done])
            sources, extrapolated = run_sources(self.execution, new, cached, done)  # (this step's arrays)
            self.step_sources.update(sources)
            self.num_steps += done
            self.num_extrapolated_steps += done if extrapolated else 0
            self.busy_time += env.now - start
            for seq in finished:
                self.on_finish(seq)

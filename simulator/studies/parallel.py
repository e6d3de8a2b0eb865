"""Run independent simulations in parallel: all local cores by default, or a Ray cluster.

`run_tasks(fn, tasks)` calls `fn(task)` for every task and returns the results in task order,
whatever order they finish in, so a parallel run gives exactly what a serial one gives. Tasks are
plain data (scenario mappings, seeds), never live objects, so they pickle cheaply to worker
processes or Ray workers; `fn` must be a module-level function.

- `workers=1`: in this process, one after the other (easiest to debug, to profile, to step in).
- `workers=None`: a process pool with one worker per core (`os.cpu_count()`).
- `ray="auto"` or an address (`ray://host:10001`, `host:6379`): one Ray task per task, on an
  existing cluster; when this process already called `ray.init`, that instance is used.

Progress counts simulations, not tasks, when `estimate` says how many simulations a task will
probably run: each finished simulation reports itself (`simulation_done`, called by the trial
code in whatever process runs it), and when a task ends its estimate is replaced by its real
count, so the bar's total and its ETA settle instead of jumping as uneven tasks finish. (On Ray
the bar counts tasks.)
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm

from simulator.common.errors import ConfigError

_progress: Any = None  # in a worker running a task: where its finished simulations are reported
_task_index = -1


def simulation_done() -> None:
    """Report one finished simulation to the progress bar of the task running it, if any."""
    if _progress is not None:
        _progress.put(_task_index)


def _counted(fn: Callable[[Any], Any], queue: Any, index: int, task: Any) -> Any:
    global _progress, _task_index
    _progress, _task_index = queue, index
    try:
        return fn(task)
    finally:
        _progress, _task_index = None, -1


class _SimulationBar:
    """A tqdm bar over simulations whose total is the tasks' estimates, corrected as they end."""

    def __init__(self, tasks, estimate, desc, progress):
        self.estimates = [max(1, int(estimate(t))) for t in tasks]
        self.done = [0] * len(tasks)
        self.bar = tqdm(total=sum(self.estimates), desc=desc, unit="sim", disable=not progress, leave=False,
                        smoothing=0.0)

    def simulated(self, index: int) -> None:
        self.done[index] += 1
        if self.done[index] > self.estimates[index]:  # a task running past its estimate
            self.estimates[index] = self.done[index]
            self.bar.total = sum(self.estimates)
        self.bar.update()

    def finished(self, index: int) -> None:
        self.estimates[index] = self.done[index]
        self.bar.total = max(sum(self.estimates), self.bar.n)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def default_workers() -> int:
    return os.cpu_count() or 1


def run_tasks(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    *,
    workers: int | None = None,
    ray: str | None = None,
    desc: str = "simulating",
    progress: bool = True,
    estimate: Callable[[Any], int] | None = None,
) -> list[Any]:
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    tasks = list(tasks)
    if not tasks:
        return []
    if estimate is not None and not ray:
        return _run_counted(fn, tasks, workers, _SimulationBar(tasks, estimate, desc, progress))
    bar = tqdm(total=len(tasks), desc=desc, unit="run", disable=not progress, leave=False)
    try:
        if ray:
            return _run_ray(fn, tasks, ray, bar)
        count = min(workers or default_workers(), len(tasks))
        if count == 1:
            results = []
            for task in tasks:
                results.append(fn(task))
                bar.update()
            return results
        return _run_pool(fn, tasks, count, bar)
    finally:
        bar.close()


def _run_counted(fn, tasks: list, workers: int | None, bar: _SimulationBar) -> list:
    """Tasks whose simulations report themselves through a queue to one bar over simulations."""
    count = min(workers or default_workers(), len(tasks))
    try:
        if count == 1:
            queue = _InProcess(bar)
            results = []
            for i, task in enumerate(tasks):
                results.append(_counted(fn, queue, i, task))
                bar.finished(i)
            return results
        with multiprocessing.get_context().Manager() as manager:
            queue = manager.Queue()
            done = _run_pool(_counted_task, [(fn, queue, i, t) for i, t in enumerate(tasks)], count,
                             _Finished(bar, queue))
            _drain(queue, bar)
            return done
    finally:
        bar.close()


def _counted_task(packed):
    return _counted(*packed)


class _InProcess:
    def __init__(self, bar: _SimulationBar):
        self.bar = bar

    def put(self, index: int) -> None:
        self.bar.simulated(index)


def _drain(queue, bar: _SimulationBar) -> None:
    while True:
        try:
            bar.simulated(queue.get_nowait())
        except Exception:  # noqa: BLE001 - queue.Empty from a manager proxy
            return


class _Finished:
    """What `_run_pool` calls `update` on: drains simulation reports, and closes a task's count."""

    def __init__(self, bar: _SimulationBar, queue):
        self.bar, self.queue = bar, queue

    def update(self, index: int | None = None) -> None:
        _drain(self.queue, self.bar)
        if index is not None:
            self.bar.finished(index)

    def poll(self) -> None:
        _drain(self.queue, self.bar)


def _ignore_interrupts() -> None:
    """In a worker: Ctrl-C is the parent's to handle; it then terminates the workers at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_pool(fn, tasks: list, workers: int, bar) -> list:
    """A process pool whose workers are terminated, not awaited, when the parent is interrupted or
    a task fails: Ctrl-C stops a plan in well under a second instead of after the simulations in
    flight, and leaves no worker behind."""
    pool = multiprocessing.get_context().Pool(workers, initializer=_ignore_interrupts)
    try:
        pending = [pool.apply_async(fn, (task,)) for task in tasks]
        results: list[Any] = [None] * len(tasks)
        left = list(range(len(tasks)))
        while left:
            pending[left[0]].wait(0.05)  # short waits: the main thread sees Ctrl-C between them
            poll = getattr(bar, "poll", None)
            if poll is not None:
                poll()
            still = []
            for i in left:
                if pending[i].ready():
                    results[i] = pending[i].get()  # a task's exception is raised here
                    if poll is not None:
                        bar.update(i)
                    else:
                        bar.update()
                else:
                    still.append(i)
            left = still
        pool.close()
        pool.join()
        return results
    except BaseException:
        pool.terminate()
        pool.join()
        raise


def _run_ray(fn, tasks: list, address: str, bar) -> list:
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'ray>=2.9'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except ConnectionError as exc:
            raise ConfigError(f"--ray {address}: cannot connect to a Ray cluster ({exc})") from None
    remote = ray.remote(fn)
    refs = [remote.remote(task) for task in tasks]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list[Any] = [None] * len(tasks)
    waiting = list(refs)
    try:
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            for ref in done:
                results[index[ref]] = ray.get(ref)
                bar.update()
    except BaseException:
        for ref in waiting:  # interrupted or failed: the cluster stops the rest
            ray.cancel(ref, force=True)
        raise
    return results

"""Run independent simulations in parallel: all local cores by default, or a Ray cluster.

`run_tasks(fn, tasks)` calls `fn(task)` for every task and returns the results in task order,
whatever order they finish in, so a parallel run gives exactly what a serial one gives. Tasks are
plain data (scenario mappings, seeds), never live objects, so they pickle cheaply to worker
processes or Ray workers; `fn` must be a module-level function.

- `workers=1`: in this process, one after the other (easiest to debug, to profile, to step in).
- `workers=None`: a process pool with one worker per core (`os.cpu_count()`).
- `ray="auto"` or an address (`ray://host:10001`, `host:6379`): one Ray task per task, on an
  existing cluster; when this process already called `ray.init`, that instance is used.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm

from simulator.common.errors import ConfigError


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
) -> list[Any]:
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    tasks = list(tasks)
    if not tasks:
        return []
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
            still = []
            for i in left:
                if pending[i].ready():
                    results[i] = pending[i].get()  # a task's exception is raised here
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

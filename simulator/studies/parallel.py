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

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
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


def _run_pool(fn, tasks: list, workers: int, bar) -> list:
    results: list[Any] = [None] * len(tasks)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    results[pending.pop(future)] = future.result()
                    bar.update()
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return results


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
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        for ref in done:
            results[index[ref]] = ray.get(ref)
            bar.update()
    return results

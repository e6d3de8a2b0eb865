"""Timing single kernels on a device: one timer class per device type, interleaved repeats.

A CPU kernel runs on the calling thread, so the wall clock around the call is its time. A CUDA
kernel runs asynchronously: the timer records CUDA events on the current stream around the call
and synchronises before reading them, so the time is the device's, not the launch's. Every case
is warmed up first (allocation, kernel selection, caches), then each round runs every case once
in a new random order, so a burst of other work lands on one repeat of many cases instead of
every repeat of one; the median of the repeats is kept.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm


class CpuTimer:
    """Wall seconds of a call on the calling thread."""

    def __init__(self, device: torch.device):
        self.device = device

    def seconds(self, fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def synchronize(self) -> None:
        pass


class CudaTimer:
    """Device seconds of a call, between two CUDA events on the current stream."""

    def __init__(self, device: torch.device):
        self.device = device
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def seconds(self, fn: Callable[[], object]) -> float:
        with torch.cuda.device(self.device):
            self._start.record()
            fn()
            self._end.record()
            self._end.synchronize()
            return self._start.elapsed_time(self._end) * 1e-3  # elapsed_time is milliseconds

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)


def timer_for(device: torch.device) -> CpuTimer | CudaTimer:
    if device.type == "cuda":
        return CudaTimer(device)
    if device.type == "cpu":
        return CpuTimer(device)
    raise ValueError(f"no kernel timer for device type {device.type!r}; supported: cpu, cuda")


def median_seconds(
    timer: CpuTimer | CudaTimer,
    cases: Sequence[Callable[[], object]],
    *,
    warmup: int,
    repeats: int,
    seed: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """Median seconds of each case over `repeats` interleaved rounds, after `warmup` rounds."""
    samples: list[list[float]] = [[] for _ in cases]
    order = list(range(len(cases)))
    rng = random.Random(seed)
    with tqdm(total=len(cases) * (warmup + repeats), desc="ops", unit="op", disable=not progress,
              leave=False) as bar:  # fmt: skip
        for round_ in range(warmup + repeats):
            rng.shuffle(order)
            for i in order:
                elapsed = timer.seconds(cases[i])
                if round_ >= warmup:
                    samples[i].append(elapsed)
                bar.update()
    timer.synchronize()
    return np.array([np.median(s) for s in samples])

"""What the device can do at best: measured memory read bandwidth and matmul FLOP/s.

Each is the best of several runs, measured before and after the sweep (the profiler keeps the
larger), since other work on the machine only ever makes them look slower. These are the denominators of the efficiencies a fit implies (achieved / measured peak), which is
what transfers to other hardware. Both use the engine's own kernels and dtype: a sum over a
tensor far larger than the caches, and a square matmul through `backend.model.linear`.
"""

from __future__ import annotations

import os
import platform
import time

import torch

from backend.model import linear


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: allocation, kernel selection
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def memory_read_bandwidth(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """Bytes/s reading a 256 MiB (CPU) or 2 GiB (GPU) tensor once."""
    nbytes = (2 << 30) if device.type == "cuda" else (256 << 20)
    x = torch.ones(nbytes // torch.finfo(dtype).bits * 8, dtype=dtype, device=device)
    seconds = _best_seconds(lambda: x.sum(), device, repeats)
    return x.numel() * x.element_size() / seconds


def matmul_flops(device: torch.device, dtype: torch.dtype, repeats: int = 10) -> float:
    """FLOP/s of an n x n by n x n matmul (n = 2048 on CPU, 8192 on GPU) in the engine's dtype."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device).to(dtype)
    w = torch.randn(n, n, device=device).to(dtype)
    seconds = _best_seconds(lambda: linear(a, w), device, repeats)
    return 2.0 * n**3 / seconds


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({torch.get_num_threads()} threads)"


def load_average() -> float | None:
    """One-minute load average: other work on the machine makes CPU timings noisy."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None

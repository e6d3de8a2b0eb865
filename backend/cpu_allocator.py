"""Keep the CPU engine's large temporary buffers in the heap instead of fresh memory maps.

glibc serves allocations above its mmap threshold (128 KiB, rising adaptively to at most 32 MiB)
with a new memory map and unmaps them on free. A decode step's padded K/V gather and attention
scores pass 32 MiB from about 10k padded KV tokens per step on a 100M-parameter model, so every
step mapped, page-faulted and zeroed its buffers afresh: 2-3x slower steps than the trend of
smaller ones (benchmarks/bench_cpu_allocator.py). Raising the threshold and the trim threshold
lets freed buffers be reused by the next step. The setting is process-wide and only matters on
glibc; other C libraries are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_M_TRIM_THRESHOLD = -1  # malloc.h
_M_MMAP_THRESHOLD = -3
# Buffers up to this size come from the heap; the KV cache and weights (larger) still get maps.
THRESHOLD_BYTES = 512 * 1024**2

_applied: bool | None = None


def keep_large_buffers_in_heap() -> bool:
    """Apply the glibc settings once per process; True when they are in effect."""
    global _applied
    if _applied is None:
        _applied = False
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD_BYTES)) and bool(
                libc.mallopt(_M_TRIM_THRESHOLD, 2 * THRESHOLD_BYTES)
            )
    return _applied

"""The CPU engine reuses its freed large step buffers instead of mapping fresh memory every step."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="a glibc setting"
)

# Page faults of the third execution of a decode step whose padded K/V gather (torch's attention
# path) passes glibc's largest default mmap threshold (32 rows x 2,047 tokens of llama-20m: 33.5 MB
# of K or V; at 16 rows, below 32 MiB, glibc's sliding threshold sometimes kept them in the heap by
# itself): buffers mapped afresh fault in every page each step; buffers reused from the heap none.
PROBE = """
import resource, sys, torch
import backend.cpu_allocator as allocator
if sys.argv[1] == "default":
    allocator._applied = False  # as if the runner never changed glibc's settings
from backend.runner import ModelRunner
from calibration.measure.step_grid import build_step
torch.set_num_threads(1)
runner = ModelRunner("llama-20m", device="cpu", num_blocks=4200)
step = build_step([(1, 2047)] * 32, runner.num_blocks, runner.block_size)
for _ in range(2):
    runner.execute(step)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
runner.execute(step)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def step_page_faults(mode: str) -> int:
    # torch's decode attention (the path without the native kernels) is the one that gathers
    env = {**os.environ, "LLMSIM_NATIVE_KERNELS": "0"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, env=env)
    return int(out.stdout.split()[-1])


def test_decode_steps_reuse_their_large_buffers():
    assert step_page_faults("default") > 20_000
    assert step_page_faults("tuned") < 2_000

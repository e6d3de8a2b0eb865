"""All-reduce and all-gather times over torch.distributed (NCCL), one process per GPU.

Tensor parallelism all-reduces each layer's activations and gathers the logits; the kernel-table
step model reads both by message bytes and rank count. For each rank count (2, 4, 8, up to the
GPUs visible) this spawns one process per GPU; every rank times every message size the same
number of times in the same shuffled order (one seed for all, so the collectives pair up), with
CUDA events around each call; rank 0 reports the slowest rank's median, which is when the
collective is done for all. With one device nothing is measured, and the step model prices
tensor-parallel collectives with the roofline's ring formula (the file's notes say so).
"""

from __future__ import annotations

import os
import random
import socket

import numpy as np
import torch

OPS = ("all_reduce", "all_gather")


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def rank_counts(tensor_parallel: tuple[int, ...]) -> list[int]:
    """The tensor-parallel degrees above 1 that the visible GPUs can run."""
    return [tp for tp in tensor_parallel if 1 < tp <= visible_gpus()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, ranks: int, port: int, sizes: list[int], warmup: int, repeats: int, out) -> None:
    import torch.distributed as dist

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=ranks)
    device = torch.device("cuda", rank)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    cases = []
    for op in OPS:
        for nbytes in sizes:
            numel = max(1, nbytes // 2)  # 16-bit activations
            if op == "all_reduce":
                buf = torch.ones(numel, dtype=torch.bfloat16, device=device)
                cases.append((op, nbytes, lambda buf=buf: dist.all_reduce(buf)))
            else:
                part = torch.ones(max(1, numel // ranks), dtype=torch.bfloat16, device=device)
                whole = torch.empty(part.numel() * ranks, dtype=torch.bfloat16, device=device)
                cases.append((op, nbytes, lambda p=part, w=whole: dist.all_gather_into_tensor(w, p)))
    samples = [[] for _ in cases]
    order = list(range(len(cases)))
    rng = random.Random(0)  # the same order on every rank
    for round_ in range(warmup + repeats):
        rng.shuffle(order)
        for i in order:
            start.record()
            cases[i][2]()
            end.record()
            end.synchronize()
            if round_ >= warmup:
                samples[i].append(start.elapsed_time(end) * 1e-3)
    medians = torch.tensor([float(np.median(s)) for s in samples], device=device)
    dist.all_reduce(medians, op=dist.ReduceOp.MAX)  # done when the slowest rank is
    if rank == 0:
        out.put({(op, nbytes): float(t) for (op, nbytes, _), t in zip(cases, medians.tolist())})
    dist.destroy_process_group()


def measure(ranks: int, sizes: list[int], warmup: int, repeats: int) -> dict[tuple[str, int], float]:
    """(op, message bytes) -> seconds, on `ranks` GPUs."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    mp.start_processes(_worker, args=(ranks, _free_port(), sizes, warmup, repeats, out), nprocs=ranks,
                       start_method="spawn", join=True)  # fmt: skip
    return out.get()

"""Parallel runs: results in task order, identical to a serial run, locally and on Ray."""

import os

import pandas as pd
import pytest
import yaml

from simulator.common.errors import ConfigError
from simulator.studies.parallel import run_tasks
from simulator.studies.plan import run_plan
from simulator.studies.sweep import run_sweep

SCENARIO = {
    "name": "par",
    "model": "llama-3-8b",
    "hardware": "a100-80gb",
    "scheduler": {"max_num_seqs": 32},
    "workload": {
        "arrival": {"process": "poisson", "rate": 2.0},
        "num_requests": 120,
        "classes": [{"name": "chat", "prompt_tokens": {"dist": "lognormal", "mean": 500, "std": 300},
                     "output_tokens": {"dist": "lognormal", "mean": 120, "std": 80},
                     "slo": {"ttft_ms": 500, "tpot_ms": 50}}],
    },
    "plan": {
        "target": {"rate": 10},
        "search": {"hardware": ["a10g", "l40s"], "weight_dtype": ["fp16", "fp8"], "replicas": {"min": 1, "max": 4}},
        "seeds": 2,
        "headroom_steps": 1,
    },
}


def write(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    return path


def pid_and_square(x):
    return os.getpid(), x * x


def test_results_come_back_in_task_order_from_other_processes():
    tasks = list(range(12))
    out = run_tasks(pid_and_square, tasks, workers=2, progress=False)
    assert [sq for _, sq in out] == [x * x for x in tasks]
    assert all(pid != os.getpid() for pid, _ in out)


def test_one_worker_runs_in_this_process():
    out = run_tasks(pid_and_square, [1, 2, 3], workers=1, progress=False)
    assert out == [(os.getpid(), 1), (os.getpid(), 4), (os.getpid(), 9)]
    with pytest.raises(ConfigError, match="--workers"):
        run_tasks(pid_and_square, [1], workers=0)


def _sweep_table(path, **kwargs):
    res = run_sweep(path, ["workload.arrival.rate=2:20:6"], seeds=2, progress=False, **kwargs)
    return res.runs.drop(columns=["wall_s"]), res.max_rate


def test_parallel_sweep_and_plan_equal_the_serial_ones(tmp_path):
    path = write(tmp_path)
    serial, serial_max = _sweep_table(path, workers=1)
    parallel, parallel_max = _sweep_table(path, workers=2)
    pd.testing.assert_frame_equal(serial, parallel)
    assert serial_max == parallel_max
    a = run_plan(path, workers=1, progress=False).candidates
    b = run_plan(path, workers=2, progress=False).candidates
    pd.testing.assert_frame_equal(a, b)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_gives_the_same_results_as_local_processes(tmp_path, local_ray):
    path = write(tmp_path)
    local, local_max = _sweep_table(path, workers=2)
    remote, remote_max = _sweep_table(path, ray="auto")
    pd.testing.assert_frame_equal(local, remote)
    assert local_max == remote_max
    a = run_plan(path, workers=2, progress=False).candidates
    b = run_plan(path, ray="auto", progress=False).candidates
    pd.testing.assert_frame_equal(a, b)

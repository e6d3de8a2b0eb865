"""Profile the real engine, calibrate the measurements, run a scenario with the result: the whole bridge."""

import json

import pandas as pd
import pytest
import yaml

from calibration.measure.measurements import load_measurements, meta_path
from calibration.measure.step_grid import QUICK, build_step, sweep_points
from simulator.cli import main
from simulator.execution.calibration_file import load_calibration

DOCUMENTED_COLUMNS = [
    "region", "layout", "num_seqs", "num_prefill_seqs", "num_decode_seqs", "batched_tokens", "cached_tokens",
    "max_context", "prefill_attention_pairs", "decode_kv_tokens", "decode_padded_kv_tokens", "repeats",
    "median_s", "p25_s", "p75_s", "min_s", "max_s", "core_share",
]  # fmt: skip
META_KEYS = {
    "model", "device", "dtype", "threads", "torch_version", "llmsim_version", "date", "weight_bytes",
    "kv_bytes_per_token", "peak_memory_bytes", "measured_memory_bandwidth", "measured_matmul_flops",
}  # fmt: skip


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile") / "llama-20m.csv"
    argv = [
        "profile",
        "--model",
        "llama-20m",
        "--device",
        "cpu",
        "--quick",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    return out


def test_profile_writes_the_documented_columns_and_metadata(profiled):
    frame = pd.read_csv(profiled)
    assert list(frame.columns) == DOCUMENTED_COLUMNS
    assert set(frame["region"]) == {"prefill", "decode", "mixed"}
    assert (frame["median_s"] > 0).all() and (frame["min_s"] <= frame["median_s"]).all()
    assert (frame["median_s"] <= frame["max_s"]).all() and (frame["repeats"] == QUICK.repeats).all()
    # the descriptive columns agree with the layout they describe
    m = load_measurements(profiled)
    f = m.features()
    assert (f.tokens == frame["batched_tokens"]).all() and (f.seqs == frame["num_seqs"]).all()
    meta = json.loads(meta_path(profiled).read_text())
    assert META_KEYS <= set(meta)
    assert meta["model"] == "llama-20m" and meta["dtype"] == "fp32" and meta["threads"] == 1
    assert meta["weight_bytes"] > 0 and meta["measured_matmul_flops"] > 0


def test_bigger_steps_take_longer(profiled):
    frame = pd.read_csv(profiled).set_index("layout")["median_s"]
    assert frame["512+0"] > frame["2+0"]  # a 512-token prefill is not free


def test_sweep_respects_its_limits():
    points = sweep_points(QUICK, max_tokens=64, max_batch=8, max_context=512, kv_blocks=40, block_size=16)
    assert points
    for p in points:
        assert sum(n for n, _ in p.rows) <= 64 and len(p.rows) <= 8
        assert max(n + c for n, c in p.rows) <= 512
        assert sum(-(-(n + c) // 16) for n, c in p.rows) <= 40
    step = build_step(points[-1].rows, 40, 16)
    assert [s.prompt_len for s in step.seqs] == [n + c for n, c in points[-1].rows]
    assert all(len(s.block_table) * 16 >= s.prompt_len for s in step.seqs)


def test_calibrate_then_run_a_scenario_with_it(profiled, tmp_path, capsys):
    cal_path = tmp_path / "cal" / "llama-20m-cpu.yaml"
    assert main(["calibrate", str(profiled), "--out", str(cal_path)]) == 0
    assert "held-out" in capsys.readouterr().out
    cal = load_calibration(cal_path)
    assert cal.provenance == "measured" and cal.model == "llama-20m" and cal.hardware == "cpu-host"
    assert cal_path.with_name("llama-20m-cpu.residuals.png").stat().st_size > 0
    scenario = {
        "name": "cpu20m",
        "model": "llama-20m",
        "hardware": {"name": "cpu-host", "memory_gib": 1, "memory_bandwidth_gbps": 40,
                     "tflops": {"fp32": 0.25}, "interconnect_gbps": 10},
        "deployment": {"weight_dtype": "fp32", "kv_dtype": "fp32", "activation_reserve_gb": 0},
        "scheduler": {"max_num_seqs": 16, "max_num_batched_tokens": 512},
        "execution": {"calibration": "cal/llama-20m-cpu.yaml"},  # relative to the scenario file
        "workload": {"arrival": {"process": "poisson", "rate": 2}, "num_requests": 20,
                     "classes": [{"name": "chat", "prompt_tokens": {"dist": "constant", "value": 2000},
                                  "output_tokens": {"dist": "constant", "value": 20}}]},
    }  # fmt: skip
    path = tmp_path / "cpu20m.yaml"
    path.write_text(yaml.safe_dump(scenario))
    out = tmp_path / "results"
    assert main(["run", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    run = json.loads((out / "summary.json").read_text())["run"]
    assert run["execution"]["provenance"] == "measured"
    assert run["execution"]["calibration"].endswith("llama-20m-cpu.yaml")
    # 2000-token prompts are past the quick profile's 512-token contexts: counted and reported
    assert run["extrapolated_steps"] > 0
    assert f"extrapolated: {run['extrapolated_steps']:,} of" in printed


def test_profile_rejects_bad_arguments(tmp_path, capsys):
    assert main(["profile", "--model", "llama-20m", "--device", "cpu", "--out", str(tmp_path / "x.txt")]) == 2
    assert "must end in .csv" in capsys.readouterr().err
    assert main(["profile", "--model", "llama-2m", "--device", "cpu", "--out", str(tmp_path / "x.csv")]) == 2
    assert "unknown model" in capsys.readouterr().err

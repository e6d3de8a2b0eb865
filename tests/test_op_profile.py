"""`llmsim profile --ops`: the engine's own kernels measured into a kernel-table file that the
kernel-table step model loads and prices steps from (structure and use, not timing values)."""

import json

import numpy as np
import pytest
import torch
import yaml

from calibration.measure.op_elementwise import ElementwiseCase, fit_elementwise
from calibration.measure.op_grid import QUICK, model_ops
from calibration.measure.op_timing import CpuTimer, median_seconds, timer_for
from simulator.cli import main
from simulator.common.errors import ConfigError
from simulator.execution.kernels.elementwise import layer_kernels
from simulator.execution.kernels.op_table import load_kernel_tables, parse_numbers
from simulator.execution.kernels.shapes import rank_shapes
from simulator.execution.kernels.step_model import KernelTableModel
from simulator.scenario import execution_model, parse_scenario
from simulator.spec import get_model

CPU = {"name": "cpu-host", "memory_gib": 1, "memory_bandwidth_gbps": 25, "tflops": {"fp32": 0.1},
       "interconnect_gbps": 10}  # fmt: skip


@pytest.fixture(scope="module")
def op_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("ops") / "llama-20m-cpu.yaml"
    argv = ["profile", "--ops", "--device", "cpu", "--model", "llama-20m", "--quick", "--threads", "1",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    return out


def test_the_file_holds_every_shape_the_models_ranks_need(op_file):
    tables = load_kernel_tables(op_file)
    spec = get_model("llama-20m")
    assert (tables.model, tables.hardware, tables.engine) == ("llama-20m", "cpu-host", "llmsim")
    assert tables.tensor_parallel == [1, 2]  # 6 heads / 2 KV heads split by 1 and 2 only
    src = tables.source
    assert src.package == "llmsim" and src.device and src.converted_on and "--ops" in src.command
    assert any(note.startswith("torch ") for note in src.notes)
    assert any("collectives not measured" in note for note in src.notes) and tables.collectives is None
    (gemm,) = tables.gemm
    assert gemm.dtype == "fp32" and list(parse_numbers(gemm.m)) == list(QUICK.gemm_m)
    needed = {(g.n, g.k) for tp in (1, 2) for g in (*rank_shapes(spec, tp).layer_gemms, rank_shapes(spec, tp).lm_head)}
    assert {(s.n, s.k) for s in gemm.sites} == needed
    assert all(np.all(parse_numbers(s.us) > 0) for s in gemm.sites)
    for table, batch, seq in ((tables.context_attention, QUICK.context_batch, QUICK.context_seq),
                              (tables.generation_attention, QUICK.decode_batch, QUICK.decode_len)):  # fmt: skip
        assert list(parse_numbers(table.batch)) == list(batch) and list(parse_numbers(table.seq)) == list(seq)
        assert {(s.heads, s.kv_heads, s.head_dim, s.kv_dtype) for s in table.slices} == {(6, 2, 64, "fp32"),
                                                                                         (3, 1, 64, "fp32")}
        for s in table.slices:
            us = parse_numbers(s.us).reshape(len(batch), len(seq))
            assert np.isfinite(us[0]).all()  # batch 1 is always measured; over-budget cells are nan
    ew = tables.elementwise
    assert 0 < ew.bandwidth_efficiency <= 1 and ew.floor_us >= 0 and "fitted to" in ew.source


def scenario_data(op_file, tp=1):
    return {
        "name": "ops", "model": "llama-20m", "hardware": CPU,
        "deployment": {"weight_dtype": "fp32", "kv_dtype": "fp32", "tensor_parallel": tp,
                       "activation_reserve_gb": 0},
        "execution": {"kernel_tables": str(op_file)},
        "workload": {"arrival": {"process": "poisson", "rate": 2}, "num_requests": 8,
                     "classes": [{"name": "c", "prompt_tokens": {"dist": "constant", "value": 100},
                                  "output_tokens": {"dist": "constant", "value": 8}}]},
    }  # fmt: skip


def scenario(op_file, tp=1):
    return parse_scenario(scenario_data(op_file, tp))


def test_the_kernel_model_prices_steps_from_it(op_file):
    model = execution_model(scenario(op_file))
    assert isinstance(model, KernelTableModel) and model.describe()["engine"] == "llmsim"
    assert model.overhead.cuda_graphs is False  # llmsim's engine runs eagerly
    decode = model.step_time(np.ones(4, int), np.full(4, 100))
    assert 0 < decode < model.step_time(np.ones(16, int), np.full(16, 100))
    prefill = model.step_time(np.array([200]), np.array([0]))
    mixed = model.step_time(np.array([200, 1, 1]), np.array([0, 100, 300]))
    assert 0 < prefill < mixed
    assert model.step_sources(np.ones(4, int), np.full(4, 100)) == {"measured-range": 1}
    assert model.step_sources(np.array([2000]), np.array([0])) == {"extrapolated": 1}
    np.testing.assert_allclose(model.decode_run_times(np.array([50, 80]), 3),
                               [model.step_time(np.ones(2, int), np.array([50, 80]) + i) for i in range(3)])
    tp2 = execution_model(scenario(op_file, tp=2))
    assert "roofline" in tp2.step_sources(np.ones(4, int), np.full(4, 100))  # no all-reduce measured


def test_a_scenario_runs_on_it(op_file, tmp_path, capsys):
    path = tmp_path / "ops.yaml"
    path.write_text(yaml.safe_dump(scenario_data(op_file)))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    run = json.loads((tmp_path / "out" / "summary.json").read_text())["run"]
    assert run["execution"]["provenance"] == "kernel-tables" and run["execution"]["engine"] == "llmsim"
    capsys.readouterr()


def test_a_fake_timer_shows_interleaved_rounds_and_medians():
    calls = []

    class Fake(CpuTimer):
        def seconds(self, fn):
            calls.append(fn())
            return float(len(calls))

    medians = median_seconds(Fake(None), [lambda: "a", lambda: "b"], warmup=1, repeats=3, progress=False)
    assert sorted(calls[:2]) == ["a", "b"] and len(calls) == 8  # each round runs every case once
    assert medians.tolist() == [float(np.median([i + 1 for i, c in enumerate(calls[2:], 2) if c == k]))
                                for k in ("a", "b")]  # fmt: skip
    assert isinstance(timer_for(torch.device("cpu")), CpuTimer)
    with pytest.raises(ValueError, match="no kernel timer for device type 'meta'"):
        timer_for(torch.device("meta"))


def test_elementwise_fit_recovers_a_known_floor_and_bandwidth():
    shapes = rank_shapes(get_model("llama-20m"), 1)
    per = {k.name: k.bytes_per_token for k in layer_kernels(shapes, 4.0)}
    cases = [ElementwiseCase(op, kernels, m, None) for m in (1, 16, 256, 2048)
             for op, kernels in (("norm", ("add_rmsnorm_1",)), ("rope", ("rotary", "kv_cache_write")))]  # fmt: skip
    seconds = np.array([len(c.kernels) * 5e-6 + c.tokens * sum(per[k] for k in c.kernels) / 12e9 for c in cases])
    bandwidth, floor, worst = fit_elementwise(cases, seconds, shapes, 4.0)
    assert bandwidth == pytest.approx(12e9) and floor == pytest.approx(5e-6) and worst < 1e-9


def test_bad_requests_are_refused_with_the_reason(tmp_path, capsys):
    with pytest.raises(ConfigError, match="prices dense models only"):
        model_ops(get_model("moe-60m"))
    assert main(["profile", "--ops", "--model", "llama-20m", "--device", "cpu", "--out", str(tmp_path / "x.csv")]) == 2
    assert "must end in .yaml" in capsys.readouterr().err
    argv = ["profile", "--ops", "--model", "llama-20m", "--device", "cpu", "--max-tokens", "64",
            "--out", str(tmp_path / "x.yaml")]  # fmt: skip
    assert main(argv) == 2
    assert "--max-tokens: not used with --ops" in capsys.readouterr().err
    assert main(["profile", "--model", "llama-20m", "--hardware", "h100-sxm", "--out", str(tmp_path / "x.csv")]) == 2
    assert "--hardware goes with --ops" in capsys.readouterr().err

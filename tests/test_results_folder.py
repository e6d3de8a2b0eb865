"""Results never delete what llmsim did not write; changed or dropped requests are told; a plot never
loses a run."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from simulator.cli import main
from simulator.common.errors import ConfigError
from simulator.common.files import MANIFEST, result_files
from simulator.metrics.plots import histogram_edges
from simulator.metrics.results import Results
from simulator.scenario import parse_scenario, run

BASE = {
    "name": "tiny",
    "model": "llama-3-8b",
    "hardware": "a100-80gb",
    "workload": {
        "arrival": {"process": "poisson", "rate": 0.5},
        "num_requests": 20,
        "classes": [{"name": "c", "prompt_tokens": {"dist": "constant", "value": 300},
                     "output_tokens": {"dist": "constant", "value": 40}, "slo": {"ttft_ms": 500}}],
    },
}


def write(tmp_path, data, name="s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- writing into folders --------------------------------------------------------------------


def test_a_folder_of_someone_elses_files_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    code, _, err = cli(capsys, "run", write(tmp_path, BASE), "--out", out)
    assert code == 2 and "did not write (notes.txt)" in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    code, _, _ = cli(capsys, "run", write(tmp_path, BASE), "--out", out, "--force")
    assert code == 0 and (out / "notes.txt").read_text() == "my notes" and (out / "summary.json").is_file()
    code, _, _ = cli(capsys, "run", write(tmp_path, BASE), "--out", out)  # llmsim's folder now: no force needed
    assert code == 0 and (out / "notes.txt").read_text() == "my notes"


def test_run_and_sweep_results_of_one_scenario_coexist(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, BASE)
    assert cli(capsys, "sweep", path, "--set", "workload.arrival.rate=0.5,1", "--seeds", "1", "--workers", "1")[0] == 0
    assert cli(capsys, "run", path)[0] == 0
    assert (tmp_path / "results/tiny/sweep/sweep.csv").is_file() and (tmp_path / "results/tiny/summary.json").is_file()
    assert cli(capsys, "sweep", path, "--set", "workload.arrival.rate=0.5,1", "--seeds", "1", "--workers", "1")[0] == 0
    assert (tmp_path / "results/tiny/summary.json").is_file()  # the sweep left the run alone


def test_a_rewrite_removes_only_its_own_files_that_it_no_longer_writes(tmp_path):
    def files(**extra):
        return {"a.csv": "1", "plots/p.png": "x", **extra}

    out = tmp_path / "r"
    for content in (files(**{"old.csv": "2"}), files()):
        with result_files(out) as stage:
            for name, text in content.items():
                (stage / name).parent.mkdir(parents=True, exist_ok=True)
                (stage / name).write_text(text)
        (out / "user.txt").write_text("keep") if not (out / "user.txt").exists() else None
    assert not (out / "old.csv").exists() and (out / "a.csv").is_file() and (out / "plots/p.png").is_file()
    assert (out / "user.txt").read_text() == "keep"
    assert json.loads((out / MANIFEST).read_text())["files"] == ["a.csv", "plots/p.png"]


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_write_leaves_the_previous_results_intact(tmp_path, monkeypatch, failure):
    sc = parse_scenario(BASE)
    out = run(sc).save(tmp_path / "r")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    original = Results.write_into

    def dies_halfway(self, folder, *args, **kwargs):
        original(self, folder, *args, **kwargs)
        raise failure("stopped")

    monkeypatch.setattr(Results, "write_into", dies_halfway)
    with pytest.raises(failure):
        run(sc, seed=7).save(out)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and not [p for p in out.iterdir() if p.name.startswith(".staging")]


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/b", "..", "a..b", ".hidden", "with space"])
def test_scenario_names_are_plain_names(name, tmp_path, capsys):
    with pytest.raises(ConfigError, match="name"):
        parse_scenario(BASE | {"name": name})
    code, _, err = cli(capsys, "run", write(tmp_path, BASE | {"name": name}), "--out", tmp_path / "o")
    assert code == 2 and "name" in err and "Traceback" not in err
    assert not (tmp_path.parent / "escape").exists()


def test_a_file_stem_that_is_not_a_plain_name_becomes_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = {k: v for k, v in BASE.items() if k != "name"}
    assert cli(capsys, "run", write(tmp_path, data, "my scenario (v2).yaml"))[0] == 0
    assert (tmp_path / "results" / "my_scenario_v2" / "summary.json").is_file()


# --- changed and dropped requests ------------------------------------------------------------


def test_clipped_requests_are_counted_printed_and_marked(tmp_path, capsys):
    data = copy.deepcopy(BASE)
    data["workload"]["classes"][0]["prompt_tokens"] = {"dist": "uniform", "low": 100, "high": 12000}
    code, out, _ = cli(capsys, "run", write(tmp_path, data), "--out", tmp_path / "r")
    assert code == 0 and "clipped:" in out and "prompts" in out
    requests = pd.read_csv(tmp_path / "r" / "requests.csv", keep_default_na=False)
    marked = requests[requests.reason.str.startswith("clipped to the context")]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert len(marked) == summary["run"]["clipped_prompts"] > 0
    assert (marked.prompt_tokens + marked.output_tokens <= 8192).all()
    code, _, err = cli(capsys, "run", write(tmp_path, data), "--out", tmp_path / "s", "--strict")
    assert code == 2 and "run.strict" in err and "do not fit the 8,192-token context" in err


def test_requests_larger_than_the_kv_cache_are_rejected_with_their_reason(tmp_path, capsys):
    data = copy.deepcopy(BASE)
    data["deployment"] = {"gpu_memory_utilization": 0.215}  # a KV cache of a few thousand tokens
    data["workload"]["classes"][0]["prompt_tokens"] = {"dist": "uniform", "low": 100, "high": 8000}
    code, out, _ = cli(capsys, "run", write(tmp_path, data), "--out", tmp_path / "r")
    assert code == 0 and "rejected:" in out and "larger than the whole KV cache" in out
    requests = pd.read_csv(tmp_path / "r" / "requests.csv", keep_default_na=False)
    rejected = requests[requests.status == "rejected"]
    assert len(rejected) and rejected.reason.str.startswith("larger than the whole KV cache").all()
    assert (requests[requests.status == "ok"].reason == "").all()
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["run"]["rejected"] == {"larger than the whole KV cache": len(rejected)}
    code, _, err = cli(capsys, "run", write(tmp_path, data), "--out", tmp_path / "s", "--strict")
    assert code == 2 and "can never be served" in err


# --- plots -----------------------------------------------------------------------------------


def test_degenerate_distributions_plot():
    for values in (np.full(5, 12.5), np.array([3.0, 3.0 + 1e-12]), np.array([0.0]), np.array([2.0, 4.0])):
        edges = histogram_edges(values, 10)
        assert np.all(np.diff(edges) > 0) and edges[0] <= values.min() and edges[-1] >= values.max()


def test_constant_lengths_at_low_load_give_every_plot(tmp_path):
    data = copy.deepcopy(BASE)
    data["workload"]["arrival"] = {"process": "constant", "rate": 0.1}  # every request alone: equal TPOTs
    out = run(parse_scenario(data)).save(tmp_path / "r")
    assert {p.name for p in (out / "plots").iterdir()} >= {"tpot_hist.png", "ttft_cdf.png", "queue_kv.png"}


def test_a_failing_plot_does_not_lose_the_run(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ValueError("no plot today")

    monkeypatch.setattr("simulator.metrics.results.plot_results", broken)
    out = run(parse_scenario(BASE)).save(tmp_path / "r")
    assert json.loads((out / "summary.json").read_text())["counts"]["completed"] == 20
    assert "no plot today" in json.loads((out / "run_log.json").read_text())["plot_error"]
    assert "plots not drawn" in capsys.readouterr().err

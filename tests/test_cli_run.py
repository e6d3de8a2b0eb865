"""`llmsim run`: outputs, and one clear message with exit code 2 for every user mistake."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from simulator.cli import main

ROOT = Path(__file__).resolve().parent.parent

BASE = {
    "name": "tiny",
    "model": "llama-3-8b",
    "hardware": "a100-80gb",
    "workload": {
        "arrival": {"process": "poisson", "rate": 2.0},
        "num_requests": 40,
        "classes": [
            {"name": "c", "prompt_tokens": {"dist": "constant", "value": 300},
             "output_tokens": {"dist": "constant", "value": 40}, "slo": {"ttft_ms": 500}}
        ],
    },
}


def write(tmp_path, data, name="s.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_run_writes_results_and_prints_a_table(tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", write(tmp_path, BASE), "--out", tmp_path / "res", "--seed", 5)
    assert code == 0, err
    assert "TTFT" in out and "goodput" in out
    summary = json.loads((tmp_path / "res" / "summary.json").read_text())
    assert summary["counts"]["completed"] == 40 and summary["run"]["seed"] == 5
    assert len((tmp_path / "res" / "requests.csv").read_text().splitlines()) == 41
    assert sorted(p.name for p in (tmp_path / "res" / "plots").iterdir()) == [
        "e2e_cdf.png", "queue_kv.png", "throughput.png", "tpot_hist.png", "ttft_cdf.png"]


def test_set_overrides_change_the_run(tmp_path, capsys):
    path = write(tmp_path, BASE)
    run_cli(capsys, "run", path, "--out", tmp_path / "a")
    run_cli(capsys, "run", path, "--out", tmp_path / "b", "--set", "deployment.weight_dtype=fp8",
            "--set", "hardware=h100-sxm")
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert b["run"]["hardware"] == "h100-sxm" and b["run"]["weight_dtype"] == "fp8"
    assert b["latency_s"]["tpot"]["mean"] < a["latency_s"]["tpot"]["mean"]


def with_change(path, value):
    data = json.loads(json.dumps(BASE))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    "data, expected",
    [
        (with_change(["deployment"], {"replicas": 2, "replicaz": 3}), ["deployment.replicaz", "did you mean 'replicas'"]),
        (with_change(["deployment"], {"replicas": "two"}), ["deployment.replicas", "'two'"]),
        (with_change(["workload", "arrival", "rate"], -1), ["workload.arrival", "rate", "greater than 0", "-1"]),
        (with_change(["model"], "llama-3-8"), ["unknown model 'llama-3-8'", "llama-3-8b"]),
        (with_change(["hardware"], "h100"), ["unknown hardware 'h100'", "h100-sxm"]),
        (with_change(["scheduler"], {"policy": "fifo"}), ["scheduler", "fifo", "vllm"]),
        (with_change(["workload", "arrival"], {"process": "trace", "format": "azure", "path": "nope.csv"}),
         ["nope.csv", "not found"]),
        (with_change(["model"], "llama-3-70b"), ["does not fit", "GB"]),
        ({**with_change(["scheduler"], {"enable_prefix_caching": True}), "disaggregation": {"link_gbps": 50}},
         ["enable_prefix_caching cannot be combined with disaggregation"]),
    ],
    ids=["unknown-key", "wrong-type", "negative-rate", "unknown-model", "unknown-gpu", "unknown-policy",
         "missing-trace", "does-not-fit", "disaggregation-with-prefix-cache"],
)
def test_bad_input_gives_one_clear_message_and_exit_2(tmp_path, capsys, data, expected):
    code, _, err = run_cli(capsys, "run", write(tmp_path, data), "--out", tmp_path / "res")
    assert code == 2
    assert "Traceback" not in err
    for fragment in expected:
        assert fragment in err, err
    assert not (tmp_path / "res").exists()  # nothing half-written


def test_malformed_trace_row_names_file_and_line(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_time,prompt_tokens,output_tokens\n0.0,100,10\n0.5,abc,10\n")
    data = with_change(["workload", "arrival"], {"process": "trace", "format": "csv", "path": str(trace)})
    data["workload"]["classes"] = [{"name": "c"}]
    code, _, err = run_cli(capsys, "run", write(tmp_path, data))
    assert code == 2 and "t.csv" in err and "line 3" in err and "abc" in err


def test_missing_scenario_and_bad_set(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", tmp_path / "none.yaml")
    assert code == 2 and "not found" in err
    code, _, err = run_cli(capsys, "run", write(tmp_path, BASE), "--set", "deployment.replicas")
    assert code == 2 and "KEY=VALUE" in err


def test_console_script_has_no_traceback_for_user_errors(tmp_path):
    path = write(tmp_path, with_change(["model"], "gpt-5"))
    proc = subprocess.run([sys.executable, "-m", "simulator.cli", "run", str(path)],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("llmsim: error:") and "Traceback" not in proc.stderr


def test_set_reaches_into_lists_by_index(tmp_path, capsys):
    path = write(tmp_path, BASE)
    code, _, err = run_cli(capsys, "run", path, "--out", tmp_path / "r",
                           "--set", "workload.classes.0.output_tokens.value=7")
    assert code == 0, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["tokens"]["output"] == 40 * 7
    for bad, words in [("workload.classes.3.name=x", "0 to 0"), ("workload.classes.first.name=x", "index"),
                       ("model.size=1", "holds a value")]:
        code, _, err = run_cli(capsys, "run", path, "--set", bad)
        assert code == 2 and words in err and "Traceback" not in err, (bad, err)

"""What scripts rely on: --version, --json on stdout, --fail-on exit codes, results folders per
--set variant or --name, Parquet tables, Scenario.with_updates, the generated scenario reference."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from simulator.cli import main
from simulator.common.errors import ConfigError
from simulator.scenario import parse_scenario
from simulator.scenario.reference import json_schema_text, markdown_reference

ROOT = Path(__file__).resolve().parent.parent
TINY = {
    "name": "tiny",
    "model": "llama-3-8b",
    "hardware": "a100-80gb",
    "scheduler": {"max_num_seqs": 16},
    "workload": {
        "arrival": {"process": "poisson", "rate": 4.0},
        "num_requests": 60,
        "classes": [{"name": "c", "prompt_tokens": {"dist": "constant", "value": 300},
                     "output_tokens": {"dist": "constant", "value": 30}, "slo": {"ttft_ms": 2000}}],
    },
}


def write(tmp_path, data=TINY):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("llmsim 0.")


def test_json_goes_to_stdout_alone_and_tables_to_stderr(tmp_path, capsys):
    code = main(["run", str(write(tmp_path)), "--out", str(tmp_path / "r"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0
    doc = json.loads(out)
    assert doc["slo_met"] is True and doc["summary"]["counts"]["total"] == 60
    assert "steady_state" in doc["run"] and "utilisation" in doc["run"]
    assert "Latency (ms)" in err and "Latency" not in out


def test_fail_on_saturated_and_slo(tmp_path, capsys):
    overloaded = copy.deepcopy(TINY)
    overloaded["workload"]["arrival"]["rate"] = 400.0
    overloaded["workload"]["num_requests"] = 400
    path = write(tmp_path, overloaded)
    assert main(["run", str(path), "--out", str(tmp_path / "a")]) == 0  # a verdict is not an error by default
    assert main(["run", str(path), "--out", str(tmp_path / "b"), "--fail-on", "saturated"]) == 1
    err = capsys.readouterr().err
    assert "--fail-on saturated:" in err
    assert main(["run", str(path), "--out", str(tmp_path / "c"), "--fail-on", "slo"]) == 1
    assert main(["run", str(write(tmp_path)), "--out", str(tmp_path / "d"), "--fail-on", "saturated",
                 "--fail-on", "slo"]) == 0


def test_set_variants_get_their_own_folders_and_name_overrides(tmp_path, monkeypatch):
    path = write(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(path)]) == 0
    assert main(["run", str(path), "--set", "deployment.replicas=2"]) == 0
    assert main(["run", str(path), "--set", "deployment.replicas=2", "--set", "scheduler.max_num_seqs=8"]) == 0
    assert main(["run", str(path), "--name", "mine"]) == 0
    folders = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert folders == ["mine", "tiny", "tiny+replicas=2", "tiny+replicas=2+max_num_seqs=8"]
    a = json.loads((tmp_path / "results/tiny/summary.json").read_text())
    b = json.loads((tmp_path / "results/tiny+replicas=2/summary.json").read_text())
    assert a["run"]["replicas"] == 1 and b["run"]["replicas"] == 2


def test_parquet_tables_keep_their_types(tmp_path):
    assert main(["run", str(write(tmp_path)), "--out", str(tmp_path / "r"), "--format", "parquet"]) == 0
    requests = pd.read_parquet(tmp_path / "r" / "requests.parquet")
    assert len(requests) == 60 and requests["ttft"].dtype == float
    assert (tmp_path / "r" / "requests.csv").exists() and (tmp_path / "r" / "timeseries.parquet").exists()


def test_with_updates_validates_and_names_the_field():
    sc = parse_scenario(TINY)
    two = sc.with_updates({"deployment.replicas": 2}, scheduler={"max_num_seqs": 8})
    assert two.deployment.replicas == 2 and two.scheduler.max_num_seqs == 8
    assert two.scheduler.block_size == sc.scheduler.block_size  # a nested mapping merges
    assert sc.deployment.replicas == 1  # the original is untouched
    with pytest.raises(ConfigError, match=r"deployment\.replicas"):
        sc.with_updates({"deployment.replicas": 0})
    with pytest.raises(ConfigError, match="unknown"):
        sc.with_updates(deployment={"replica": 2})


def test_schema_command_prints_the_json_schema(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"model", "hardware", "workload", "plan", "run"} <= set(schema["properties"])
    assert "base_dir" not in schema["properties"]


def test_the_scenario_reference_is_up_to_date():
    """docs/scenario_reference.md and docs/scenario.schema.json are generated: regenerate with
    `.venv/bin/llmsim schema --markdown > docs/scenario_reference.md` and
    `.venv/bin/llmsim schema > docs/scenario.schema.json`."""
    assert (ROOT / "docs" / "scenario_reference.md").read_text() == markdown_reference()
    assert (ROOT / "docs" / "scenario.schema.json").read_text() == json_schema_text()
    text = markdown_reference()
    for key in ("p99_ttft_ms", "attainment_pct", "slo_target", "measure_s", "confirm_longer"):
        assert key in text

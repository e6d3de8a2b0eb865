"""A policy of your own: module:Class and entry points, through run, compare and the engine's
scheduler factory; errors that say what is wrong; the tutorial's example as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from simulator.cli import main
from simulator.common.errors import ConfigError
from simulator.scenario import parse_scenario
from simulator.scheduling import BlockManager, SchedulerConfig, find_policy, make_scheduler, plugins
from simulator.studies.compare import policy_variant

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
TINY = {
    "name": "tiny",
    "model": "llama-3-8b",
    "hardware": "a100-80gb",
    "scheduler": {"max_num_seqs": 16},
    "workload": {
        "arrival": {"process": "poisson", "rate": 6.0},
        "num_requests": 80,
        "classes": [{"name": "c", "prompt_tokens": {"dist": "uniform", "low": 50, "high": 2000},
                     "output_tokens": {"dist": "constant", "value": 40}, "slo": {"ttft_ms": 1000}}],
    },
}


@pytest.fixture()
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    plugins.load.cache_clear()
    yield
    plugins.load.cache_clear()


def test_the_tutorial_example_is_the_file_it_shows():
    doc = (ROOT / "docs" / "policies.md").read_text()
    shown = re.search(r"```python\n(.*?)```", doc, re.DOTALL).group(1)
    code = (EXAMPLES / "my_policies.py").read_text()
    assert shown.strip() in code
    body = [line for line in shown.splitlines() if line.strip() and not line.startswith(("from ", "import "))]
    assert len(body) <= 12


def test_module_class_runs_in_a_scenario_and_in_the_engine_factory(examples_on_path):
    cls = find_policy("my_policies:ShortFirst")
    assert cls.__name__ == "ShortFirst"
    sched = make_scheduler(SchedulerConfig(policy="my_policies:ShortFirst"), BlockManager(64, 16), 1024)
    assert isinstance(sched, cls)  # what backend/ builds its engine's scheduler with
    import simulator

    results = simulator.run(parse_scenario(TINY | {"scheduler": {"policy": "my_policies:ShortFirst"}}))
    assert results.summary.completed == 80


def test_compare_runs_the_tutorial_policy_from_the_command_line(examples_on_path, tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    code = main(["compare", str(path), "--policy", "vllm-v0", "--policy", "my_policies:ShortFirst",
                 "--replications", "2", "--workers", "1", "--out", str(tmp_path / "out"), "--json"])
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(out)
    assert [v["name"] for v in doc["variants"]] == ["vllm-v0", "ShortFirst"]
    assert doc["variants"][1]["overrides"] == ["scheduler.policy=my_policies:ShortFirst"]


def test_an_entry_point_registers_a_name(examples_on_path, monkeypatch, tmp_path):
    dist = tmp_path / "my_policies_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-policies-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[llmsim.policies]\nshort-first = my_policies:ShortFirst\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "short-first" in plugins.registered_names()
    assert find_policy("short-first").__name__ == "ShortFirst"
    assert policy_variant("short-first").overrides == ("scheduler.policy=short-first",)


@pytest.mark.parametrize("name, words", [
    ("no_such_module:Policy", ["no_such_module", "not importable from the Python path", "PYTHONPATH"]),
    ("my_policies:Missing", ["has no 'Missing'"]),
    ("json:JSONDecoder", ["not a subclass of simulator.scheduling.Scheduler"]),
    ("fifo", ["unknown policy 'fifo'", "module:Class"]),
])
def test_bad_policy_names_say_what_is_wrong(examples_on_path, tmp_path, capsys, name, words):
    with pytest.raises(ConfigError) as err:
        find_policy(name)
    for word in words:
        assert word in str(err.value)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(TINY | {"scheduler": {"policy": name}}))
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "Traceback" not in capsys.readouterr().err

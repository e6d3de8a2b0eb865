"""Property-based tests: whatever a user writes, reading it succeeds or raises ConfigError (exit code
2 with one message), never another exception. Examples are derandomized, so CI is deterministic."""

import pytest
from fuzz_inputs import (
    check_scenario,
    check_trace,
    check_yaml,
    csv_traces,
    mooncake_traces,
    mutated_scenarios,
    outcome,
    write_file,
    yaml_documents,
)
from hypothesis import HealthCheck, given, settings

from simulator.cli import main

FUZZ = settings(
    max_examples=250, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)


def no_traceback(result: tuple[str, str]) -> None:
    kind, detail = result
    assert kind != "traceback", detail


@FUZZ
@given(mutated_scenarios())
def test_mutated_scenarios_parse_or_raise_config_error(data):
    no_traceback(outcome(check_scenario, data))


@FUZZ
@given(yaml_documents())
def test_random_yaml_files_read_or_raise_config_error(data):
    no_traceback(outcome(check_yaml, data))


@FUZZ
@given(csv_traces())
def test_random_csv_traces_read_or_raise_config_error(case):
    no_traceback(outcome(check_trace, *case))


@settings(FUZZ, max_examples=150)
@given(mooncake_traces())
def test_random_jsonl_traces_read_or_raise_config_error(data):
    no_traceback(outcome(check_trace, "mooncake", data))


BAD_FILES = {
    "duplicate-key": b"model: llama-3-8b\nhardware: a10g\nmodel: llama-3-70b\n",
    "not-utf8": b"model: llama-3-8b\nhardware: \xff\xfe\n",
    "deep": b"workload: " + b"[" * 200 + b"]" * 200 + b"\n",
    "huge-int": b"model: llama-3-8b\nhardware: a10g\nseed: " + b"7" * 5000 + b"\n",
    "billion-laughs": (
        b"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
        b"g: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
    ),
    "nan-bandwidth": b"model: llama-3-8b\nhardware: {memory_gib: 80, memory_bandwidth_gbps: .nan, "
    b"tflops: {fp16: 300}, interconnect_gbps: 300}\nworkload: {arrival: {process: poisson, rate: 1}, "
    b"num_requests: 5}\n",
    "infinite-rate": b"model: llama-3-8b\nhardware: a10g\nworkload: {arrival: {process: poisson, rate: .inf}, "
    b"num_requests: 5}\n",
    "not-a-mapping": b"- just\n- a list\n",
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_llmsim_run_on_bad_files_exits_2_with_one_message(name, capsys, tmp_path):
    path = write_file(f"{name}.yaml", BAD_FILES[name])
    code = main(["run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and err.count("llmsim: error:") == 1, err
    assert str(path) in err or "hardware" in err or "workload" in err
    assert not (tmp_path / "out").exists()

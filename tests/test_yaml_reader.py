"""Users' YAML files are read defensively: each malformed file gives one ConfigError naming the place."""

import pytest
import yaml

from simulator.common import yaml_reader
from simulator.common.errors import ConfigError
from simulator.common.files import read_yaml_mapping
from simulator.common.yaml_reader import parse_yaml
from simulator.scenario.loading import apply_overrides


def read(tmp_path, data: bytes):
    path = tmp_path / "s.yaml"
    path.write_bytes(data)
    return read_yaml_mapping(path, "scenario")


def error_of(tmp_path, data: bytes) -> str:
    with pytest.raises(ConfigError) as err:
        read(tmp_path, data)
    return str(err.value)


def test_a_plain_file_reads(tmp_path):
    assert read(tmp_path, b"a: 1\nb: [x, {c: 2.5}]\n") == {"a": 1, "b": ["x", {"c": 2.5}]}


def test_duplicate_keys_are_named_with_both_lines(tmp_path):
    message = error_of(tmp_path, b"model: llama-3-8b\nhardware: a10g\nmodel: llama-3-70b\n")
    assert "s.yaml" in message and "line 3" in message
    assert "duplicate key 'model'" in message and "first given on line 1" in message


def test_duplicate_keys_are_found_at_any_depth(tmp_path):
    message = error_of(tmp_path, b"deployment:\n  replicas: 2\n  tensor_parallel: 1\n  replicas: 4\n")
    assert "line 4" in message and "duplicate key 'replicas'" in message
    assert "duplicate key 1" in error_of(tmp_path, b"x: {1: a, 01: b}\n")  # equal once read as numbers


def test_merge_keys_may_be_overridden(tmp_path):
    data = read(tmp_path, b"base: &b {rate: 1, cv: 2}\narrival: {<<: *b, rate: 5}\n")
    assert data["arrival"] == {"rate": 5, "cv": 2}


def test_non_utf8_bytes_are_named_by_offset(tmp_path):
    message = error_of(tmp_path, b"name: caf\xe9\n")
    assert "not UTF-8" in message and "byte 9" in message and "0xe9" in message


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    assert read(tmp_path, b"\xef\xbb\xbfa: 1\n") == {"a": 1}


def test_nesting_deeper_than_the_limit_is_refused(tmp_path):
    deep = b"a: " + b"[" * 100 + b"]" * 100 + b"\n"
    assert "nested deeper than 64 levels" in error_of(tmp_path, deep)
    assert read(tmp_path, b"a: " + b"[" * 30 + b"]" * 30 + b"\n")  # 30 levels are fine


def test_huge_integers_are_refused_not_converted(tmp_path):
    assert "integer of 5,000 digits is too long" in error_of(tmp_path, b"seed: " + b"9" * 5000 + b"\n")
    assert "too long" in error_of(tmp_path, b"seed: 0x" + b"f" * 200 + b"\n")  # hex skips Python's limit
    assert read(tmp_path, b"seed: 123456789012345678901234567890\n")["seed"] == 123456789012345678901234567890


def test_values_the_constructors_cannot_build_are_errors(tmp_path):
    assert "cannot read '2023-02-30'" in error_of(tmp_path, b"day: 2023-02-30\n")
    assert "line 1" in error_of(tmp_path, b'x: "\\UFFFFFFFF"\n')


def test_alias_bombs_are_refused_before_expansion(tmp_path):
    levels = [b"a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefgh"):
        prev = "abcdefgh"[i]
        levels.append(f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]".encode())
    message = error_of(tmp_path, b"\n".join(levels) + b"\n")  # 10^8 values once expanded
    assert "expands to more than 1,000,000 values" in message


def test_a_few_aliases_are_fine(tmp_path):
    data = read(tmp_path, b"c: &c {p: 1}\nx: [*c, *c, *c]\n")
    assert data["x"] == [{"p": 1}] * 3


def test_files_above_the_size_limit_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(yaml_reader, "MAX_YAML_BYTES", 100)
    message = error_of(tmp_path, b"a: " + b"x" * 200 + b"\n")
    assert "204 bytes is too large for a scenario file (at most 100)" in message


def test_tags_that_build_objects_are_refused(tmp_path):
    assert "could not determine a constructor" in error_of(
        tmp_path, b"x: !!python/object/apply:os.system [ls]\n"
    )


def test_syntax_errors_give_line_and_column_on_one_line(tmp_path):
    message = error_of(tmp_path, b"a: [1, 2\nb: 3\n")
    assert message.startswith(f"{tmp_path / 's.yaml'}: not valid YAML: line ")
    assert "\n" not in message


def test_set_values_go_through_the_same_reader():
    with pytest.raises(ConfigError, match="--set 'seed=9999.*too long"):
        apply_overrides({}, ["seed=" + "9" * 5000])
    assert apply_overrides({}, ["a.b=[1, 2]"]) == {"a": {"b": [1, 2]}}


def test_the_reader_gives_the_values_safe_load_gives():
    text = "a: .inf\nb: null\nc: 1.5e3\nd: yes\ne: 1.5e+3\nf: 2023-01-02\ng: [0x1f, 0o17, 1_000]\n"
    assert parse_yaml(text, "x") == yaml.safe_load(text)

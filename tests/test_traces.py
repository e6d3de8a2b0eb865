"""Trace and length-file readers: the shipped real data, and clear errors on bad files."""

from pathlib import Path

import numpy as np
import pytest

from simulator.common.errors import ConfigError
from simulator.workload import traces

DATA = Path(__file__).resolve().parent.parent / "scenarios" / "traces"
AZURE = DATA / "azure_conv_2023.csv"
MOONCAKE = DATA / "mooncake_synthetic_trace.jsonl"
SHAREGPT = DATA / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- shipped data -----------------------------------------------------------------------------
def test_azure_trace_matches_published_statistics():
    trace = traces.read_trace(AZURE, "azure")
    assert len(trace) == 19366
    assert trace.arrival[0] == 0 and np.all(np.diff(trace.arrival) >= 0)
    assert trace.arrival[-1] / 60 == pytest.approx(58.4, abs=0.05)
    assert trace.prompt_tokens.mean() == pytest.approx(1155, abs=1)
    assert trace.output_tokens.mean() == pytest.approx(211, abs=1)
    # 7 fractional digits survive: 18:15:46.6805900 -> 18:15:50.9951690
    assert trace.arrival[1] == pytest.approx(4.314579, abs=1e-7)
    assert trace.block_hashes is None


def test_mooncake_trace_brings_hash_ids():
    trace = traces.read_trace(MOONCAKE, "mooncake")
    assert len(trace) == 3993
    assert trace.arrival[-1] / 60 == pytest.approx(17.0, abs=0.1)
    assert trace.prompt_tokens.mean() == pytest.approx(15326, abs=1)
    assert trace.hash_block_tokens == 512
    assert trace.block_hashes[0][:3] == [0, 1, 2]
    blocks = np.array([len(h) for h in trace.block_hashes])
    assert np.array_equal(blocks, -(-trace.prompt_tokens // 512))


def test_length_column_of_sharegpt():
    prompt = traces.read_length_column(SHAREGPT, "num_prefill_tokens")
    assert prompt.size == 30731 and prompt.dtype == np.int64
    assert prompt.mean() == pytest.approx(2340, abs=1)


def test_generic_csv_is_sorted_and_starts_at_zero(tmp_path):
    path = write(
        tmp_path, "t.csv", "arrival_time,prompt_tokens,output_tokens\n5.0,10,2\n3.5,20,4\n\n7,30,6\n"
    )
    trace = traces.read_trace(path, "csv")
    assert trace.arrival.tolist() == [0.0, 1.5, 3.5]
    assert trace.prompt_tokens.tolist() == [20, 10, 30]
    assert trace.output_tokens.tolist() == [4, 2, 6]


def test_parsed_arrays_are_read_only():
    trace = traces.read_trace(AZURE, "azure")
    with pytest.raises(ValueError):
        trace.prompt_tokens[0] = 1


# --- errors -----------------------------------------------------------------------------------
def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(ConfigError, match="nope.csv"):
        traces.read_trace(tmp_path / "nope.csv", "azure")


def test_unknown_format():
    with pytest.raises(ConfigError, match="'tsv'.*azure, mooncake, csv"):
        traces.read_trace(AZURE, "tsv")


def test_missing_columns_are_listed(tmp_path):
    path = write(tmp_path, "t.csv", "arrival_time,prompt\n0,1\n")
    with pytest.raises(ConfigError, match="missing column.*prompt_tokens, output_tokens"):
        traces.read_trace(path, "csv")


@pytest.mark.parametrize(
    "rows, line, value",
    [
        ("0,10,2\n1,ten,2\n", 3, "ten"),  # not a number
        ("0,10,2\n\n1,10,2\n2,10,0\n", 5, "0"),  # zero output tokens; the blank line still counts
        ("0,10,2\n1,10.5,2\n", 3, "10.5"),  # fractional tokens
        ("0,10,2\n-1,10,2\n", 3, "-1"),  # negative time
        ("0,10,2\n1,10\n", 3, "''"),  # missing field
    ],
)
def test_malformed_csv_row_gives_file_line_and_value(tmp_path, rows, line, value):
    path = write(tmp_path, "bad.csv", "arrival_time,prompt_tokens,output_tokens\n" + rows)
    with pytest.raises(ConfigError) as err:
        traces.read_trace(path, "csv")
    assert f"bad.csv, line {line}" in str(err.value) and value in str(err.value)


def test_extra_field_is_reported_with_its_line(tmp_path):
    path = write(tmp_path, "bad.csv", "arrival_time,prompt_tokens,output_tokens\n0,1,1\n1,1,1,9\n")
    with pytest.raises(ConfigError, match="bad.csv.*line 3"):
        traces.read_trace(path, "csv")


def test_malformed_azure_timestamp(tmp_path):
    text = (
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:4x.9951690,396,109\n"
    )
    path = write(tmp_path, "azure.csv", text)
    with pytest.raises(ConfigError, match=r"azure.csv, line 3: TIMESTAMP = '2023-11-16 18:15:4x.9951690'"):
        traces.read_trace(path, "azure")


def test_azure_timestamps_without_fraction(tmp_path):
    text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,1\n2023-11-16 18:15:47.25,1,1\n"
    trace = traces.read_trace(write(tmp_path, "a.csv", text), "azure")
    assert trace.arrival.tolist() == [0.0, 1.25]


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"timestamp": 5, "input_length": 10\n', "line 2: not valid JSON"),
        ('{"timestamp": 5, "input_length": 10}\n', "line 2: expected an object with keys"),
        (
            '{"timestamp": 5, "input_length": "x", "output_length": 1, "hash_ids": [0]}\n',
            "line 2: input_length",
        ),
        ('{"timestamp": 5, "input_length": 10, "output_length": 1, "hash_ids": ["a"]}\n', "line 2: hash_ids"),
        ('{"timestamp": 5, "input_length": 10, "output_length": 1}\n', "line 2: hash_ids missing"),
    ],
)
def test_malformed_mooncake_line(tmp_path, line, match):
    good = '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [0]}\n'
    path = write(tmp_path, "m.jsonl", good + line)
    with pytest.raises(ConfigError, match=match):
        traces.read_trace(path, "mooncake")


def test_length_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="missing column.*'?tokens'?.*found num_prefill_tokens"):
        traces.read_length_column(SHAREGPT, "tokens")
    path = write(tmp_path, "l.csv", "num_prefill_tokens\n12\nabc\n")
    with pytest.raises(ConfigError, match="l.csv, line 3: num_prefill_tokens = 'abc'"):
        traces.read_length_column(path, "num_prefill_tokens")


def test_edited_file_is_read_again(tmp_path):
    header = "arrival_time,prompt_tokens,output_tokens\n"
    path = write(tmp_path, "t.csv", header + "0,1,1\n")
    assert len(traces.read_trace(path, "csv")) == 1
    path.write_text(header + "0,1,1\n1,2,2\n")
    assert len(traces.read_trace(path, "csv")) == 2


# --- bounds -----------------------------------------------------------------------------------
CSV_HEADER = "arrival_time,prompt_tokens,output_tokens\n"


@pytest.mark.parametrize(
    "row, column, allowed",
    [
        ("1,10000000000000000000,2", "prompt_tokens", "from 1 to 10,000,000"),  # would wrap in int64
        ("1,10000001,2", "prompt_tokens", "from 1 to 10,000,000"),
        ("1e300,10,2", "arrival_time", "a time from 0 to 1e+10 s"),
        ("inf,10,2", "arrival_time", "a finite number"),
        ("1," + "9" * 5000 + ",2", "prompt_tokens", "a finite number"),
    ],
)
def test_numbers_beyond_the_ceilings_are_refused(tmp_path, row, column, allowed):
    path = write(tmp_path, "t.csv", CSV_HEADER + "0,10,2\n" + row + "\n")
    with pytest.raises(ConfigError) as err:
        traces.read_trace(path, "csv")
    message = str(err.value)
    assert f"t.csv, line 3: {column} = " in message and allowed in message
    assert len(message) < 300  # a 5000-digit value is shortened


def test_a_span_beyond_ten_years_is_refused(tmp_path):
    path = write(tmp_path, "t.csv", CSV_HEADER + "0,10,2\n9000000000,10,2\n")
    with pytest.raises(ConfigError, match=r"span 9e\+09 s \(line 2 to line 3\), more than .* \(10 years\)"):
        traces.read_trace(path, "csv")


def test_non_utf8_trace_names_the_byte(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(CSV_HEADER.encode() + b"0,10,2\n1,1\xff,2\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text: byte 51 \(0xff\)"):
        traces.read_trace(path, "csv")
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_bytes(b'{"timestamp": 0, "input_length": 1, "output_length": 1}\n\xc3(\n')
    with pytest.raises(ConfigError, match=r"not UTF-8 text: byte 56 \(0xc3\)"):
        traces.read_trace(jsonl, "mooncake")


def test_extra_fields_on_the_first_row_are_an_error_not_an_index(tmp_path):
    path = write(tmp_path, "t.csv", CSV_HEADER + "0,10,2,9\n1,10,2\n")
    with pytest.raises(ConfigError, match="t.csv, line 2: more fields than the header's 3"):
        traces.read_trace(path, "csv")


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"timestamp": 1, "input_length": ' + "9" * 5000 + ', "output_length": 1}', "line 2: Exceeds the limit"),
        ("[" * 100_000 + "]" * 100_000, "line 2: nested too deeply"),
        ('{"timestamp": 1, "input_length": 1e19, "output_length": 1}', "line 2: input_length = 1e\\+19"),
        ('{"timestamp": 1e300, "input_length": 1, "output_length": 1}', "line 2: timestamp .* 1e\\+13 ms"),
        ('{"timestamp": NaN, "input_length": 1, "output_length": 1}', "line 2: timestamp = nan"),
        ('{"timestamp": 1, "input_length": true, "output_length": 1}', "line 2: input_length = True"),
        ('{"timestamp": 1, "input_length": 1, "output_length": 1, "hash_ids": [100000000000000000000]}',
         "line 2: hash_ids .* 64-bit integers"),
    ],
)
def test_mooncake_numbers_are_bounded(tmp_path, line, match):
    good = '{"timestamp": 0, "input_length": 10, "output_length": 1}\n'
    if "hash_ids" in line:
        good = '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [0]}\n'
    path = write(tmp_path, "m.jsonl", good + line + "\n")
    with pytest.raises(ConfigError, match=match):
        traces.read_trace(path, "mooncake")


def test_length_file_values_are_bounded(tmp_path):
    path = write(tmp_path, "l.csv", "num_prefill_tokens\n12\n1e19\n")
    with pytest.raises(ConfigError, match="l.csv, line 3: num_prefill_tokens = '1e19'"):
        traces.read_length_column(path, "num_prefill_tokens")

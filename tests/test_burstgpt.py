"""`format: burstgpt`: BurstGPT's CSV as released, its failed rows skipped and counted, rows selected
by model and log type. The sample (tests/data/burstgpt_sample.csv) is made up in that format."""

from pathlib import Path

import pandas as pd
import pytest

from simulator.common.errors import ConfigError
from simulator.scenario import parse_scenario, run
from simulator.workload import traces

SAMPLE = Path(__file__).resolve().parent / "data" / "burstgpt_sample.csv"
HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


def write(tmp_path, text, name="b.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_sample_reads_with_failed_rows_skipped_and_counted():
    raw = pd.read_csv(SAMPLE)
    served = raw[(raw["Request tokens"] > 0) & (raw["Response tokens"] > 0)]
    trace = traces.read_trace(SAMPLE, "burstgpt")
    assert len(raw) == 32 and len(trace) == len(served) == 28
    assert trace.skipped_rows == 4  # three with 0 response tokens, one with 0 request tokens
    assert (
        trace.arrival[0] == 0
        and trace.arrival[-1] == served["Timestamp"].iloc[-1] - served["Timestamp"].iloc[0]
    )
    assert trace.prompt_tokens.tolist() == served["Request tokens"].tolist()
    assert trace.output_tokens.tolist() == served["Response tokens"].tolist()


def test_rows_are_selected_by_model_and_log_type():
    gpt4 = traces.read_trace(SAMPLE, "burstgpt", models=["gpt-4"])  # case is ignored
    api_chatgpt = traces.read_trace(SAMPLE, "burstgpt", models=["ChatGPT"], log_types=["API log"])
    raw = pd.read_csv(SAMPLE)
    expected = raw[(raw["Model"] == "GPT-4") & (raw["Response tokens"] > 0) & (raw["Request tokens"] > 0)]
    assert len(gpt4) == len(expected) and gpt4.prompt_tokens.tolist() == expected["Request tokens"].tolist()
    assert gpt4.skipped_rows == (raw["Model"] == "GPT-4").sum() - len(expected) == 3
    assert len(api_chatgpt) == 7


def test_an_unknown_selection_lists_the_values_found():
    with pytest.raises(ConfigError, match="no row has Model 'gpt-5'; found 'ChatGPT', 'GPT-4'"):
        traces.read_trace(SAMPLE, "burstgpt", models=["gpt-5"])


def test_later_releases_with_session_columns_read_too(tmp_path):
    text = ("Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
            "0.5,s1,2.1,ChatGPT,100,20,120,Conversation log\n3.25,s1,1.0,ChatGPT,130,0,130,Conversation log\n"
            "4.0,,0.7,GPT-4,50,5,55,API log\n")  # fmt: skip
    trace = traces.read_trace(write(tmp_path, text), "burstgpt")
    assert trace.arrival.tolist() == [0.0, 3.5] and trace.skipped_rows == 1


@pytest.mark.parametrize(
    "row, fragment",
    [
        (
            "5,ChatGPT,1e19,3,3,API log",
            "line 3: Request tokens = '1e19' is not a whole number of tokens from 0",
        ),
        ("5,ChatGPT,10,-2,8,API log", "line 3: Response tokens = '-2'"),
        ("5,ChatGPT,10.5,2,12.5,API log", "line 3: Request tokens = '10.5'"),
        ("1e300,ChatGPT,10,2,12,API log", "line 3: Timestamp = '1e300' is not a time from 0 to 1e+10 s"),
        ("nan,ChatGPT,10,2,12,API log", "line 3: Timestamp = 'nan' is not a finite number"),
    ],
)
def test_bad_rows_name_file_line_and_value(tmp_path, row, fragment):
    path = write(tmp_path, HEADER + "0,ChatGPT,10,2,12,API log\n" + row + "\n")
    with pytest.raises(ConfigError) as err:
        traces.read_trace(path, "burstgpt")
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_a_trace_of_only_failures_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="every row has 0 request or response tokens"):
        traces.read_trace(write(tmp_path, HEADER + "0,ChatGPT,10,0,10,API log\n"), "burstgpt")


def test_missing_columns_are_named(tmp_path):
    with pytest.raises(ConfigError, match="missing column.*Response tokens"):
        traces.read_trace(write(tmp_path, "Timestamp,Model,Request tokens\n0,ChatGPT,5\n"), "burstgpt")


def scenario(**arrival):
    return parse_scenario({
        "name": "burst", "model": "llama-3-8b", "hardware": "a100-80gb",
        "workload": {"arrival": {"process": "trace", "format": "burstgpt", "path": str(SAMPLE), **arrival}},
    })  # fmt: skip


def test_a_run_reports_the_skipped_rows():
    results = run(scenario(rate=2.0))
    assert results.summary.completed == 28
    assert results.info["skipped_trace_rows"] == 4


def test_selection_keys_belong_to_burstgpt_only():
    with pytest.raises(ConfigError, match="models and log_types select rows of a burstgpt trace"):
        parse_scenario({"model": "llama-3-8b", "hardware": "a100-80gb",
                        "workload": {"arrival": {"process": "trace", "format": "csv", "path": "x.csv",
                                                 "models": ["GPT-4"]}}})  # fmt: skip

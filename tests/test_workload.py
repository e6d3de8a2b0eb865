"""Workload generation: arrival statistics, determinism, class mix, clipping, trace replay, errors."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator.common.errors import ConfigError
from simulator.workload import WorkloadConfig, clip_to_context, generate, load_workload

REPO = Path(__file__).resolve().parent.parent
AZURE = "scenarios/traces/azure_conv_2023.csv"
MOONCAKE = "scenarios/traces/mooncake_synthetic_trace.jsonl"
SHAREGPT = "scenarios/traces/sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
CONST = {"dist": "constant", "value": 100}


def config(arrival, classes=None, **limits):
    data = {"arrival": arrival, **limits}
    data["classes"] = classes or [{"name": "chat", "prompt_tokens": CONST, "output_tokens": CONST}]
    return load_workload(data)


def arrivals(workload):
    return np.array([r.arrival for r in workload])


def gaps(process, n=20_000, seed=0, **params):
    w = generate(config({"process": process, **params}, num_requests=n), seed=seed, max_context=4096)
    return np.diff(arrivals(w))


# --- arrival processes ------------------------------------------------------------------------
def test_poisson_gaps_have_mean_one_over_rate_and_cv_one():
    g = gaps("poisson", rate=4.0)
    assert g.size == 19_999
    assert g.mean() == pytest.approx(0.25, rel=0.03)
    assert g.std() / g.mean() == pytest.approx(1.0, rel=0.03)


@pytest.mark.parametrize("cv", [0.5, 3.0])
def test_gamma_gaps_have_the_requested_cv(cv):
    g = gaps("gamma", rate=2.0, cv=cv)
    assert g.mean() == pytest.approx(0.5, rel=0.05)
    assert g.std() / g.mean() == pytest.approx(cv, rel=0.08)


def test_constant_arrivals_are_exact():
    w = generate(config({"process": "constant", "rate": 4.0}, duration_s=10.0), seed=3, max_context=4096)
    assert np.array_equal(arrivals(w), np.arange(40) / 4.0)


def test_duration_and_num_requests_stop_at_whichever_comes_first():
    arrival = {"process": "poisson", "rate": 10.0}
    by_time = generate(config(arrival, duration_s=60.0), seed=1, max_context=4096)
    t = arrivals(by_time)
    assert t[0] == 0 and t[-1] < 60.0 and len(by_time) == pytest.approx(600, rel=0.15)
    few = generate(config(arrival, duration_s=60.0, num_requests=50), seed=1, max_context=4096)
    assert len(few) == 50
    # The same stream underlies both limits, so their arrivals agree.
    assert np.array_equal(arrivals(few), t[:50])
    many = generate(config(arrival, duration_s=5.0, num_requests=10_000), seed=1, max_context=4096)
    assert np.array_equal(arrivals(many), t[t < 5.0])


# --- determinism and common random numbers ----------------------------------------------------
def test_same_seed_same_requests_other_seed_different():
    cfg = config(
        {"process": "gamma", "rate": 3.0, "cv": 2.0},
        [
            {
                "name": "a",
                "prompt_tokens": {"dist": "lognormal", "mean": 800, "std": 400},
                "output_tokens": CONST,
            }
        ],
        num_requests=500,
    )
    first, again, other = (generate(cfg, seed=s, max_context=4096) for s in (7, 7, 8))
    assert first.requests == again.requests
    assert not np.array_equal(arrivals(first), arrivals(other))
    assert [r.prompt_tokens for r in first] != [r.prompt_tokens for r in other]


def test_changing_lengths_or_classes_keeps_arrival_times():
    arrival = {"process": "poisson", "rate": 5.0}
    base = generate(config(arrival, num_requests=1000), seed=11, max_context=4096)
    longer = config(
        arrival,
        [
            {
                "name": "chat",
                "prompt_tokens": {"dist": "uniform", "low": 10, "high": 3000},
                "output_tokens": CONST,
            },
            {
                "name": "batch",
                "weight": 3,
                "prompt_tokens": CONST,
                "output_tokens": {"dist": "normal", "mean": 50, "std": 5},
            },
        ],
        num_requests=1000,
    )
    changed = generate(longer, seed=11, max_context=4096)
    assert np.array_equal(arrivals(base), arrivals(changed))


def test_rate_change_rescales_the_same_arrivals():
    slow = generate(config({"process": "poisson", "rate": 1.0}, num_requests=100), seed=2, max_context=4096)
    fast = generate(config({"process": "poisson", "rate": 4.0}, num_requests=100), seed=2, max_context=4096)
    assert np.allclose(arrivals(slow) / 4, arrivals(fast))


def test_output_distribution_change_keeps_prompts():
    def prompts(output):
        cls = [
            {
                "name": "a",
                "prompt_tokens": {"dist": "uniform", "low": 1, "high": 999},
                "output_tokens": output,
            }
        ]
        w = generate(
            config({"process": "poisson", "rate": 1.0}, cls, num_requests=300), seed=4, max_context=4096
        )
        return [r.prompt_tokens for r in w]

    assert prompts(CONST) == prompts({"dist": "lognormal", "mean": 200, "std": 300})


# --- classes and lengths ----------------------------------------------------------------------
def test_class_mix_follows_weights_and_carries_priority_and_slo():
    classes = [
        {
            "name": "interactive",
            "weight": 1,
            "prompt_tokens": CONST,
            "output_tokens": CONST,
            "priority": 0,
            "slo": {"ttft_ms": 500, "tpot_ms": 50},
        },
        {"name": "batch", "weight": 3, "prompt_tokens": CONST, "output_tokens": CONST, "priority": 5},
    ]
    w = generate(
        config({"process": "poisson", "rate": 10}, classes, num_requests=20_000), seed=5, max_context=4096
    )
    frame = w.to_frame()
    share = frame["request_class"].value_counts(normalize=True)
    assert share["batch"] == pytest.approx(0.75, abs=0.015)
    assert set(frame.loc[frame.request_class == "batch", "priority"]) == {5}
    assert w.slos["interactive"].ttft_ms == 500 and w.slos["batch"].ttft_ms is None
    assert list(frame.columns[:6]) == [
        "request_id",
        "arrival",
        "prompt_tokens",
        "output_tokens",
        "request_class",
        "priority",
    ]


@pytest.mark.parametrize(
    "dist, mean",
    [
        ({"dist": "uniform", "low": 100, "high": 300}, 200),
        ({"dist": "normal", "mean": 500, "std": 50}, 500),
        ({"dist": "lognormal", "mean": 1000, "std": 2000}, 1000),
    ],
)
def test_parametric_lengths_have_their_mean(dist, mean):
    cls = [{"name": "a", "prompt_tokens": dist, "output_tokens": dist}]
    w = generate(
        config({"process": "poisson", "rate": 1}, cls, num_requests=20_000), seed=0, max_context=10**6
    )
    prompt = w.to_frame()["prompt_tokens"].to_numpy()
    assert prompt.min() >= 1 and prompt.mean() == pytest.approx(mean, rel=0.05)


def test_empirical_lengths_reproduce_the_file_and_keep_rows_together():
    cls = [
        {
            "name": "sharegpt",
            "prompt_tokens": {"dist": "empirical", "path": SHAREGPT},
            "output_tokens": {"dist": "empirical", "path": SHAREGPT, "column": "output"},
        }
    ]
    w = generate(
        config({"process": "poisson", "rate": 1}, cls, num_requests=20_000), seed=0, max_context=10**6
    )
    frame = w.to_frame()
    assert frame.prompt_tokens.mean() == pytest.approx(2340, rel=0.03)
    assert frame.output_tokens.mean() == pytest.approx(439, rel=0.03)
    # Whole rows are drawn: every (prompt, output) pair exists in the file.
    rows = pd.read_csv(REPO / SHAREGPT)
    known = set(zip(rows.num_prefill_tokens, rows.num_decode_tokens))
    assert set(zip(frame.prompt_tokens, frame.output_tokens)) <= known


def test_requests_are_clipped_to_the_context_and_counted():
    cls = [
        {
            "name": "a",
            "prompt_tokens": {"dist": "uniform", "low": 1, "high": 3000},
            "output_tokens": {"dist": "uniform", "low": 1, "high": 3000},
        }
    ]
    w = generate(config({"process": "poisson", "rate": 1}, cls, num_requests=5000), seed=0, max_context=2048)
    frame = w.to_frame()
    total = frame.prompt_tokens + frame.output_tokens
    assert total.max() <= 2048 and frame.prompt_tokens.min() >= 1 and frame.output_tokens.min() >= 1
    assert w.clipped_outputs > 1000 and 0 < w.clipped_prompts < w.clipped_outputs


def test_clip_shortens_output_before_prompt():
    prompt, output = clip_to_context(np.array([10, 100, 5000, 90]), np.array([5, 50, 10, 10]), 100)
    assert prompt.tolist() == [10, 99, 99, 90]
    assert output.tolist() == [5, 1, 1, 10]


# --- traces -----------------------------------------------------------------------------------
def azure(**arrival):
    return load_workload({"arrival": {"process": "trace", "path": AZURE, "format": "azure", **arrival}})


def test_azure_replay_gives_the_trace():
    w = generate(azure(), seed=0, max_context=32_768)
    frame = w.to_frame()
    assert len(w) == 19_366 and w.clipped_prompts == w.clipped_outputs == 0
    assert frame.prompt_tokens.mean() == pytest.approx(1155, abs=1)
    assert frame.output_tokens.mean() == pytest.approx(211, abs=1)
    assert w.span_s / 60 == pytest.approx(58.4, abs=0.05)
    assert (frame.request_class == "default").all()


def test_trace_rate_and_time_scale_rescale_arrivals():
    base = generate(azure(), seed=0, max_context=32_768)
    assert (len(base) - 1) / base.span_s == pytest.approx(5.53, abs=0.01)
    doubled = generate(azure(rate=11.06), seed=0, max_context=32_768)
    assert (len(doubled) - 1) / doubled.span_s == pytest.approx(11.06)
    half = generate(azure(time_scale=0.5), seed=0, max_context=32_768)
    assert half.span_s == pytest.approx(base.span_s / 2)
    assert np.allclose(arrivals(half), arrivals(base) / 2)


def test_trace_window_and_limits():
    window = generate(azure(start_s=600, limit=1000), seed=0, max_context=32_768)
    base = arrivals(generate(azure(), seed=0, max_context=32_768))
    first = np.searchsorted(base, 600)
    assert len(window) == 1000 and window.requests[0].arrival == 0
    assert np.allclose(arrivals(window), base[first : first + 1000] - base[first])
    cut = load_workload({"arrival": {"process": "trace", "path": AZURE, "format": "azure"}, "duration_s": 60})
    assert arrivals(generate(cut, seed=0, max_context=32_768)).max() < 60


def test_trace_classes_override_lengths_only_where_given():
    cfg = load_workload(
        {
            "arrival": {"process": "trace", "path": AZURE, "format": "azure", "limit": 4000},
            "classes": [
                {"name": "replayed", "weight": 1},
                {"name": "short", "weight": 1, "output_tokens": {"dist": "constant", "value": 7}},
            ],
        }
    )
    w = generate(cfg, seed=0, max_context=32_768).to_frame()
    trace = generate(azure(limit=4000), seed=0, max_context=32_768).to_frame()
    short = w.request_class == "short"
    assert 0.45 < short.mean() < 0.55
    assert (w.output_tokens[short] == 7).all()
    assert (w.prompt_tokens == trace.prompt_tokens).all()
    assert (w.output_tokens[~short] == trace.output_tokens[~short]).all()


def test_mooncake_hash_ids_come_through_and_follow_clipping():
    cfg = load_workload({"arrival": {"process": "trace", "path": MOONCAKE, "format": "mooncake"}})
    w = generate(cfg, seed=0, max_context=200_000)
    assert w.hash_block_tokens == 512 and w.clipped_prompts == 0
    assert w.requests[0].block_hashes[:3] == [0, 1, 2]
    assert all(len(r.block_hashes) == -(-r.prompt_tokens // 512) for r in w)
    clipped = generate(cfg, seed=0, max_context=16_384)
    assert clipped.clipped_prompts > 0
    assert all(len(r.block_hashes) <= 32 for r in clipped)


def test_relative_paths_resolve_against_base_dir_then_project_root(tmp_path, monkeypatch):
    (tmp_path / "mine.csv").write_text("arrival_time,prompt_tokens,output_tokens\n0,5,5\n2,6,6\n")
    cfg = load_workload({"arrival": {"process": "trace", "path": "mine.csv", "format": "csv"}})
    assert len(generate(cfg, seed=0, max_context=100, base_dir=tmp_path)) == 2
    monkeypatch.chdir(tmp_path)  # the shipped traces are found from anywhere
    assert len(generate(azure(limit=10), seed=0, max_context=32_768, base_dir=tmp_path)) == 10


# --- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, match",
    [
        (
            {"arrival": {"process": "poisson", "rate": 1}, "num_requests": 5, "colour": "red"},
            "workload.colour",
        ),
        ({"arrival": {"process": "poisson", "rate": -2}, "num_requests": 5}, r"rate: .*greater than 0.*-2"),
        ({"arrival": {"process": "poisson", "rate": 1, "burst": 2}, "num_requests": 5}, "burst"),
        ({"arrival": {"process": "weibull", "rate": 1}, "num_requests": 5}, "'weibull'.*poisson"),
        ({"arrival": {"process": "poisson", "rate": 1}}, "duration_s and/or num_requests"),
        ({"arrival": {"process": "poisson", "rate": 1}, "num_requests": 5}, "prompt_tokens is required"),
        (
            {"arrival": {"process": "trace", "path": AZURE, "format": "azure", "rate": 2, "time_scale": 2}},
            "either rate.*or time_scale",
        ),
        (
            {
                "arrival": {"process": "trace", "path": AZURE, "format": "azure"},
                "classes": [{"name": "a"}, {"name": "a"}],
            },
            "repeated: a",
        ),
        (
            {
                "arrival": {"process": "trace", "path": AZURE, "format": "azure"},
                "classes": [{"name": "a", "weight": 0}],
            },
            "weight.*greater than 0",
        ),
        (
            {
                "arrival": {"process": "trace", "path": AZURE, "format": "azure"},
                "classes": [{"name": "a", "slo": {"ttft_ms": -1}}],
            },
            "ttft_ms",
        ),
    ],
)
def test_bad_workload_sections_are_rejected(data, match):
    with pytest.raises(ConfigError, match=match):
        load_workload(data)


def test_model_validate_also_rejects_unknown_keys():
    with pytest.raises(ValueError, match="Extra inputs"):
        WorkloadConfig.model_validate({"arrival": {"process": "constant", "rate": 1, "jitter": 0}})


def test_missing_trace_file_says_where_it_looked(tmp_path):
    cfg = load_workload({"arrival": {"process": "trace", "path": "gone.csv", "format": "csv"}})
    with pytest.raises(ConfigError) as err:
        generate(cfg, seed=0, max_context=100, base_dir=tmp_path)
    assert "workload.arrival.path" in str(err.value) and str(tmp_path / "gone.csv") in str(err.value)


def test_malformed_trace_row_is_reported_at_generation(tmp_path):
    (tmp_path / "t.csv").write_text("arrival_time,prompt_tokens,output_tokens\n0,5,5\n1,5,5\n2,five,5\n")
    cfg = load_workload({"arrival": {"process": "trace", "path": "t.csv", "format": "csv"}})
    with pytest.raises(ConfigError, match=r"t.csv, line 4: prompt_tokens = 'five'"):
        generate(cfg, seed=0, max_context=100, base_dir=tmp_path)


def test_bad_generation_arguments():
    cfg = config({"process": "poisson", "rate": 1}, num_requests=5)
    with pytest.raises(ConfigError, match="max_context"):
        generate(cfg, seed=0, max_context=1)
    with pytest.raises(ConfigError, match="seed"):
        generate(cfg, seed=-1, max_context=100)
    with pytest.raises(ConfigError, match="start_s"):
        generate(azure(start_s=10**6), seed=0, max_context=32_768)

"""Reading a server's settings (recorded vLLM /metrics text, a fake server, `llmsim serve`),
prompts unique per request and run, and tokens counted from coalesced stream chunks."""

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, StreamingResponse
from test_bench import ServerThread, scenario_data

from calibration.measure.bench import bench, chunking_notes, flag_workload
from calibration.measure.loadgen import Target, token_times_of_chunks, tokens_per_chunk
from calibration.measure.prompts import prompt_ids, text_prompt, token_prompt
from calibration.measure.server_info import ServerConfig, config_from_metrics, hit_rate, prefix_counters
from calibration.validation.server_match import settings_from_server
from simulator.scenario import parse_scenario
from simulator.workload import Request, generate

VLLM_METRICS = (Path(__file__).parent / "data" / "vllm_cpu_metrics.txt").read_text()
MODELS = {"object": "list", "data": [{"id": "llama-100m", "object": "model", "max_model_len": 2048}]}


def test_reads_the_cache_config_of_a_recorded_vllm_cpu_server():
    assert config_from_metrics(VLLM_METRICS) == {"block_size": 128, "num_blocks": 512, "enable_prefix_caching": True}
    assert prefix_counters(VLLM_METRICS) == (23148.0, 17280.0)  # the _total samples, not _created
    config = ServerConfig.of(VLLM_METRICS, MODELS)
    assert config.settings["max_model_len"] == 2048
    assert config.unreadable == ["max_num_seqs", "max_num_batched_tokens"]  # vLLM does not expose them


def test_older_counter_names_and_missing_pieces():
    old = "vllm:gpu_prefix_cache_queries_total 10\nvllm:gpu_prefix_cache_hits_total 4\n"
    assert prefix_counters(old) == (10.0, 4.0)
    assert prefix_counters("vllm:prefix_cache_queries_total 3\n") is None
    assert hit_rate((10, 4), (30, 9)) == 0.25 and hit_rate((10, 4), (10, 4)) is None and hit_rate(None, (1, 1)) is None
    nothing = ServerConfig.of(None, None, ["GET /metrics: 404"])
    assert nothing.settings == {} and len(nothing.unreadable) == 6 and nothing.lines()[-1].startswith("note:")


def test_the_simulated_side_takes_the_servers_settings_and_names_what_it_assumed():
    scen = parse_scenario(scenario_data())
    settings, warnings = settings_from_server(scen, ServerConfig.of(VLLM_METRICS, MODELS))
    assert (settings["num_blocks"], settings["block_size"], settings["max_model_len"]) == (512, 128, 2048)
    assert settings["scheduler"]["block_size"] == 128 and settings["scheduler"]["enable_prefix_caching"] is True
    assert [w.split(":")[0] for w in warnings] == ["max_num_seqs", "max_num_batched_tokens"]
    assert all("not readable from the server; assumed" in w for w in warnings)
    # --num-blocks wins, and a disagreement is said
    settings, warnings = settings_from_server(scen, ServerConfig.of(VLLM_METRICS, MODELS), num_blocks=100)
    assert settings["num_blocks"] == 100 and any("the server reports 512" in w for w in warnings)


def request(i, n=64, hashes=None):
    return Request(request_id=i, arrival=0.0, prompt_tokens=n, output_tokens=4, block_hashes=hashes)


def test_prompts_are_unique_per_request_and_per_run_and_share_only_declared_blocks():
    a, b = request(0), request(1)
    assert token_prompt(a, 3, run=5) == token_prompt(a, 3, run=5)  # a run key repeats a run exactly
    assert token_prompt(a, 3, run=5)[:16] != token_prompt(b, 3, run=5)[:16]  # no shared first block
    assert token_prompt(a, 3, run=5)[:16] != token_prompt(a, 3, run=6)[:16]  # nor across runs
    shared = [request(i, n=64, hashes=[7, 8, 100 + i]) for i in range(2)]  # 2 blocks of 16 declared shared
    x, y = (prompt_ids(r, 3, run=5, hash_block_tokens=16) for r in shared)
    assert (x[:32] == y[:32]).all() and (x[32:48] != y[32:48]).any() and (x[48:] != y[48:]).any()
    other_run = prompt_ids(shared[0], 3, run=6, hash_block_tokens=16)
    assert (other_run[:16] != x[:16]).any()  # the declared blocks are the run's own
    assert len(text_prompt(a, 3, run=5).split()) == 64


def test_coalesced_chunks_are_counted_as_their_tokens():
    times = [0.10, 0.12, 0.20, 0.21]
    assert tokens_per_chunk(times, [None] * 4, 4).tolist() == [1, 1, 1, 1]
    # the server's usage says 10 tokens: 6 extra spread by the gap before each later chunk
    counts = tokens_per_chunk(times, [None] * 4, 10)
    assert counts.sum() == 10 and counts[0] == 1 and counts[2] == counts.max()
    assert tokens_per_chunk(times, [1, 3, 2, None], 10).tolist() == [1, 3, 2, 4]  # declared counts kept
    t = token_times_of_chunks([1.0, 2.0], np.array([1, 4]))
    assert t.tolist() == [1.0, 1.25, 1.5, 1.75, 2.0]  # ITL per token = a chunk's gap / its tokens


def coalescing_app(chunk: int = 3) -> FastAPI:
    """A fake server that streams `chunk` tokens per chunk and has vLLM's /metrics."""
    app = FastAPI()
    app.state.lookups = [23148.0, 17280.0]
    app.state.prompts = []

    @app.get("/v1/models")
    async def models():
        return MODELS

    @app.get("/metrics")
    async def metrics():
        queries, hits = app.state.lookups
        return PlainTextResponse(VLLM_METRICS.replace("} 23148.0\n# HELP vllm:prefix_cache_queries_created",
                                                      f"}} {queries}\n# HELP vllm:prefix_cache_queries_created")
                                 .replace("} 17280.0", f"}} {hits}"))  # fmt: skip

    @app.post("/v1/completions")
    async def completions(body: dict):
        n_out, n_prompt = body["max_tokens"], len(body["prompt"])
        app.state.prompts.append(body["prompt"])
        app.state.lookups[0] += n_prompt
        app.state.lookups[1] += n_prompt / 2

        async def events():
            sent = 0
            while sent < n_out:
                await asyncio.sleep(0.01)
                k = min(chunk if sent else 1, n_out - sent)
                sent += k
                text = "".join(f" t{sent - k + j}" for j in range(k))
                yield "data: " + json.dumps({"choices": [{"index": 0, "text": text}]}) + "\n\n"
            usage = {"prompt_tokens": n_prompt, "completion_tokens": n_out}
            yield "data: " + json.dumps({"choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def test_bench_reads_the_server_counts_usage_tokens_and_explains_coalescing():
    workload = generate(flag_workload(rate=40, num_requests=4, prompt_tokens=20, output_tokens=7), seed=0,
                        max_context=4096)
    with ServerThread(coalescing_app()) as server:
        run = bench(Target(server.url), workload, progress=False)
    info = run.results.info
    assert run.server.settings["num_blocks"] == 512 and info["server_config"]["unreadable"] == ["max_num_seqs",
                                                                                                 "max_num_batched_tokens"]
    assert info["server_prefix_cache_hit_rate"] == pytest.approx(0.5)  # 10 of 20 tokens per request
    assert (run.results.requests.output_tokens == 7).all() and (run.client.chunks == 3).all()  # 1 + 3 + 3
    assert info["short_outputs"] == 0 and info["multi_token_chunks"] == 4
    assert info["itl_per_chunk_s"]["count"] == 8
    notes = chunking_notes(info)
    assert len(notes) == 1 and "coalesces tokens" in notes[0] and "ignore_eos" not in notes[0]


def test_validate_url_simulates_with_what_the_server_reports(capsys):
    from calibration.validation.validate import setting_lines, validate

    data = scenario_data(rate=40.0, n=6)
    with ServerThread(coalescing_app(chunk=1)) as server:
        result = validate(parse_scenario(data), url=server.url, progress=False)
    s = result.settings
    assert (s["num_blocks"], s["block_size"], s["max_model_len"]) == (512, 128, 2048)
    assert s["assumed"] == ["max_num_seqs", "max_num_batched_tokens"]
    lines = setting_lines(result)
    assert "512 blocks x 128 tokens, prefix caching on" in lines[0]
    assert lines[1] == "read from the server: block_size 128, num_blocks 512, enable_prefix_caching True, max_model_len 2048"
    assert sum(line.startswith("warning: max_num_") for line in lines) == 2
    assert lines[-1].startswith("prefix cache hit rate") and "server 50.0%, simulated 0.0%" in lines[-1]


def test_validate_noise_floor_measures_the_same_requests_twice_with_fresh_prompts(tmp_path, capsys):
    import yaml

    from calibration.validation.validate import validate
    from simulator.cli import main

    data = scenario_data(rate=40.0, n=5)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with ServerThread(coalescing_app(chunk=1)) as server:
        result = validate(parse_scenario(data), url=server.url, progress=False, noise_floor=True)
        prompts = list(server.app.state.prompts)
        code = main(["validate", str(path), "--url", server.url, "--noise-floor", "--out", str(tmp_path / "cli")])
    printed = capsys.readouterr().out
    assert code in (0, 1) and "noise floor: the " in printed and "warning: max_num_seqs" in printed
    first, second = result.measured.requests, result.repeat.requests
    assert len(first) == len(second) == 5 and (first.prompt_tokens.values == second.prompt_tokens.values).all()
    runs = [p for p in prompts if len(p) > 8]  # the probes are 8 tokens
    assert len(runs) == 10 and not {tuple(p) for p in runs[:5]} & {tuple(p) for p in runs[5:]}
    table = result.comparison.table
    assert {"real_vs_real", "limit", "limit_set_by"} <= set(table.columns)
    assert set(table["limit_set_by"].dropna()) <= {"tolerance", "noise floor"}
    out = result.save(tmp_path / "v")
    assert (out / "measured_repeat" / "requests.csv").is_file()
    assert json.loads((out / "validation.json").read_text())["noise_floor"] is True


def test_a_scenario_whose_memory_cannot_hold_the_model_still_takes_the_servers_blocks():
    data = scenario_data()
    data["hardware"] = {"name": "tiny", "memory_gib": 0.01, "memory_bandwidth_gbps": 10, "tflops": {"fp16": 1},
                        "interconnect_gbps": 1}
    scen = parse_scenario(data)
    settings, _ = settings_from_server(scen, ServerConfig.of(VLLM_METRICS, MODELS))
    assert settings["num_blocks"] == 512
    from simulator.common.errors import ConfigError

    with pytest.raises(ConfigError):  # nothing says how many blocks there are
        settings_from_server(scen, ServerConfig.of(None, MODELS))

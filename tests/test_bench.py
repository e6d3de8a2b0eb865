"""`llmsim bench` against a fake OpenAI-compatible streaming server with known delays and failures."""

import asyncio
import json
import socket
import threading
import time

import numpy as np
import pandas as pd
import pytest
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from calibration.measure.bench import bench, bench_scenario_workload, flag_workload
from calibration.measure.loadgen import Target
from calibration.measure.prompts import text_prompt, token_prompt
from simulator.cli import main
from simulator.common.errors import ConfigError
from simulator.scenario import parse_scenario
from simulator.workload import generate

TTFT_S = 0.06  # the fake's delay before the first token
ITL_S = 0.025  # and between tokens
FAIL_OUTPUT = 7  # requests asking for this many tokens get HTTP 500
HANG_PROMPT = 13  # requests with this prompt length never answer
BROKEN_PROMPT = 14  # and these get a malformed chunk after their first token


def fake_app(accept_token_ids: bool = True) -> FastAPI:
    app = FastAPI()
    app.state.bodies = []

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}

    async def answer(body: dict, chat: bool):
        app.state.bodies.append(body)
        prompt = body["messages"][0]["content"] if chat else body["prompt"]
        if isinstance(prompt, list) and not accept_token_ids:
            return JSONResponse({"error": {"message": "prompt must be a string"}}, status_code=400)
        n_prompt = len(prompt) if isinstance(prompt, list) else len(prompt.split())
        n_out = body["max_tokens"]
        if n_out == FAIL_OUTPUT:
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)

        async def events():
            if n_prompt == HANG_PROMPT:
                await asyncio.sleep(3600)
            if chat:
                yield "data: " + json.dumps({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}) + "\n\n"
            await asyncio.sleep(TTFT_S)
            for i in range(n_out):
                if i:
                    await asyncio.sleep(ITL_S)
                if i == 1 and n_prompt == BROKEN_PROMPT:
                    yield "data: {not json\n\n"
                reason = "length" if i == n_out - 1 else None
                choice = {"index": 0, "delta": {"content": f" t{i}"}} if chat else {"index": 0, "text": f" t{i}"}
                yield "data: " + json.dumps({"choices": [choice | {"finish_reason": reason}]}) + "\n\n"
            usage = {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out}
            yield "data: " + json.dumps({"choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await answer(await request.json(), chat=False)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await answer(await request.json(), chat=True)

    return app


class ServerThread:
    """A uvicorn server on a free local port, in a background thread."""

    def __init__(self, app: FastAPI):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error",
                                timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.app = app

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def fake():
    with ServerThread(fake_app()) as server:
        yield server


def scenario_data(rate=25.0, n=40):
    return {
        "name": "fake",
        "seed": 3,
        "model": "llama-20m",
        "hardware": "a100-80gb",
        "workload": {
            "arrival": {"process": "poisson", "rate": rate},
            "num_requests": n,
            "classes": [{
                "name": "c",
                "prompt_tokens": {"dist": "uniform", "low": 5, "high": 30},
                "output_tokens": {"dist": "uniform", "low": 3, "high": 12},
                "slo": {"ttft_ms": 1000},
            }],
        },
    }


def scenario(**kw):
    return parse_scenario(scenario_data(**kw))


def test_measures_the_servers_delays_counts_errors_and_keeps_the_schedule(fake, tmp_path):
    sc = scenario()
    workload = bench_scenario_workload(sc, seed=3, max_requests=None)
    wl = workload.to_frame()
    fails = int((wl.output_tokens == FAIL_OUTPUT).sum())
    hangs = int(((wl.prompt_tokens == HANG_PROMPT) & (wl.output_tokens != FAIL_OUTPUT)).sum())
    broken = int(((wl.prompt_tokens == BROKEN_PROMPT) & (wl.output_tokens != FAIL_OUTPUT)).sum())
    assert fails and hangs and broken, "the seed must exercise every failure kind"

    run = bench(Target(fake.url, timeout_s=4.0), workload, seed=3, progress=False)
    out = run.save(tmp_path / "bench")
    summary = json.loads((out / "summary.json").read_text())
    requests = pd.read_csv(out / "requests.csv")
    client = pd.read_csv(out / "client.csv")

    # errors are counted, not fatal: 500s and timeouts
    assert summary["counts"]["errors"] == fails + hangs + broken
    assert summary["counts"]["completed"] == len(wl) - fails - hangs - broken
    assert client.error.fillna("").str.startswith("HTTP 500").sum() == fails
    assert client.error.fillna("").str.startswith("timeout").sum() == hangs
    assert run.results.info["errors"] == {"HTTP 500": fails, "timeout": hangs, "JSONDecodeError": broken}

    # the client measures at least the fake's delays (bounds only: a busy machine adds to them)
    done = requests[requests.status == "ok"]
    assert (done.ttft >= TTFT_S).all()
    assert (done.e2e >= TTFT_S + (done.output_tokens - 1) * ITL_S).all()
    assert summary["latency_s"]["itl"]["p50"] > 0

    # lengths are honoured and recorded, and the same seed gives the same schedule as the simulator
    ok = requests[requests.status == "ok"].set_index("id")
    assert (ok.output_tokens == wl.set_index("request_id").output_tokens.loc[ok.index]).all()
    assert (ok.prompt_tokens == wl.set_index("request_id").prompt_tokens.loc[ok.index]).all()
    same = generate(sc.workload, seed=3, max_context=sc.max_model_len()).to_frame()
    np.testing.assert_allclose(client.scheduled, same.arrival, atol=1e-6)
    assert (client.sent >= client.scheduled - 1e-6).all()
    assert (out / "plots" / "ttft_cdf.png").is_file()

    # the body asked for exact lengths as token ids
    body = next(b for b in fake.app.state.bodies if b["max_tokens"] == wl.output_tokens[0])
    assert body["ignore_eos"] is True and body["stream"] is True
    assert all(isinstance(t, int) for t in body["prompt"])


def test_closed_loop_keeps_the_concurrency(fake):
    workload = generate(flag_workload(rate=None, num_requests=12, prompt_tokens=20, output_tokens=5),
                        seed=0, max_context=4096)
    run = bench(Target(fake.url), workload, concurrency=3, progress=False)
    client = run.client.sort_values("sent")
    assert run.results.summary.completed == 12
    # with 3 clients, request k+3 leaves only after request k ended
    finish = run.results.requests.set_index("id").finish
    sent = client.set_index("id").sent
    order = client.id.to_numpy()
    assert all(sent[order[k + 3]] >= finish.sort_values().iloc[k] - 1e-6 for k in range(len(order) - 3))
    assert run.results.info["mode"] == "closed loop, concurrency 3"


def test_falls_back_to_text_prompts_and_works_with_chat():
    with ServerThread(fake_app(accept_token_ids=False)) as server:
        workload = generate(flag_workload(rate=50, num_requests=4, prompt_tokens=9, output_tokens=4),
                            seed=0, max_context=4096)
        for endpoint in ("completions", "chat"):
            run = bench(Target(server.url, endpoint=endpoint), workload, progress=False)
            assert run.results.info["prompt_format"] == "text"
            assert run.results.summary.completed == 4
            assert (run.results.requests.output_tokens == 4).all()  # the chat role chunk is no token
            assert (run.client.reported_prompt_tokens == 9).all()


def test_prompts_are_deterministic_and_of_the_requested_length():
    wl = generate(flag_workload(rate=1, num_requests=3, prompt_tokens=50, output_tokens=5), seed=1,
                  max_context=4096)
    a, b = wl.requests[0], wl.requests[1]
    assert token_prompt(a, 7) == token_prompt(a, 7) and token_prompt(a, 7) != token_prompt(b, 7)
    assert len(token_prompt(a, 7)) == 50 and len(text_prompt(a, 7).split()) == 50


def test_cli_writes_results_and_refuses_bad_input(fake, tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario_data()))
    out = tmp_path / "res"
    code = main(["bench", "--url", fake.url, "--scenario", str(path), "--max-requests", "5",
                 "--set", "workload.arrival.rate=50", "--timeout", "2", "--out", str(out)])
    assert code == 0
    assert len(pd.read_csv(out / "requests.csv")) == 5
    printed = capsys.readouterr().out
    assert "results:" in printed and "/metrics could not be read" in printed  # the fake has no /metrics
    assert "not exposed by the server: block_size, num_blocks" in printed

    code = main(["bench", "--url", fake.url, "--num-requests", "3", "--prompt-tokens", "10",
                 "--output-tokens", "3", "--rate", "20", "--out", str(tmp_path / "flags")])
    assert code == 0
    assert json.loads((tmp_path / "flags" / "summary.json").read_text())["counts"]["completed"] == 3

    assert main(["bench", "--url", fake.url, "--rate", "-1"]) == 2
    assert main(["bench", "--url", "http://127.0.0.1:9", "--num-requests", "1"]) == 2
    err = capsys.readouterr().err
    assert "--rate must be positive" in err and "cannot connect" in err


def test_flag_workload_rejects_nonsense():
    with pytest.raises(ConfigError, match="prompt_tokens"):
        flag_workload(rate=1, num_requests=3, prompt_tokens=0, output_tokens=5)


def test_end_to_end_against_llmsim_serve(tmp_path):
    torch = pytest.importorskip("torch")
    from backend.serve_command import build_server
    from backend.server import create_app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the engine thread shares the machine with the client
    try:
        server = build_server("llama-20m", device="cpu", kv_cache_gb=0.05, scheduler={"max_num_seqs": 8})
        with ServerThread(create_app(server)) as live:
            workload = generate(flag_workload(rate=20, num_requests=6, prompt_tokens=24, output_tokens=6),
                                seed=0, max_context=2048)
            run = bench(Target(live.url, timeout_s=120), workload, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert run.results.info["prompt_format"] == "tokens" and run.results.info["model"] == "llama-20m"
    assert run.results.summary.completed == 6 and run.results.summary.errors == 0
    requests = run.results.requests
    assert (requests.output_tokens == 6).all()  # ignore_eos honoured, every token streamed once
    read = run.server.settings  # llmsim serve exposes every setting the simulated side needs
    assert run.server.unreadable == [] and read["max_num_seqs"] == 8 and read["max_model_len"] == 2048
    assert read["block_size"] == 16 and read["enable_prefix_caching"] is True and read["num_blocks"] > 0
    assert run.results.info["server_prefix_cache_hit_rate"] == 0.0  # unique prompts: no hit
    assert (run.client.reported_output_tokens == 6).all() and (run.client.reported_prompt_tokens == 24).all()
    assert (requests.ttft > 0).all() and (requests.tpot > 0).all()
    run.save(tmp_path / "serve")
    assert (tmp_path / "serve" / "summary.json").is_file()


def test_validate_against_a_running_server_uses_the_actual_send_times(fake, tmp_path):
    from calibration.validation.validate import validate

    data = scenario_data(rate=40.0, n=10)
    data["workload"]["classes"][0]["prompt_tokens"] = {"dist": "constant", "value": 20}
    data["workload"]["classes"][0]["output_tokens"] = {"dist": "constant", "value": 5}
    result = validate(parse_scenario(data), url=fake.url, progress=False)
    assert result.measured.summary.completed == 10 == result.simulated.summary.completed
    sent = sorted(r.arrival for r in result.measured.records)
    assert sent[0] == 0.0 and [r.arrival for r in result.workload.requests] == pytest.approx(sent)
    assert result.settings["url"] == fake.url and result.steps is None
    assert (result.save(tmp_path / "v") / "comparison.csv").is_file()

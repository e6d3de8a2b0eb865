"""The OpenAI-compatible server: official client, raw HTTP errors, disconnects and concurrency."""

import asyncio
import json
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import torch
import uvicorn
from openai import OpenAI

from backend.engine import Engine
from backend.runner import ModelRunner
from backend.server import Server, create_app
from backend.tokenizer import ByteTokenizer
from simulator.cli import build_parser, main
from simulator.scheduling import SchedulerConfig
from simulator.spec import ModelSpec

MODEL = "llama-20m"
KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tests share a small machine with the server's engine thread: one intra-op thread each.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_server(api_key=KEY, max_waiting=None, **config) -> Server:
    runner = ModelRunner(MODEL, device="cpu", kv_cache_gb=0.1, seed=0)
    return Server(Engine(runner, SchedulerConfig(**config)), MODEL, api_key=api_key, max_waiting=max_waiting)


@contextmanager
def serving(server: Server):
    """Run the app on a free port in a background thread; always stopped on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(create_app(server), log_level="warning"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not uv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(30)
        sock.close()
        assert not server.worker.is_alive


def wait_until(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(scope="module")
def server():
    return make_server()


@pytest.fixture(scope="module")
def url(server):
    with serving(server) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference():
    """Greedy outputs of the same model (same seed, same weights) run by a plain engine."""
    engine = Engine(ModelRunner(MODEL, device="cpu", num_blocks=64, seed=0))

    def generate(prompt_ids, max_tokens):
        return engine.generate([prompt_ids], max_tokens, eos_token_id=2)[0]

    return generate


def error_of(response, status, param="-"):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param != "-":
        assert error["param"] == param
    return error


def test_completion_matches_the_engine_and_counts_usage(client, reference):
    tok = ByteTokenizer(8192)
    prompt = [5, 900, 77, 4000, 12]
    resp = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    expected = reference(prompt, 6)
    assert resp.choices[0].text == tok.decode(expected)
    assert resp.usage.prompt_tokens == 5 and resp.usage.completion_tokens == len(expected) == 6
    assert resp.choices[0].finish_reason == "length"
    text = client.completions.create(model=MODEL, prompt="Hello", max_tokens=3, temperature=0)
    assert text.usage.prompt_tokens == len("Hello") + 1  # BOS + bytes


def test_streamed_completion_equals_the_whole_one(client):
    whole = client.completions.create(model=MODEL, prompt="stream me", max_tokens=8, temperature=0, extra_body={"ignore_eos": True})
    chunks = list(client.completions.create(model=MODEL, prompt="stream me", max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))  # fmt: skip
    tokens = [c for c in chunks if c.choices and c.choices[0].finish_reason is None]
    assert len(tokens) == 8
    assert "".join(c.choices[0].text for c in tokens) == whole.choices[0].text
    closing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(closing) == 1 and closing[0].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_chat_whole_and_streamed(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5, temperature=0, extra_body={"ignore_eos": True})
    assert whole.choices[0].message.role == "assistant" and whole.usage.completion_tokens == 5
    tok = ByteTokenizer(8192)
    assert whole.usage.prompt_tokens == len(tok.encode_chat([(m["role"], m["content"]) for m in messages]))
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))  # fmt: skip
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content is not None  # no role-only opening chunk
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].finish_reason is None]
    assert len(contents) == 5 and all(c is not None for c in contents)
    assert "".join(contents) == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 5


def stream_lines(url, body, headers=AUTH):
    with httpx.stream("POST", url + "/v1/completions", json=body, headers=headers, timeout=60) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_seeded_sampling_repeats_and_the_stream_ends_with_done():
    # A vocabulary of little more than the bytes, so that sampled tokens show as distinct text.
    spec = ModelSpec("bytes", num_layers=1, hidden_size=32, num_heads=2, num_kv_heads=1,
                     intermediate_size=64, vocab_size=300, max_context=128)  # fmt: skip
    server = Server(Engine(ModelRunner(spec, device="cpu", num_blocks=64, seed=1)), "bytes")
    with serving(server) as base:
        body = {"prompt": "abc", "max_tokens": 12, "temperature": 1.0, "seed": 7, "stream": True, "ignore_eos": True}
        texts = []
        for seed in (7, 7, 8):
            chunks = stream_lines(base, {**body, "seed": seed}, headers={})
            assert len(chunks) == 13 and chunks[-1]["choices"][0]["finish_reason"] == "length"
            texts.append("".join(c["choices"][0]["text"] for c in chunks))
    assert texts[0] == texts[1] != texts[2]


def test_bad_requests_get_openai_errors(url):
    def post(path, headers=AUTH, **kw):
        return httpx.post(url + path, headers=headers, timeout=30, **kw)

    malformed = b'{"prompt": "x", "max_tokens": '
    error = error_of(post("/v1/completions", content=malformed, headers={**AUTH, "content-type": "application/json"}), 400)
    assert error["type"] == "invalid_request_error" and "not valid JSON" in error["message"]
    assert "Content-Type" in error_of(post("/v1/completions", content=b'{"prompt": "x"}'), 400)["message"]
    error_of(post("/v1/completions", json={"prompt": "x", "max_tokens": 0}), 400, "max_tokens")
    error_of(post("/v1/completions", json={"prompt": "x", "max_tokens": "many"}), 400, "max_tokens")
    error_of(post("/v1/completions", json={"prompt": 5}), 400)
    error_of(post("/v1/completions", json={}), 400, "prompt")
    error_of(post("/v1/completions", json={"prompt": "x", "temperature": -1}), 400, "temperature")
    error_of(post("/v1/completions", json={"prompt": [1, 99999]}), 400, "prompt")
    error_of(post("/v1/completions", json={"prompt": ["a", "b"]}), 400, "prompt")
    error_of(post("/v1/completions", json={"prompt": "x", "stop": ["\n"]}), 400, "stop")
    too_long = error_of(post("/v1/completions", json={"prompt": [7] * 2100, "max_tokens": 1}), 400, "prompt")
    assert too_long["code"] == "context_length_exceeded" and "2048" in too_long["message"]
    error_of(post("/v1/completions", json={"prompt": [7] * 2000, "max_tokens": 100}), 400, "max_tokens")
    error_of(post("/v1/chat/completions", json={"messages": "hello"}), 400, "messages")
    error_of(post("/v1/chat/completions", json={"messages": [{"role": "robot", "content": "x"}]}), 400)
    assert error_of(post("/v1/completions", json={"model": "gpt-9", "prompt": "x"}), 404, "model")["code"] == "model_not_found"
    # The server is still serving.
    assert post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200


def test_api_key_is_required_on_v1_only(url):
    assert error_of(httpx.get(url + "/v1/models", timeout=30), 401)["code"] == "invalid_api_key"
    assert httpx.post(url + "/v1/completions", json={"prompt": "x"}, headers={"Authorization": "Bearer nope"}).status_code == 401
    models = httpx.get(url + "/v1/models", headers=AUTH, timeout=30).json()
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert httpx.get(url + "/health", timeout=30).json() == {"status": "ok"}


def slow_down(monkeypatch, runner, seconds=0.01):
    """Make every step take at least `seconds`, so a long request cannot finish during a test."""
    real = runner.execute

    def slow(step, sampling=None):
        time.sleep(seconds)
        return real(step, sampling)

    monkeypatch.setattr(runner, "execute", slow)


def test_disconnect_mid_stream_aborts_and_frees_blocks(url, server, monkeypatch):
    engine = server.engine
    slow_down(monkeypatch, engine.runner)
    body = {"prompt": "keep going", "max_tokens": 1500, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, headers=AUTH, timeout=60) as resp:
        lines = resp.iter_lines()
        received = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in received)
        assert engine.blocks.num_free < engine.runner.num_blocks  # the request holds KV blocks
    assert wait_until(lambda: engine.blocks.num_free == engine.runner.num_blocks and not engine.has_work)
    metrics = httpx.get(url + "/metrics", timeout=30).text
    assert f'llmsim_request_success_total{{finished_reason="abort",model_name="{MODEL}"}} 1.0' in metrics


def test_metrics_report_latencies_and_load(url):
    httpx.post(url + "/v1/completions", json={"prompt": "m", "max_tokens": 3}, headers=AUTH, timeout=60)
    text = httpx.get(url + "/metrics", timeout=30).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    label = f'{{model_name="{MODEL}"}}'
    for metric in ("time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds"):
        assert values[f"llmsim_{metric}_count{label}"] > 0
    for gauge in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_ratio"):
        assert f"llmsim_{gauge}{label}" in values


def test_many_concurrent_streams_all_complete(url):
    async def one(client, i):
        body = {"prompt": [100 + i, 200 + i, 300 + i] * (1 + i % 5), "max_tokens": 4, "stream": True,
                "ignore_eos": True, "temperature": 0}  # fmt: skip
        async with client.stream("POST", url + "/v1/completions", json=body, headers=AUTH) as resp:
            assert resp.status_code == 200
            lines = [line async for line in resp.aiter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        return sum(1 for line in lines[:-1] if json.loads(line[6:])["choices"][0]["finish_reason"] is None)

    async def all_of_them():
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            return await asyncio.wait_for(asyncio.gather(*(one(client, i) for i in range(200))), 240)

    assert asyncio.run(all_of_them()) == [4] * 200


def test_a_full_waiting_queue_answers_429(monkeypatch):
    server = make_server(api_key=None, max_waiting=1, max_num_seqs=1)
    slow_down(monkeypatch, server.engine.runner)
    with serving(server) as base:
        long = {"prompt": "hold the seat", "max_tokens": 1500, "stream": True, "ignore_eos": True}
        with httpx.stream("POST", base + "/v1/completions", json=long, timeout=60) as resp:
            lines = resp.iter_lines()  # kept: dropping the iterator would close the stream
            next(lines)  # the long request is running and holds the only seat
            queued = threading.Thread(target=httpx.post, args=(base + "/v1/completions",),
                                      kwargs={"json": {"prompt": "wait", "max_tokens": 2}, "timeout": 60})  # fmt: skip
            queued.start()
            assert wait_until(lambda: server.worker.num_waiting == 1)
            refused = httpx.post(base + "/v1/completions", json={"prompt": "no room", "max_tokens": 2}, timeout=30)
            assert error_of(refused, 429)["type"] == "rate_limit_error"
        queued.join(60)  # the disconnect freed the seat, so the queued request ran
        assert wait_until(lambda: server.worker.num_waiting == 0 and not server.engine.has_work)


def test_an_engine_fault_fails_the_request_not_the_server(url, server, monkeypatch):
    runner = server.engine.runner
    # requests of earlier tests (a client that hung up mid-stream) must not meet the fault instead
    assert wait_until(lambda: not server.engine.has_work)
    real = runner.execute
    calls = {"n": 0}

    def failing_once(step, sampling=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated device fault")
        return real(step, sampling)

    monkeypatch.setattr(runner, "execute", failing_once)
    broken = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 3}, headers=AUTH, timeout=60)
    assert error_of(broken, 500)["type"] == "server_error" and "simulated device fault" in broken.json()["error"]["message"]
    ok = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 3}, headers=AUTH, timeout=60)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
    assert wait_until(lambda: server.engine.blocks.num_free == runner.num_blocks)


def test_serve_command_line(capsys):
    args = build_parser().parse_args(["serve", "--model", MODEL, "--port", "9001", "--quantization", "int8",
                                      "--max-num-seqs", "8", "--max-waiting", "4", "--api-key", "k"])  # fmt: skip
    assert (args.model, args.port, args.quantization, args.max_num_seqs, args.max_waiting) == (MODEL, 9001, "int8", 8, 4)
    assert main(["serve", "--model", "llama-nope"]) == 2
    assert "llama-nope" in capsys.readouterr().err
    assert main(["serve", "--model", MODEL, "--max-num-seqs", "0"]) == 2
    assert "--max-num-seqs" in capsys.readouterr().err

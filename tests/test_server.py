"""The OpenAI-compatible server: official client, raw HTTP errors, disconnects, timing, shutdown."""

import asyncio
import itertools
import json
import random
import signal
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import openai
import pytest
import torch
from openai import OpenAI
from tokenizers import Tokenizer

import backend.server as server_module
from backend import char_tokenizer
from backend.engine import Engine
from backend.runner import ModelRunner
from backend.server import Server, UvicornServer, make_uvicorn
from backend.server_metrics import LATENCY_BUCKETS
from backend.tokenizer import CharTokenizer
from simulator.cli import build_parser, main
from simulator.scheduling import SchedulerConfig
from simulator.spec import ModelSpec

MODEL = "llama-20m"
KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
LONG = 1900  # output tokens no request can produce within a test's deadlines once steps are slowed down


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tests share a small machine with the server's engine thread: one intra-op thread each.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_server(api_key=KEY, max_waiting=None, drain_timeout=30.0, **config) -> Server:
    runner = ModelRunner(MODEL, device="cpu", kv_cache_gb=0.1, seed=0)
    return Server(Engine(runner, SchedulerConfig(**config)), MODEL, api_key=api_key, max_waiting=max_waiting,
                  drain_timeout=drain_timeout)  # fmt: skip


@dataclass
class Live:
    url: str
    port: int
    uv: UvicornServer
    thread: threading.Thread


@contextmanager
def serving(server: Server):
    """Run the app on a free port in a background thread; always stopped on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = make_uvicorn(server, log_level="warning")
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not uv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        yield Live(f"http://127.0.0.1:{port}", port, uv, thread)
    finally:
        uv.should_exit = True
        thread.join(60)
        sock.close()
        assert not server.worker.is_alive


def wait_until(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def idle(server: Server) -> bool:
    engine = server.engine
    return engine.blocks.num_free == engine.runner.num_blocks and not engine.has_work and server.worker.num_waiting == 0


def metric_values(url: str, headers=AUTH) -> dict[str, float]:
    values = {}
    for line in httpx.get(url + "/metrics", headers=headers, timeout=30).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def gauges(url: str) -> tuple[float, float, float]:
    values = metric_values(url)
    label = f'{{model_name="{MODEL}"}}'
    return tuple(values[f"llmsim_{g}{label}"] for g in ("num_requests_running", "num_requests_waiting",
                                                         "kv_cache_usage_ratio"))  # fmt: skip


def aborted(url: str) -> float:
    return metric_values(url).get(f'llmsim_request_success_total{{finished_reason="abort",model_name="{MODEL}"}}', 0)


@pytest.fixture(scope="module")
def server():
    return make_server()


@pytest.fixture(scope="module")
def live(server):
    with serving(server) as running:
        yield running


@pytest.fixture(scope="module")
def url(live):
    return live.url


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
        assert error["param"] == param, error
    return error


def slow_down(monkeypatch, runner, seconds=0.02):
    """Make every step take at least `seconds`, so a long request cannot finish during a test."""
    real = runner.execute

    def slow(step, sampling=None):
        time.sleep(seconds)
        return real(step, sampling)

    monkeypatch.setattr(runner, "execute", slow)


# --- the API as clients use it -------------------------------------------------------------------


def test_completion_matches_the_engine_and_counts_usage(client, reference):
    tok = CharTokenizer(8192)
    prompt = [5, 900, 77, 4000, 12]
    resp = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
    expected = reference(prompt, 6)
    assert resp.choices[0].text == tok.decode(expected)
    assert resp.usage.prompt_tokens == 5 and resp.usage.completion_tokens == len(expected) == 6
    assert resp.choices[0].finish_reason == "length"
    text = client.completions.create(model=MODEL, prompt="Hello", max_tokens=3, temperature=0)
    assert text.usage.prompt_tokens == len("Hello") + 1  # BOS + one token per character


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
    tok = CharTokenizer(8192)
    assert whole.usage.prompt_tokens == len(tok.encode_chat([(m["role"], m["content"]) for m in messages]))
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5, temperature=0, stream=True,
                                                 stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))  # fmt: skip
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content is not None  # no role-only opening chunk
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].finish_reason is None]
    assert len(contents) == 5 and all(c is not None for c in contents)
    assert "".join(contents) == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 5


def test_output_re_tokenized_by_a_client_counts_the_generated_tokens(client, tmp_path):
    # Sampled at temperature 1 from random weights: ids from all over the vocabulary.
    folder = char_tokenizer.export(8192, 2048, tmp_path / "tok")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Go"}],
                                                 max_tokens=64, temperature=1.0, seed=3, stream=True,
                                                 stream_options={"include_usage": True},
                                                 extra_body={"ignore_eos": True}))  # fmt: skip
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) == 64 == chunks[-1].usage.completion_tokens
    assert all(len(tok.encode(p, add_special_tokens=False).ids) == 1 for p in pieces)  # one token per chunk
    assert len(tok.encode("".join(pieces), add_special_tokens=False).ids) == 64
    assert any(ord(p[0]) > 0x7F for p in pieces)  # not only ASCII: the test covers the whole vocabulary


def stream_lines(url, body, headers=AUTH, path="/v1/completions"):
    with httpx.stream("POST", url + path, json=body, headers=headers, timeout=60) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_seeded_sampling_repeats_and_the_stream_ends_with_done():
    # A vocabulary of little more than ASCII, so that sampled tokens show as distinct text.
    spec = ModelSpec("small", num_layers=1, hidden_size=32, num_heads=2, num_kv_heads=1,
                     intermediate_size=64, vocab_size=300, max_context=128)  # fmt: skip
    server = Server(Engine(ModelRunner(spec, device="cpu", num_blocks=64, seed=1)), "small")
    with serving(server) as live:
        body = {"prompt": "abc", "max_tokens": 12, "temperature": 1.0, "seed": 7, "stream": True, "ignore_eos": True}
        texts = []
        for seed in (7, 7, 8):
            chunks = stream_lines(live.url, {**body, "seed": seed}, headers={})
            assert len(chunks) == 13 and chunks[-1]["choices"][0]["finish_reason"] == "length"
            texts.append("".join(c["choices"][0]["text"] for c in chunks))
    assert texts[0] == texts[1] != texts[2]


def test_stop_strings_end_the_text_before_them(client, server, url):
    base = client.completions.create(model=MODEL, prompt="Tell me", max_tokens=20, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text  # fmt: skip
    stop = base[6:8]
    cut = base.find(stop)  # the first occurrence (greedy output repeats itself)
    stops_before = metric_values(url).get(f'llmsim_request_success_total{{finished_reason="stop",model_name="{MODEL}"}}', 0)
    # max_tokens well past the stop string: the sequence must end because of it, not of its length
    resp = client.completions.create(model=MODEL, prompt="Tell me", max_tokens=80, temperature=0, stop=[stop, "\x00never"],
                                     extra_body={"ignore_eos": True})  # fmt: skip
    assert resp.choices[0].text == base[:cut] and resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == cut + len(stop)  # the tokens generated up to the stop string
    chunks = list(client.completions.create(model=MODEL, prompt="Tell me", max_tokens=80, temperature=0, stop=stop,
                                            stream=True, extra_body={"ignore_eos": True}))  # fmt: skip
    assert "".join(c.choices[0].text for c in chunks) == base[:cut]
    assert chunks[-1].choices[0].finish_reason == "stop"
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=10,
                                          temperature=0, extra_body={"ignore_eos": True})  # fmt: skip
    word = chat.choices[0].message.content[3:5]
    stopped = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=80,
                                             temperature=0, stop=word, extra_body={"ignore_eos": True})  # fmt: skip
    assert stopped.choices[0].message.content == chat.choices[0].message.content.split(word)[0]
    assert stopped.choices[0].finish_reason == "stop"
    # The engine stopped those sequences when their stop string came, and freed their blocks.
    assert wait_until(lambda: idle(server))
    stops = metric_values(url)[f'llmsim_request_success_total{{finished_reason="stop",model_name="{MODEL}"}}']
    assert stops - stops_before == 3


def test_several_choices(client):
    resp = client.completions.create(model=MODEL, prompt="n", max_tokens=5, n=3, temperature=1.0, seed=11,
                                     extra_body={"ignore_eos": True})  # fmt: skip
    assert sorted(c.index for c in resp.choices) == [0, 1, 2]
    assert resp.usage.completion_tokens == 15 and resp.usage.prompt_tokens == 2
    texts = [c.text for c in sorted(resp.choices, key=lambda c: c.index)]
    assert len(set(texts)) == 3 and all(len(t) == 5 for t in texts)  # each choice samples its own tokens
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "n"}], n=2,
                                                 max_tokens=4, temperature=1.0, seed=11, stream=True,
                                                 stream_options={"include_usage": True},
                                                 extra_body={"ignore_eos": True}))  # fmt: skip
    per_choice = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            per_choice[choice.index] += choice.delta.content or ""
    assert all(len(t) == 4 for t in per_choice.values()) and chunks[-1].usage.completion_tokens == 8
    again = client.completions.create(model=MODEL, prompt="n", max_tokens=5, n=3, temperature=1.0, seed=11,
                                      extra_body={"ignore_eos": True})  # fmt: skip
    assert [c.text for c in sorted(again.choices, key=lambda c: c.index)] == texts


def test_logprobs_of_both_endpoints(client):
    resp = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "p"}], max_tokens=4,
                                          temperature=0, logprobs=True, top_logprobs=3,
                                          extra_body={"ignore_eos": True})  # fmt: skip
    content = resp.choices[0].logprobs.content
    assert "".join(e.token for e in content) == resp.choices[0].message.content and len(content) == 4
    for entry in content:
        assert len(entry.top_logprobs) == 3 and entry.bytes == list(entry.token.encode())
        assert entry.token == entry.top_logprobs[0].token and entry.logprob == entry.top_logprobs[0].logprob  # greedy
        assert entry.logprob <= 0 and sum(2.718281828 ** t.logprob for t in entry.top_logprobs) <= 1
    plain = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "p"}], max_tokens=2)
    assert plain.choices[0].logprobs is None
    whole = client.completions.create(model=MODEL, prompt="q", max_tokens=4, temperature=1.0, seed=2, logprobs=2,
                                      extra_body={"ignore_eos": True})  # fmt: skip
    lp = whole.choices[0].logprobs
    assert "".join(lp.tokens) == whole.choices[0].text and lp.text_offset == [0, 1, 2, 3]
    assert all(token in top and len(top) <= 3 for token, top in zip(lp.tokens, lp.top_logprobs))
    assert all(top[token] == value for token, top, value in zip(lp.tokens, lp.top_logprobs, lp.token_logprobs))
    streamed = list(client.completions.create(model=MODEL, prompt="q", max_tokens=4, temperature=1.0, seed=2,
                                              logprobs=2, stream=True, extra_body={"ignore_eos": True}))  # fmt: skip
    values = [v for c in streamed if c.choices[0].logprobs for v in c.choices[0].logprobs.token_logprobs]
    assert values == lp.token_logprobs


def test_echo_returns_the_prompt_first(client):
    resp = client.completions.create(model=MODEL, prompt="Echo this", max_tokens=3, temperature=0, echo=True,
                                     extra_body={"ignore_eos": True})  # fmt: skip
    text = resp.choices[0].text
    assert text.startswith("Echo this") and len(text) == len("Echo this") + 3
    chunks = list(client.completions.create(model=MODEL, prompt="Echo this", max_tokens=3, temperature=0, echo=True,
                                            stream=True, extra_body={"ignore_eos": True}))  # fmt: skip
    assert "".join(c.choices[0].text for c in chunks) == text


def test_models_and_one_model(client):
    assert [m.id for m in client.models.list().data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")


def test_chat_without_max_tokens_stops_at_the_default(client, monkeypatch):
    monkeypatch.setattr(server_module, "DEFAULT_CHAT_TOKENS", 7)
    resp = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "d"}],
                                          extra_body={"ignore_eos": True})  # fmt: skip
    assert resp.usage.completion_tokens == 7
    near_the_end = [{"role": "user", "content": "x" * (2048 - 30)}]  # 30 - 1 (BOS) - template: 5 tokens of room
    resp = client.chat.completions.create(model=MODEL, messages=near_the_end, extra_body={"ignore_eos": True})
    assert resp.usage.prompt_tokens + resp.usage.completion_tokens == 2048 and resp.usage.completion_tokens < 7


# --- bad requests --------------------------------------------------------------------------------


def test_bad_requests_get_openai_errors(url):
    def post(path, headers=AUTH, **kw):
        return httpx.post(url + path, headers=headers, timeout=30, **kw)

    def raw(path, data: bytes):
        return post(path, content=data, headers={**AUTH, "content-type": "application/json"})

    error = error_of(raw("/v1/completions", b'{"prompt": "x", "max_tokens": '), 400)
    assert error["type"] == "invalid_request_error" and "not valid JSON" in error["message"]
    assert "UTF-8" in error_of(raw("/v1/completions", b'{"prompt": "\xff\xfe"}'), 400)["message"]
    assert "JSON object" in error_of(raw("/v1/completions", b"[1, 2]"), 400)["message"]
    assert "deeply" in error_of(raw("/v1/completions", b'{"prompt": ' + b"[" * 100_000), 400)["message"]
    # Lone surrogates: JSON can spell them, Unicode text cannot hold them.
    assert "surrogate" in error_of(raw("/v1/completions", b'{"prompt": "a\\ud800"}'), 400, "prompt")["message"]
    chat = b'{"messages": [{"role": "user", "content": "\\udfff"}], "stream": true}'
    assert "messages.0.content" in error_of(raw("/v1/chat/completions", chat), 400, "messages")["message"]
    for number in (b"Infinity", b"-Infinity", b"NaN", b"1e999"):
        body = b'{"prompt": "x", "stream": true, "temperature": ' + number + b"}"
        assert "finite" in error_of(raw("/v1/completions", body), 400, "temperature")["message"]
    error_of(post("/v1/completions", json={"prompt": "x", "temperature": 2.5}), 400, "temperature")
    error_of(post("/v1/completions", json={"prompt": "x", "top_p": 0}), 400, "top_p")
    error_of(post("/v1/completions", json={"prompt": "x", "top_p": 1.5}), 400, "top_p")
    error_of(post("/v1/completions", json={"prompt": "x", "max_tokens": 0}), 400, "max_tokens")
    error_of(post("/v1/completions", json={"prompt": "x", "max_tokens": "many"}), 400, "max_tokens")
    error_of(post("/v1/completions", json={"prompt": 5}), 400, "prompt")
    error_of(post("/v1/completions", json={}), 400, "prompt")
    error_of(post("/v1/completions", json={"prompt": [1, 99999]}), 400, "prompt")
    error_of(post("/v1/completions", json={"prompt": ["a", "b"]}), 400, "prompt")
    error_of(post("/v1/completions", json={"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}), 400, "stop")
    error_of(post("/v1/completions", json={"prompt": "x", "stop": [""]}), 400, "stop")
    error_of(post("/v1/completions", json={"prompt": "x", "n": 0}), 400, "n")
    error_of(post("/v1/completions", json={"prompt": "x", "logprobs": 9}), 400, "logprobs")
    error_of(post("/v1/completions", json={"prompt": "x", "echo": True, "logprobs": 1}), 400, "echo")
    error_of(post("/v1/completions", json={"prompt": "x", "best_of": 3}), 400, "best_of")
    too_long = error_of(post("/v1/completions", json={"prompt": [7] * 2100, "max_tokens": 1}), 400, "prompt")
    assert too_long["code"] == "context_length_exceeded" and "2048" in too_long["message"]
    error_of(post("/v1/completions", json={"prompt": [7] * 2000, "max_tokens": 100}), 400, "max_tokens")
    error_of(post("/v1/chat/completions", json={"messages": "hello"}), 400, "messages")
    error_of(post("/v1/chat/completions", json={"messages": [{"role": "robot", "content": "x"}]}), 400, "messages")
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    assert "image_url" in error_of(post("/v1/chat/completions", json={"messages": image}), 400, "messages")["message"]
    error_of(post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
             400, "top_logprobs")  # fmt: skip
    assert error_of(post("/v1/completions", json={"model": "gpt-9", "prompt": "x"}), 404, "model")["code"] == "model_not_found"
    # A body without Content-Type is still read as JSON (curl -d sends form encoding).
    assert post("/v1/completions", content=b'{"prompt": "x", "max_tokens": 1}').status_code == 200
    # The server is still serving.
    assert post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200


def test_unsupported_fields_are_refused_by_name(client):
    messages = [{"role": "user", "content": "x"}]
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    for field, value in [("tools", [tool]), ("response_format", {"type": "json_object"}), ("logit_bias", {"5": 1}),
                         ("presence_penalty", 0.5), ("frequency_penalty", 1.0), ("tool_choice", "required")]:  # fmt: skip
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, **{field: value})
        assert err.value.body["param"] == field and "not supported" in err.value.body["message"]
    # Their neutral values change nothing and are accepted.
    ok = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2, tools=[], presence_penalty=0,
                                        response_format={"type": "text"}, user="someone")  # fmt: skip
    assert ok.usage.completion_tokens >= 1
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=MODEL, prompt="x", max_tokens=2, suffix="end")
    assert err.value.body["param"] == "suffix"


def test_unknown_routes_and_methods_answer_in_openai_shape(url):
    error = error_of(httpx.get(url + "/v1/nothing", headers=AUTH), 404)
    assert "/v1/nothing" in error["message"]
    wrong = httpx.get(url + "/v1/completions", headers=AUTH)
    assert "POST" in error_of(wrong, 405)["message"] and wrong.headers["allow"] == "POST"
    error_of(httpx.delete(url + "/health"), 405)


def test_head_on_health_and_metrics(url):
    health = httpx.head(url + "/health")
    assert health.status_code == 200 and health.content == b""
    metrics = httpx.head(url + "/metrics", headers=AUTH)
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")


# --- authentication ------------------------------------------------------------------------------


def test_the_api_key_guards_every_route_but_health(url, server):
    for path in ("/v1/models", f"/v1/models/{MODEL}", "/metrics", "/docs", "/redoc", "/openapi.json"):
        assert error_of(httpx.get(url + path, timeout=30), 401)["code"] == "invalid_api_key", path
        assert httpx.get(url + path, headers=AUTH, timeout=30).status_code == 200, path
    assert httpx.get(url + "/health", timeout=30).json() == {"status": "ok"}
    spec = httpx.get(url + "/openapi.json", headers=AUTH).json()
    assert "prompt" in json.dumps(spec["paths"]["/v1/completions"]) and "ChatMessage" in spec["components"]["schemas"]
    # The key is checked before the body is read: a malformed body without a key is a 401.
    for headers in ({}, {"Authorization": "Bearer nope"}):
        bad = httpx.post(url + "/v1/completions", content=b'{"prompt": ', headers=headers, timeout=30)
        error_of(bad, 401)
    server.public_metrics = True
    try:
        assert httpx.get(url + "/metrics", timeout=30).status_code == 200
        error_of(httpx.get(url + "/docs", timeout=30), 401)
    finally:
        server.public_metrics = False


# --- timing --------------------------------------------------------------------------------------


def test_ttft_runs_from_receipt_to_the_first_byte_written(live):
    """A client that takes a second to send its body: the server's TTFT counts that second (it
    starts when the request arrives), and is no longer than the TTFT the client saw."""

    def ttft() -> tuple[float, float]:
        values = metric_values(live.url)
        label = f'{{model_name="{MODEL}"}}'
        name = "llmsim_time_to_first_token_seconds"
        return values.get(f"{name}_sum{label}", 0.0), values.get(f"{name}_count{label}", 0.0)

    body = json.dumps({"prompt": "t", "max_tokens": 2, "stream": True}).encode()
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    total0, count0 = ttft()
    with socket.create_connection(("127.0.0.1", live.port), timeout=60) as sock:
        start = time.monotonic()
        sock.sendall(head)
        time.sleep(1.0)
        sock.sendall(body)
        received = b""
        while b"data: {" not in received:
            received += sock.recv(65536)
        client_ttft = time.monotonic() - start
        while b"[DONE]" not in received:
            received += sock.recv(65536)
    assert wait_until(lambda: ttft()[1] == count0 + 1)
    server_ttft = ttft()[0] - total0
    assert 1.0 <= server_ttft <= client_ttft


def test_latency_buckets_are_log_spaced_from_under_10_ms_to_over_60_s():
    assert LATENCY_BUCKETS[0] < 0.001 and LATENCY_BUCKETS[-1] >= 60
    ratios = [b / a for a, b in itertools.pairwise(LATENCY_BUCKETS)]
    assert max(ratios) < 1.13 and min(ratios) > 1.1  # quantiles read from them are within a few percent


def test_metrics_report_latencies_and_load(url):
    httpx.post(url + "/v1/completions", json={"prompt": "m", "max_tokens": 3}, headers=AUTH, timeout=60)
    list(stream_lines(url, {"prompt": "m", "max_tokens": 3, "stream": True, "ignore_eos": True}))
    values = metric_values(url)
    label = f'{{model_name="{MODEL}"}}'
    for metric in ("time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds"):
        assert values[f"llmsim_{metric}_count{label}"] > 0
    for gauge in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_ratio"):
        assert f"llmsim_{gauge}{label}" in values


# --- clients that leave, a full queue, faults ----------------------------------------------------


def raw_request(port: int, body: dict) -> socket.socket:
    """Send a request and leave the connection open without reading the answer."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data)  # fmt: skip
    return sock


def test_clients_that_leave_are_aborted_and_metrics_go_idle(monkeypatch):
    """Streamed and not, running and waiting: each departure frees its sequence, and /metrics shows
    the server idle right after, without another request."""
    server = make_server(max_num_seqs=1)
    engine = server.engine
    slow_down(monkeypatch, engine.runner)  # a LONG request would take more than 38 s
    long = {"prompt": "keep going", "max_tokens": LONG, "ignore_eos": True}
    with serving(server) as live:
        with httpx.stream("POST", live.url + "/v1/completions", json={**long, "stream": True}, headers=AUTH,
                          timeout=60) as resp:  # fmt: skip
            lines = resp.iter_lines()
            assert any(next(lines).startswith("data: ") for _ in range(4))
            waiting = raw_request(live.port, long)  # not streamed; the only seat is taken: it waits
            assert wait_until(lambda: engine.scheduler.num_waiting == 1)
            waiting.close()
            assert wait_until(lambda: engine.scheduler.num_waiting == 0 and server.worker.num_waiting == 0)
            assert gauges(live.url)[1] == 0
        assert wait_until(lambda: idle(server))  # the stream's client left
        assert gauges(live.url) == (0, 0, 0)
        running = raw_request(live.port, long)  # not streamed, generating
        assert wait_until(lambda: engine.blocks.num_free < engine.runner.num_blocks)
        running.close()
        assert wait_until(lambda: idle(server))
        assert gauges(live.url) == (0, 0, 0) and aborted(live.url) == 3


def test_a_full_waiting_queue_answers_429_with_retry_after(monkeypatch):
    server = make_server(api_key=None, max_waiting=1, max_num_seqs=1)
    slow_down(monkeypatch, server.engine.runner)
    with serving(server) as live:
        base = live.url
        long = {"prompt": "hold the seat", "max_tokens": LONG, "stream": True, "ignore_eos": True}
        with httpx.stream("POST", base + "/v1/completions", json=long, timeout=60) as resp:
            lines = resp.iter_lines()  # kept: dropping the iterator would close the stream
            next(lines)  # the long request is running and holds the only seat
            queued = threading.Thread(target=httpx.post, args=(base + "/v1/completions",),
                                      kwargs={"json": {"prompt": "wait", "max_tokens": 2}, "timeout": 60})  # fmt: skip
            queued.start()
            assert wait_until(lambda: server.worker.num_waiting == 1)
            refused = httpx.post(base + "/v1/completions", json={"prompt": "no room", "max_tokens": 2}, timeout=30)
            assert error_of(refused, 429)["type"] == "rate_limit_error" and refused.headers["retry-after"] == "1"
            error_of(httpx.post(base + "/v1/completions", json={"prompt": "x", "n": 2}, timeout=30), 400, "n")
        queued.join(60)  # the disconnect freed the seat, so the queued request ran
        assert wait_until(lambda: idle(server))


def test_an_engine_fault_fails_the_request_not_the_server(url, server, monkeypatch):
    runner = server.engine.runner
    assert wait_until(lambda: idle(server))  # earlier tests' requests must not meet the fault instead
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
    assert wait_until(lambda: idle(server))


def test_300_streams_with_random_disconnects_leave_every_block_free(url, server, monkeypatch):
    """300 streams of a few tokens, a third of them leaving at a random point (before the first
    token or after some), plus long requests that are not streamed and whose clients give up:
    afterwards every KV block is free and /metrics shows the server idle."""
    assert wait_until(lambda: idle(server))
    slow_down(monkeypatch, server.engine.runner)  # the long requests cannot finish by themselves in time
    rng = random.Random(0)
    leave_after = [rng.randrange(0, 4) if rng.random() < 1 / 3 else None for _ in range(300)]
    max_tokens = 4

    async def stream(client, i):
        body = {"prompt": [100 + i, 200 + i, 300 + i] * (1 + i % 5), "max_tokens": max_tokens, "stream": True,
                "ignore_eos": True, "temperature": 0}  # fmt: skip
        tokens = 0
        async with client.stream("POST", url + "/v1/completions", json=body, headers=AUTH) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if leave_after[i] is not None and tokens >= leave_after[i]:
                    return None  # leaving the block closes the connection
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["finish_reason"] is None:
                    tokens += 1
        return tokens

    async def whole(client, i):
        body = {"prompt": f"long {i}", "max_tokens": LONG, "ignore_eos": True}
        await client.post(url + "/v1/completions", json=body, headers=AUTH)

    async def all_of_them():
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            gave_up = [asyncio.create_task(whole(client, i)) for i in range(10)]
            counts = await asyncio.wait_for(asyncio.gather(*(stream(client, i) for i in range(300))), 240)
            for task in gave_up:
                task.cancel()  # the clients give up: their connections close
            await asyncio.gather(*gave_up, return_exceptions=True)
            return counts

    counts = asyncio.run(all_of_them())
    assert all(c == max_tokens for c, leave in zip(counts, leave_after) if leave is None)
    assert wait_until(lambda: idle(server), timeout=30)
    assert gauges(url) == (0, 0, 0)


# --- shutting down -------------------------------------------------------------------------------


def test_sigterm_lets_running_requests_finish(monkeypatch):
    server = make_server(drain_timeout=60)
    slow_down(monkeypatch, server.engine.runner)
    with serving(server) as live:
        with httpx.stream("POST", live.url + "/v1/completions", headers=AUTH, timeout=60,
                          json={"prompt": "finish", "max_tokens": 20, "stream": True, "ignore_eos": True}) as resp:  # fmt: skip
            lines = resp.iter_lines()
            first = next(lines)
            live.uv.handle_exit(signal.SIGTERM, None)
            assert server.draining
            rest = [first, *(line for line in lines if line)]
        assert rest[-1] == "data: [DONE]" and not any('"error"' in line for line in rest)
        assert json.loads(rest[-2][6:])["choices"][0]["finish_reason"] == "length"
        live.thread.join(60)
        assert not live.thread.is_alive()  # it stopped by itself once the stream was done


def test_sigterm_ends_requests_still_running_after_the_drain_timeout(monkeypatch):
    server = make_server(drain_timeout=0.5)
    slow_down(monkeypatch, server.engine.runner)
    with serving(server) as live:
        whole = {}
        post = threading.Thread(target=lambda: whole.setdefault("r", httpx.post(
            live.url + "/v1/completions", json={"prompt": "w", "max_tokens": LONG, "ignore_eos": True},
            headers=AUTH, timeout=60)))  # fmt: skip
        post.start()
        with httpx.stream("POST", live.url + "/v1/completions", headers=AUTH, timeout=60,
                          json={"prompt": "endless", "max_tokens": LONG, "stream": True, "ignore_eos": True}) as resp:  # fmt: skip
            lines = resp.iter_lines()
            next(lines)
            assert wait_until(lambda: server.engine.scheduler.num_running == 2)
            live.uv.handle_exit(signal.SIGTERM, None)
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        error = json.loads(rest[-2][6:])["error"]
        assert error["type"] == "server_error" and "drain" in error["message"]
        post.join(60)
        assert error_of(whole["r"], 503)["type"] == "server_error"
        live.thread.join(60)
        assert not live.thread.is_alive()
        assert idle(server)


def test_a_draining_server_refuses_new_requests(url, server):
    server.draining = True
    try:
        refused = httpx.post(url + "/v1/completions", json={"prompt": "x"}, headers=AUTH, timeout=30)
        assert error_of(refused, 503)["code"] == "server_shutting_down"
        assert httpx.get(url + "/health", timeout=30).status_code == 503
    finally:
        server.draining = False


# --- the command line ----------------------------------------------------------------------------


def test_serve_command_line(capsys, tmp_path, monkeypatch):
    args = build_parser().parse_args(["serve", "--model", MODEL, "--port", "9001", "--quantization", "int8",
                                      "--max-num-seqs", "8", "--max-waiting", "4", "--api-key", "k",
                                      "--public-metrics", "--drain-timeout", "5"])  # fmt: skip
    assert (args.model, args.port, args.quantization, args.max_num_seqs, args.max_waiting) == (MODEL, 9001, "int8", 8, 4)
    assert args.public_metrics and args.drain_timeout == 5
    assert main(["serve", "--model", "llama-nope"]) == 2
    assert "llama-nope" in capsys.readouterr().err
    assert main(["serve", "--model", MODEL, "--max-num-seqs", "0"]) == 2
    assert "--max-num-seqs" in capsys.readouterr().err
    assert main(["serve", "--model", MODEL, "--drain-timeout", "-1"]) == 2
    assert "--drain-timeout" in capsys.readouterr().err

    started = {}
    monkeypatch.setattr(UvicornServer, "run", lambda self: started.setdefault("server", self.app_server))
    folder = tmp_path / "tok"
    assert main(["serve", "--model", MODEL, "--kv-cache-gb", "0.05", "--threads", "1", "--tokenizer-dir", str(folder),
                 "--api-key", "k", "--public-metrics", "--drain-timeout", "5"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"tokenizer: {folder.resolve()}" in out
    assert Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size() == 8192
    served = started["server"]
    assert served.public_metrics and served.drain_timeout == 5 and served.api_key == "k"

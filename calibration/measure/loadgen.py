"""An asynchronous load generator for OpenAI-compatible streaming servers (asyncio + httpx).

Open loop: every request is sent at its arrival time whatever happened to the earlier ones, so a
slow server faces a growing queue exactly as it would in production. Closed loop: a fixed number
of clients, each sending its next request when the previous one ends (a concurrency sweep).

Each streamed chunk that carries a token is stamped on arrival with the client clock; those times
become a `RequestRecord`, the same record the simulator and the engine produce. A failed request
(HTTP error, broken stream, timeout) is recorded with status "error" and never stops the run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import httpx
import numpy as np

from simulator.common.errors import ConfigError
from simulator.metrics import STATUS_ERROR, STATUS_OK, RequestRecord
from simulator.workload import Request

# Token ids for synthetic prompts: above the special and byte tokens of common vocabularies and
# below the vocabulary size of the smallest model in the catalog (8192).
PROMPT_TOKEN_RANGE = (1000, 8000)
# Frequent English words, each a single token in common BPE vocabularies, for text prompts.
_WORD_LIST = (
    "the of and to in is was for that with as on by at from his her are be this which or an had "
    "not but what all were when we there can more if no man out other so time up into only new "
    "some could these two may first then do any like my now over such our made after also did "
    "many before must through back years where much your way well down should because each just "
    "those people how too little state good very make world still own see men work long get here "
    "between both life being under never day same another know while last might us great old year "
    "off come since against go came right used take three"
)
_WORDS = _WORD_LIST.split()


@dataclass(frozen=True)
class Target:
    """The server under test and how to talk to it."""

    url: str  # base URL, e.g. http://127.0.0.1:8000 (a trailing /v1 is accepted)
    model: str | None = None  # None: the first model GET /v1/models lists
    endpoint: Literal["completions", "chat"] = "completions"
    api_key: str | None = None
    timeout_s: float = 600.0  # per request, from sending to the last token
    prompt_format: Literal["auto", "tokens", "text"] = "auto"  # auto: token ids if the server takes them
    ignore_eos: bool = True

    @property
    def base(self) -> str:
        return self.url.rstrip("/").removesuffix("/v1")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


@dataclass
class Outcome:
    """One request as the client saw it. Times are seconds since the run started."""

    request: Request
    scheduled: float
    sent: float = float("nan")
    token_times: list[float] = field(default_factory=list)
    error: str = ""
    http_status: int | None = None
    reported_prompt_tokens: int | None = None  # from the server's usage, when it sends one
    reported_output_tokens: int | None = None
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        return not self.error

    def record(self) -> RequestRecord:
        prompt = self.reported_prompt_tokens or self.request.prompt_tokens
        return RequestRecord(
            request_id=self.request.request_id,
            request_class=self.request.request_class,
            arrival=self.sent,
            prompt_tokens=prompt,
            token_times=np.asarray(self.token_times),
            status=STATUS_OK if self.ok else STATUS_ERROR,
        )

    def row(self) -> dict:
        """The client-side details written next to requests.csv."""
        return {
            "id": self.request.request_id,
            "scheduled": self.scheduled,
            "sent": self.sent,
            "requested_prompt_tokens": self.request.prompt_tokens,
            "requested_output_tokens": self.request.output_tokens,
            "reported_prompt_tokens": self.reported_prompt_tokens,
            "reported_output_tokens": self.reported_output_tokens,
            "streamed_tokens": len(self.token_times),
            "finish_reason": self.finish_reason,
            "http_status": self.http_status,
            "error": self.error,
        }


# --- prompts -------------------------------------------------------------------------------------


def token_prompt(request: Request, seed: int) -> list[int]:
    """`prompt_tokens` random token ids, different for every request (no accidental prefix hits)."""
    rng = np.random.default_rng([seed, request.request_id])
    return rng.integers(*PROMPT_TOKEN_RANGE, size=request.prompt_tokens).tolist()


def text_prompt(request: Request, seed: int) -> str:
    """About `prompt_tokens` tokens of text: that many common words, drawn at random."""
    rng = np.random.default_rng([seed, request.request_id])
    return " ".join(_WORDS[i] for i in rng.integers(0, len(_WORDS), size=request.prompt_tokens))


def _body(target: Target, model: str, request: Request, prompt: list[int] | str) -> dict:
    body = {
        "model": model,
        "max_tokens": request.output_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
    }
    if target.ignore_eos:
        body["ignore_eos"] = True  # vLLM, SGLang, TGI's OpenAI route and `llmsim serve` honour it
    if target.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


def _path(target: Target) -> str:
    return "/v1/chat/completions" if target.endpoint == "chat" else "/v1/completions"


# --- one request ---------------------------------------------------------------------------------


def _chunk_tokens(chunk: dict, endpoint: str) -> tuple[bool, str | None]:
    """Whether a streamed chunk carries a generated token, and its finish reason.

    A completions chunk with a choice is a token (its text may be empty: a token can decode to
    nothing on its own) unless it is an empty closing chunk with only a finish reason. A chat chunk
    is a token when its delta has content (the opening chunk carries only the role).
    """
    choices = chunk.get("choices") or []
    if not choices:
        return False, None
    choice = choices[0]
    reason = choice.get("finish_reason")
    if endpoint == "chat":
        return bool((choice.get("delta") or {}).get("content")), reason
    text = choice.get("text")
    return bool(text) or (text is not None and reason is None), reason


async def _stream(client: httpx.AsyncClient, target: Target, model: str, out: Outcome, prompt, t0: float):
    body = _body(target, model, out.request, prompt)
    async with client.stream("POST", target.base + _path(target), json=body, headers=target.headers) as resp:
        out.http_status = resp.status_code
        if resp.status_code != 200:
            detail = (await resp.aread()).decode(errors="replace").strip().replace("\n", " ")
            out.error = f"HTTP {resp.status_code}: {detail[:200]}"
            return
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            now = time.perf_counter() - t0
            chunk = json.loads(data)
            if "error" in chunk:
                out.error = f"server error in stream: {str(chunk['error'])[:200]}"
                return
            usage = chunk.get("usage")
            if usage:
                out.reported_prompt_tokens = usage.get("prompt_tokens")
                out.reported_output_tokens = usage.get("completion_tokens")
            is_token, reason = _chunk_tokens(chunk, target.endpoint)
            if is_token:
                out.token_times.append(now)
            out.finish_reason = reason or out.finish_reason
    if not out.token_times:
        out.error = "the stream ended without a token"


async def _send(client, target: Target, model: str, out: Outcome, prompt, t0: float) -> Outcome:
    out.sent = time.perf_counter() - t0
    try:
        await asyncio.wait_for(_stream(client, target, model, out, prompt, t0), target.timeout_s)
    except asyncio.TimeoutError:
        out.error = f"timeout: no complete answer within {target.timeout_s:g} s"
    except Exception as exc:  # noqa: BLE001 (one broken request, whatever broke, never stops the run)
        out.error = f"{type(exc).__name__}: {str(exc)[:200]}"
    return out


# --- the run -------------------------------------------------------------------------------------


def _client() -> httpx.AsyncClient:
    # No pool limit: an open loop must never queue requests on the client side.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(None, connect=30.0))


async def resolve_model(target: Target) -> str:
    """The model name to send: the given one, or the first one the server lists."""
    if target.model:
        return target.model
    async with _client() as client:
        try:
            resp = await client.get(target.base + "/v1/models", headers=target.headers)
            resp.raise_for_status()
            return resp.json()["data"][0]["id"]
        except httpx.ConnectError as exc:
            raise ConfigError(f"--url: cannot connect to {target.base} ({exc})") from None
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"--model: not given, and {target.base}/v1/models did not list one ({exc}); "
                "pass --model NAME"
            ) from None


async def probe(target: Target, model: str, seed: int) -> Literal["tokens", "text"]:
    """Send one short request (which also warms the server up) and decide the prompt format:
    token ids when the server takes them, text otherwise. Fails clearly if nothing answers."""
    formats = ["text"] if target.endpoint == "chat" else ["tokens", "text"]
    if target.prompt_format != "auto":
        formats = [target.prompt_format]
    warm = Request(request_id=2**31 - 1, arrival=0.0, prompt_tokens=8, output_tokens=2)  # no workload id
    errors = []
    async with _client() as client:
        for fmt in formats:
            prompt = token_prompt(warm, seed) if fmt == "tokens" else text_prompt(warm, seed)
            out = Outcome(warm, 0.0)
            try:
                await asyncio.wait_for(_stream(client, target, model, out, prompt, time.perf_counter()),
                                       target.timeout_s)
            except httpx.ConnectError as exc:
                raise ConfigError(f"--url: cannot connect to {target.base} ({exc})") from None
            except (asyncio.TimeoutError, httpx.HTTPError, json.JSONDecodeError) as exc:
                out.error = f"{type(exc).__name__}: {exc}"
            if out.ok:
                return fmt
            errors.append(f"{fmt} prompt: {out.error}")
    raise ConfigError(f"--url: {target.base}{_path(target)} did not answer a test request: {'; '.join(errors)}")


async def run_requests(
    target: Target,
    model: str,
    requests: list[Request],
    prompts: list,
    *,
    concurrency: int | None = None,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Send `requests` (sorted by arrival) and collect what came back, in request order.

    Open loop (`concurrency` None): request i leaves at its arrival time after the start.
    Closed loop: `concurrency` clients each send the next unsent request as soon as their previous
    one ends; arrival times are ignored.
    """
    outcomes = [Outcome(r, r.arrival if concurrency is None else float("nan")) for r in requests]

    async def send(i: int, client: httpx.AsyncClient, t0: float) -> None:
        await _send(client, target, model, outcomes[i], prompts[i], t0)
        if on_done is not None:
            on_done(outcomes[i])

    async with _client() as client:
        t0 = time.perf_counter()
        if concurrency is None:
            tasks = []
            for i, request in enumerate(requests):
                delay = t0 + request.arrival - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(send(i, client, t0)))
            await asyncio.gather(*tasks)
        else:
            queue = iter(range(len(requests)))

            async def worker() -> None:
                for i in queue:  # a shared iterator: each index goes to exactly one worker
                    outcomes[i].scheduled = time.perf_counter() - t0
                    await send(i, client, t0)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes

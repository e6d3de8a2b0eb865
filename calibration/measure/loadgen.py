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

from calibration.measure.prompts import text_prompt, token_prompt
from simulator.common.errors import ConfigError
from simulator.metrics import STATUS_ERROR, STATUS_OK, RequestRecord
from simulator.workload import Request


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
    chunk_times: list[float] = field(default_factory=list)  # each streamed chunk that carried tokens
    chunk_tokens: list[int | None] = field(default_factory=list)  # its tokens, None when it did not say
    error: str = ""
    http_status: int | None = None
    reported_prompt_tokens: int | None = None  # from the server's usage, when it sends one
    reported_output_tokens: int | None = None
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def tokens_per_chunk(self) -> np.ndarray:
        return tokens_per_chunk(self.chunk_times, self.chunk_tokens, self.reported_output_tokens)

    @property
    def token_times(self) -> np.ndarray:
        """One time per token (see token_times_of_chunks)."""
        return token_times_of_chunks(self.chunk_times, self.tokens_per_chunk)

    def record(self) -> RequestRecord:
        prompt = self.reported_prompt_tokens or self.request.prompt_tokens
        return RequestRecord(
            request_id=self.request.request_id,
            request_class=self.request.request_class,
            arrival=self.sent,
            prompt_tokens=prompt,
            token_times=self.token_times,
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
            "streamed_tokens": int(self.tokens_per_chunk.sum()),
            "chunks": len(self.chunk_times),
            "finish_reason": self.finish_reason,
            "http_status": self.http_status,
            "error": self.error,
        }


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


def tokens_per_chunk(times: list[float], counts: list[int | None], reported: int | None) -> np.ndarray:
    """Tokens in each streamed chunk. A chunk that says how many it carries (`token_ids`, or
    per-token `logprobs`) is taken at its word; the others carry one each, unless the server's
    usage reports more tokens than that: the extra ones are spread over the chunks after the
    first in proportion to the time since the chunk before (a server that coalesces tokens into
    one chunk sends more of them after a longer wait), rounded to whole tokens."""
    n = len(times)
    known = np.array([c if c is not None else 0 for c in counts], dtype=np.int64)
    unknown = np.array([c is None for c in counts], dtype=bool)
    out = np.where(unknown, 1, known)
    extra = (reported or 0) - int(out.sum())
    if extra <= 0 or not unknown.any():
        return out
    gaps = np.diff(np.asarray(times, dtype=float), prepend=times[0]) if n else np.array([])
    weights = np.where(unknown, np.maximum(gaps, 0.0), 0.0)
    if n > 1:
        weights[0] = 0.0
    if weights.sum() <= 0:
        weights = unknown.astype(float)
    share = extra * weights / weights.sum()
    whole = np.floor(share).astype(np.int64)
    left = extra - int(whole.sum())
    whole[np.argsort(-(share - whole), kind="stable")[:left]] += 1  # largest remainders
    return out + whole


def token_times_of_chunks(times: list[float], counts: np.ndarray) -> np.ndarray:
    """One time per token: the first chunk's tokens at its arrival; each later chunk's k tokens
    evenly over the gap since the chunk before, its last one at its arrival. So ITL per token is
    a chunk's gap divided by its tokens, and TTFT, E2E and TPOT do not depend on the chunking."""
    out: list[float] = []
    previous = None
    for t, k in zip(times, counts.tolist()):
        if previous is None:
            out.extend([t] * k)
        else:
            out.extend(previous + (t - previous) * (j + 1) / k for j in range(k))
        previous = t
    return np.asarray(out, dtype=float)


def itl_per_chunk(outcomes: list[Outcome]) -> np.ndarray:
    """Gaps between consecutive token-carrying chunks of the completed requests."""
    gaps = [np.diff(o.chunk_times) for o in outcomes if o.ok and len(o.chunk_times) > 1]
    return np.concatenate(gaps) if gaps else np.array([])


def _chunk_tokens(chunk: dict, endpoint: str) -> tuple[bool, str | None]:
    """Whether a streamed chunk carries generated tokens, and its finish reason.

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
    return bool(text) or (text is not None and reason is None) or bool(choice.get("token_ids")), reason


def _declared_count(chunk: dict) -> int | None:
    """How many tokens a chunk says it carries: its `token_ids` (vLLM's `return_token_ids`) or
    its per-token logprobs; None when it does not say."""
    choice = (chunk.get("choices") or [{}])[0]
    if choice.get("token_ids"):
        return len(choice["token_ids"])
    logprobs = choice.get("logprobs") or {}
    if isinstance(logprobs, dict):
        per_token = logprobs.get("tokens") or logprobs.get("content")
        if per_token:
            return len(per_token)
    return None


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
                out.chunk_times.append(now)
                out.chunk_tokens.append(_declared_count(chunk))
            out.finish_reason = reason or out.finish_reason
    if not out.chunk_times:
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

"""An OpenAI-compatible HTTP server over the engine: completions and chat, streamed or not.

Endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health,
GET /metrics (Prometheus text). Streams are server-sent events, one chunk per generated token,
a closing chunk with the finish reason, an optional usage chunk (`stream_options.include_usage`),
then `data: [DONE]`. The first chat chunk carries the role and the first token's content
together: a role-only chunk would look like a first token to clients that time them.

Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: 400 for malformed
JSON, wrong types, bad values and prompts that do not fit the context; 401 for a wrong or missing
API key (when one is set); 404 for an unknown model; 429 when the waiting queue is full. A client
that disconnects mid-request has its sequence aborted and its KV blocks returned.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from backend.engine import Engine
from backend.engine_thread import EngineThread, RequestHandle, TokenEvent
from backend.openai_schema import ApiError, ChatRequest, Common, CompletionRequest, validation_error
from backend.server_metrics import ServerMetrics
from backend.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions


# --- the app ---------------------------------------------------------------------------------


class Server:
    """The serving state the endpoints share: engine thread, tokenizer, settings."""

    def __init__(self, engine: Engine, model_name: str, api_key: str | None = None,
                 max_waiting: int | None = None, tokenizer: ByteTokenizer | HFTokenizer | None = None):  # fmt: skip
        self.engine = engine
        self.model_name = model_name
        self.api_key = api_key
        self.vocab_size = engine.runner.spec.vocab_size
        self.tokenizer = tokenizer or ByteTokenizer(self.vocab_size)
        self.metrics = ServerMetrics(model_name)
        self.worker = EngineThread(engine, max_waiting, self.metrics)
        self.created = int(time.time())

    # --- checks --------------------------------------------------------------------------
    def check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip(), self.api_key):
            raise ApiError(401, "invalid or missing API key (send 'Authorization: Bearer <key>')",
                           code="invalid_api_key")  # fmt: skip

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise ApiError(404, f"model {name!r} does not exist; this server serves {self.model_name!r}",
                           "model", "model_not_found")  # fmt: skip

    def prompt_ids(self, prompt) -> list[int]:
        if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
            if len(prompt) != 1:
                raise ApiError(400, f"prompt: got {len(prompt)} prompts; send one prompt per request", "prompt")
            prompt = prompt[0]
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ApiError(400, "prompt: the prompt is empty", "prompt")
        vocab = self.vocab_size
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise ApiError(400, f"prompt: token id {bad} is out of range; allowed: 0..{vocab - 1}", "prompt")
        return ids

    def check_length(self, prompt_len: int, max_tokens: int, param: str) -> None:
        limit = self.engine.max_model_len
        if prompt_len + max_tokens > limit:
            raise ApiError(
                400,
                f"this model's maximum context length is {limit} tokens; the request needs "
                f"{prompt_len + max_tokens} ({prompt_len} in the prompt, {max_tokens} to generate)",
                "prompt" if prompt_len >= limit else param,
                "context_length_exceeded",
            )
        if not self.engine.blocks.fits_ever(prompt_len + max_tokens):
            raise ApiError(400, f"the request needs {prompt_len + max_tokens} tokens of KV cache, more than "
                           "the server has", param, "context_length_exceeded")  # fmt: skip

    # --- one request ---------------------------------------------------------------------
    def submit(self, body: Common, prompt_ids: list[int], max_tokens: int) -> RequestHandle:
        temperature = 1.0 if body.temperature is None else body.temperature
        options = {
            "temperature": temperature,
            "top_p": 1.0 if body.top_p is None else body.top_p,
            "seed": body.seed,
            "ignore_eos": body.ignore_eos,
            "eos_token_id": self.tokenizer.eos_token_id,
        }
        handle = RequestHandle(prompt_ids, max_tokens, options, self.engine.now(), asyncio.get_running_loop())
        if not self.worker.submit(handle):
            raise ApiError(429, f"the server is busy: {self.worker.num_waiting} requests are already waiting",
                           kind="rate_limit_error", code="rate_limit_exceeded")  # fmt: skip
        return handle

    async def events(self, handle: RequestHandle, request: Request | None = None) -> AsyncIterator[TokenEvent]:
        """The request's token events until it finishes. With `request`, stops (and aborts the
        sequence) when the client disconnects; a cancelled stream aborts it too."""
        done = False
        try:
            while True:
                if request is None:
                    event = await handle.events.get()
                else:
                    try:
                        event = await asyncio.wait_for(handle.events.get(), timeout=1.0)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            return
                        continue
                done = event.finish_reason is not None or event.error is not None
                yield event
                if done:
                    return
        finally:
            if not done:
                self.worker.abort(handle)


def create_app(server: Server) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.worker.start()
        try:
            yield
        finally:
            server.worker.stop()

    app = FastAPI(title="llmsim engine", lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return validation_error(exc).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error").response()

    def authorised(request: Request) -> None:
        server.check_key(request)

    @app.get("/health")
    async def health():
        if not server.worker.is_alive:
            return JSONResponse({"status": "engine stopped"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    async def models():
        card = {"id": server.model_name, "object": "model", "created": server.created, "owned_by": "llmsim",
                "max_model_len": server.engine.max_model_len}  # fmt: skip
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions", dependencies=[Depends(authorised)])
    async def completions(body: CompletionRequest, request: Request):
        server.check_model(body.model)
        body.check_supported()
        ids = server.prompt_ids(body.prompt)
        return await _respond(server, "completion", body, ids, body.max_tokens or DEFAULT_COMPLETION_TOKENS, request)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorised)])
    async def chat(body: ChatRequest, request: Request):
        server.check_model(body.model)
        body.check_supported()
        ids = server.tokenizer.encode_chat([(m.role, m.text()) for m in body.messages])
        max_tokens = body.max_completion_tokens or body.max_tokens or max(1, server.engine.max_model_len - len(ids))
        return await _respond(server, "chat", body, ids, max_tokens, request)

    return app


# --- responses -------------------------------------------------------------------------------


async def _respond(server: Server, kind: str, body, ids: list[int], max_tokens: int, request: Request):
    """Queue a checked request on the engine; stream its tokens as SSE or return them whole."""
    server.check_length(len(ids), max_tokens, "max_tokens")
    handle = server.submit(body, ids, max_tokens)
    reply = _Reply(server, kind, len(ids))
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return _sse(reply.stream(server.events(handle), usage))
    return await reply.collect(server.events(handle, request))


def _sse(chunks: AsyncIterator[dict | str]) -> StreamingResponse:
    async def lines():
        async for chunk in chunks:
            data = chunk if isinstance(chunk, str) else json.dumps(chunk, separators=(",", ":"))
            yield f"data: {data}\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


class _Reply:
    """Builds one request's response objects, completions or chat, streamed or whole."""

    def __init__(self, server: Server, kind: Literal["completion", "chat"], prompt_tokens: int):
        self.kind = kind
        self.model = server.model_name
        self.prompt_tokens = prompt_tokens
        self.decoder = server.tokenizer.stream_decoder()
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())

    def usage(self, completion_tokens: int) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": self.prompt_tokens + completion_tokens}  # fmt: skip

    def _chunk(self, choice: dict | None, usage: bool) -> dict:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        chunk = {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                 "choices": [] if choice is None else [choice]}  # fmt: skip
        if usage:
            chunk["usage"] = None
        return chunk

    def _choice(self, text: str | None, reason: str | None, first: bool) -> dict:
        if self.kind == "chat":
            delta = {} if text is None else {"content": text}
            if first and text is not None:
                delta = {"role": "assistant", **delta}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}

    async def stream(self, events: AsyncIterator[TokenEvent], include_usage: bool) -> AsyncIterator[dict | str]:
        count = 0
        async for event in events:
            if event.error is not None:
                yield {"error": ApiError(500, event.error, kind="server_error").body()["error"]}
                break
            for i, token in enumerate(event.token_ids):
                last = event.finish_reason is not None and i == len(event.token_ids) - 1
                text = self.decoder.feed([token], final=last)
                yield self._chunk(self._choice(text, None, first=count == 0), include_usage)
                count += 1
            if event.finish_reason is not None:
                yield self._chunk(self._choice(None, event.finish_reason, first=False), include_usage)
                if include_usage:
                    yield {**self._chunk(None, False), "usage": self.usage(count)}
        yield "[DONE]"

    async def collect(self, events: AsyncIterator[TokenEvent]) -> dict:
        tokens: list[int] = []
        reason = None
        async for event in events:
            if event.error is not None:
                raise ApiError(500, event.error, kind="server_error")
            tokens += event.token_ids
            reason = event.finish_reason
        if reason is None:  # the client went away; nobody reads this
            return {}
        text = self.decoder.feed(tokens, final=True)
        if self.kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": reason}  # fmt: skip
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        obj = "chat.completion" if self.kind == "chat" else "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "choices": [choice], "usage": self.usage(len(tokens))}  # fmt: skip


# --- running it ------------------------------------------------------------------------------


def build_server(
    model: str | None,
    *,
    checkpoint: str | None = None,
    device: str = "auto",
    dtype: str = "fp32",
    quantization: str | None = None,
    kv_cache_gb: float | None = None,
    scheduler: dict | None = None,
    api_key: str | None = None,
    max_waiting: int | None = None,
    seed: int = 0,
) -> Server:
    """A Server for a catalog model (random weights) or a checkpoint folder."""
    from pydantic import ValidationError

    from backend.device import resolve_device
    from backend.loader import load_checkpoint
    from backend.runner import ModelRunner
    from simulator.common.errors import ConfigError
    from simulator.scheduling import SchedulerConfig

    if model is None and checkpoint is None:
        raise ConfigError("--model: give a catalog model name, or --checkpoint DIR")
    try:
        config = SchedulerConfig(**(scheduler or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        flag = "--" + "-".join(str(p) for p in err["loc"]).replace("_", "-")
        raise ConfigError(f"{flag}: {err['msg']} (got {err.get('input')!r})") from None
    source = load_checkpoint(checkpoint, dtype, resolve_device(device)) if checkpoint else model
    runner = ModelRunner(source, device=device, dtype=dtype, quantization=quantization,
                         kv_cache_gb=kv_cache_gb, block_size=config.block_size, seed=seed)  # fmt: skip
    engine = Engine(runner, config, max_records=100_000)
    name = model or runner.spec.name
    tokenizer = load_tokenizer(checkpoint, runner.spec.vocab_size)
    return Server(engine, name, api_key=api_key, max_waiting=max_waiting, tokenizer=tokenizer)


def run_cli(args) -> int:
    """`llmsim serve`: build the server from command-line arguments and serve until interrupted."""
    import torch
    import uvicorn

    if args.threads:
        torch.set_num_threads(args.threads)
    scheduler = {"policy": args.policy, "max_num_seqs": args.max_num_seqs}
    if args.max_model_len:
        scheduler["max_model_len"] = args.max_model_len
    if args.enable_prefix_caching:
        scheduler["enable_prefix_caching"] = True
    server = build_server(
        args.model,
        checkpoint=args.checkpoint,
        device=args.device,
        dtype=args.dtype,
        quantization=args.quantization,
        kv_cache_gb=args.kv_cache_gb,
        scheduler=scheduler,
        api_key=args.api_key,
        max_waiting=args.max_waiting,
        seed=args.seed,
    )
    runner = server.engine.runner
    print(
        f"llmsim serve: {server.model_name} on {runner.device} ({str(runner.dtype).removeprefix('torch.')}"
        f"{', int8 weights' if runner.quantization else ''}), {runner.weight_bytes / 2**20:,.0f} MiB of weights, "
        f"KV cache {runner.num_blocks} blocks x {runner.block_size} tokens, policy {args.policy}; "
        f"http://{args.host}:{args.port}/v1"
    )
    if runner.device.type == "cpu":
        from backend import native

        print(f"native CPU kernels: {native.status()}")
    uvicorn.run(create_app(server), host=args.host, port=args.port, log_level=args.log_level)
    return 0

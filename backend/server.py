"""An OpenAI-compatible HTTP server over the engine: completions and chat, streamed or not.

Endpoints: POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /v1/models/{id},
GET|HEAD /health, GET|HEAD /metrics (Prometheus text), and the API docs (/docs, /redoc,
/openapi.json). Requests take `n` choices, `stop` strings, `logprobs` (chat: `logprobs` and
`top_logprobs`), completions' `echo`, `seed`, `ignore_eos` and `stream_options.include_usage`.

Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, for every status:
400 for bodies that are not UTF-8 JSON objects, wrong types, bad values, unsupported fields and
prompts that do not fit the context; 401 for a wrong or missing API key (checked before the
body is read); 404 for an unknown model or route; 405 for a wrong method; 429 (with
Retry-After) when the waiting queue is full; 503 while shutting down.

With an API key every route but /health needs it, /metrics too unless `public_metrics`. A client
that disconnects, streamed or not, has its sequences aborted before the engine's next step. On
SIGTERM or SIGINT the server stops taking requests and lets running ones finish for up to
`drain_timeout` seconds; then it ends them (streams with an error event) and exits.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from contextlib import asynccontextmanager

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from backend.engine import Engine
from backend.engine_thread import EngineThread, RequestHandle
from backend.generation import Generation
from backend.openai_schema import (
    ApiError,
    ChatRequest,
    Common,
    CompletionRequest,
    parse_body,
    validation_error,
)
from backend.responses import ChoiceText, Reply
from backend.server_metrics import DeliveryTimer, ServerMetrics
from backend.tokenizer import CharTokenizer, HFTokenizer

DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions
# Chat has no default in OpenAI's API, and vLLM's (the rest of the context) makes a random-weight
# model, which almost never emits EOS, run every such request to the end of its context. A
# typical chat answer fits in this many tokens; a client that wants more says so.
DEFAULT_CHAT_TOKENS = 256
RETRY_AFTER_S = 1  # a 429's Retry-After: a waiting seat frees as soon as a request is admitted
DEFAULT_DRAIN_TIMEOUT_S = 30.0


# --- the serving state -----------------------------------------------------------------------


class Server:
    """The serving state the endpoints share: engine thread, tokenizer, settings."""

    def __init__(self, engine: Engine, model_name: str, api_key: str | None = None,
                 max_waiting: int | None = None, tokenizer: CharTokenizer | HFTokenizer | None = None,
                 public_metrics: bool = False, drain_timeout: float = DEFAULT_DRAIN_TIMEOUT_S):  # fmt: skip
        self.engine = engine
        self.model_name = model_name
        self.api_key = api_key
        self.public_metrics = public_metrics
        self.drain_timeout = drain_timeout
        self.vocab_size = engine.runner.spec.vocab_size
        self.tokenizer = tokenizer or CharTokenizer(self.vocab_size)
        self.metrics = ServerMetrics(model_name)
        self.metrics.describe_engine(engine)
        self.worker = EngineThread(engine, max_waiting, self.metrics)
        self.created = int(time.time())
        self.draining = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- checks --------------------------------------------------------------------------
    def check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # Starlette decodes headers as latin-1: encoding back gives the bytes the client sent.
        given = token.strip().encode("latin-1", "replace")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given, self.api_key.encode()):
            raise ApiError(401, "invalid or missing API key (send 'Authorization: Bearer <key>')",
                           code="invalid_api_key")  # fmt: skip

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise ApiError(404, f"model {name!r} does not exist; this server serves {self.model_name!r}",
                           "model", "model_not_found")  # fmt: skip

    async def read(self, request: Request, model: type[BaseModel]) -> Common:
        """The checked request body: the key first, then the body and its model."""
        self.check_key(request)
        if self.draining:
            raise ApiError(503, "the server is shutting down", kind="server_error", code="server_shutting_down")
        try:
            raw = await request.body()
        except ClientDisconnect:  # gone before its body arrived: nothing to run, nobody to answer
            raise ApiError(400, "the client disconnected while sending the request body") from None
        body = parse_body(raw, model)
        self.check_model(body.model)
        body.check()
        return body

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
    def submit(self, body: Common, prompt_ids: list[int], max_tokens: int, arrival: float) -> Generation:
        """Queue one sequence per choice on the engine."""
        limit = self.worker.max_waiting
        if limit is not None and body.n > limit:
            raise ApiError(400, f"n: got {body.n}; this server queues at most {limit} sequences", "n")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        handles = []
        for i in range(body.n):
            options = {
                "temperature": 1.0 if body.temperature is None else body.temperature,
                "top_p": 1.0 if body.top_p is None else body.top_p,
                "seed": None if body.seed is None else body.seed + i,  # each choice its own stream
                "ignore_eos": body.ignore_eos,
                "eos_token_id": self.tokenizer.eos_token_id,
            }
            handles.append(RequestHandle(prompt_ids, max_tokens, options, arrival, loop, queue, index=i,
                                         top_logprobs=body.logprob_count))  # fmt: skip
        if not self.worker.submit(*handles):
            raise ApiError(429, f"the server is busy: {self.worker.num_waiting} requests are already waiting",
                           kind="rate_limit_error", code="rate_limit_exceeded",
                           headers={"Retry-After": str(RETRY_AFTER_S)})  # fmt: skip
        return Generation(self.worker, handles, queue, arrival)

    # --- shutting down -------------------------------------------------------------------
    def begin_drain(self) -> None:
        """Refuse new requests; end the running ones once drain_timeout has passed (any thread)."""
        if self.draining:
            return
        self.draining = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.call_later, self.drain_timeout, self._end_running)

    def _end_running(self) -> None:
        self.worker.fail_all(f"the server is shutting down: requests still running after the "
                             f"{self.drain_timeout:g} s drain were ended")  # fmt: skip


class UvicornServer(uvicorn.Server):
    """uvicorn's server; its shutdown signal (SIGTERM, SIGINT) also starts the app's drain."""

    def __init__(self, server: Server, config: uvicorn.Config):
        super().__init__(config)
        self.app_server = server

    def handle_exit(self, sig, frame) -> None:
        self.app_server.begin_drain()
        super().handle_exit(sig, frame)


def make_uvicorn(server: Server, **config) -> UvicornServer:
    """A uvicorn server for `server`'s app; it waits for the drain, then a little longer for the
    connections the drain ended to close."""
    config.setdefault("timeout_graceful_shutdown", server.drain_timeout + 5)
    return UvicornServer(server, uvicorn.Config(create_app(server), **config))


# --- the app ---------------------------------------------------------------------------------


class _StampArrival:
    """ASGI middleware: the engine-clock instant each request reached the app, before anything
    (routing, reading the body, tokenizing) happened to it."""

    def __init__(self, app, clock):
        self.app, self.clock = app, clock

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            scope.setdefault("state", {})["arrival"] = self.clock()
        await self.app(scope, receive, send)


def create_app(server: Server) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server._loop = asyncio.get_running_loop()
        server.worker.start()
        try:
            yield
        finally:
            server.worker.stop()

    app = FastAPI(title="llmsim engine", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.add_middleware(_StampArrival, clock=server.engine.now)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"method {request.method} is not allowed on {request.url.path}; allowed: {allowed}"
            return ApiError(405, message, code="method_not_allowed", headers=exc.headers).response()
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs for the API"
            return ApiError(404, message, code="not_found").response()
        return ApiError(exc.status_code, str(exc.detail), headers=exc.headers).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return validation_error(exc.errors()).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error").response()

    def authorised(request: Request) -> None:
        server.check_key(request)

    def metrics_access(request: Request) -> None:
        if not server.public_metrics:
            server.check_key(request)

    @app.get("/health")
    async def health():
        if not server.worker.is_alive:
            return JSONResponse({"status": "engine stopped"}, status_code=503)
        if server.draining:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics", dependencies=[Depends(metrics_access)])
    async def metrics():
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    # HEAD answers as GET does, without the body (monitors probe with it)
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)
    app.add_api_route("/metrics", metrics, methods=["HEAD"], include_in_schema=False,
                      dependencies=[Depends(metrics_access)])  # fmt: skip

    def card() -> dict:
        return {"id": server.model_name, "object": "model", "created": server.created, "owned_by": "llmsim",
                "root": server.model_name, "max_model_len": server.engine.max_model_len}  # fmt: skip

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    async def models():
        return {"object": "list", "data": [card()]}

    @app.get("/v1/models/{model_id:path}", dependencies=[Depends(authorised)])
    async def model(model_id: str):
        if model_id != server.model_name:
            raise ApiError(404, f"model {model_id!r} does not exist; this server serves {server.model_name!r}",
                           "model", "model_not_found")  # fmt: skip
        return card()

    @app.post("/v1/completions", openapi_extra=_body_schema(CompletionRequest))
    async def completions(request: Request):
        body = await server.read(request, CompletionRequest)
        ids = server.prompt_ids(body.prompt)
        echo = _prompt_text(body.prompt, ids, server.tokenizer) if body.echo else None
        return await _respond(server, "completion", body, ids, body.max_tokens or DEFAULT_COMPLETION_TOKENS,
                              request, echo)  # fmt: skip

    @app.post("/v1/chat/completions", openapi_extra=_body_schema(ChatRequest))
    async def chat(request: Request):
        body = await server.read(request, ChatRequest)
        ids = server.tokenizer.encode_chat([(m.role, m.text()) for m in body.messages])
        room = server.engine.max_model_len - len(ids)
        max_tokens = body.max_completion_tokens or body.max_tokens or max(1, min(DEFAULT_CHAT_TOKENS, room))
        return await _respond(server, "chat", body, ids, max_tokens, request)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(authorised)])
    async def openapi():
        return JSONResponse(_openapi(app))

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(authorised)])
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @app.get("/redoc", include_in_schema=False, dependencies=[Depends(authorised)])
    async def redoc():
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")

    return app


def _body_schema(model: type[BaseModel]) -> dict:
    """The OpenAPI request body of an endpoint that reads its body itself."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _openapi(app: FastAPI) -> dict:
    """The app's OpenAPI document, the request bodies' nested models added to its components."""
    if app.openapi_schema is None:
        spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for path in spec.get("paths", {}).values():
            for operation in path.values():
                body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
                schemas.update(body.get("schema", {}).pop("$defs", {}))
        app.openapi_schema = spec
    return app.openapi_schema


# --- responses -------------------------------------------------------------------------------


async def _respond(server: Server, kind, body: Common, ids: list[int], max_tokens: int, request: Request,
                   echo: str | None = None):  # fmt: skip
    """Queue a checked request on the engine; stream its tokens as SSE or return them whole."""
    server.check_length(len(ids), max_tokens, "max_tokens")
    generation = server.submit(body, ids, max_tokens, request.state.arrival)
    try:
        reply = Reply(kind, server.model_name, server.tokenizer, len(ids), body.logprob_count)
        choices = [ChoiceText(i, server.tokenizer, body.stop_strings) for i in range(body.n)]
        timer = DeliveryTimer(server.metrics, generation.arrival, server.engine.now)
        if body.stream:
            lines = _stream(reply, choices, generation, request, timer, body.include_usage, echo)
            return _EventStream(generation, lines)
        return await _collect(reply, choices, generation, request, timer, echo)
    except BaseException:
        generation.close()
        raise


def _prompt_text(prompt, ids: list[int], tokenizer) -> str:
    """What completions' echo returns: the prompt as sent, or its token ids decoded."""
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompt = prompt[0]
    return prompt if isinstance(prompt, str) else tokenizer.decode(ids)


class _EventStream(StreamingResponse):
    """A server-sent-event stream that aborts its sequences however it ends (finished, client
    gone, cancelled before its first chunk)."""

    def __init__(self, generation: Generation, lines):
        super().__init__(lines, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.generation = generation

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            pass
        finally:
            self.generation.close()


def _data(obj) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, separators=(',', ':'))}\n\n"


async def _stream(reply: Reply, choices: list[ChoiceText], generation: Generation, request: Request,
                  timer: DeliveryTimer, include_usage: bool, echo: str | None):  # fmt: skip
    if echo is not None:
        for choice in choices:
            yield _data(reply.echo_chunk(choice, echo, include_usage))
    async for event in generation.events(request):
        if event.error is not None:
            yield _data({"error": ApiError(event.error_status, event.error, kind="server_error").body()["error"]})
            yield _data("[DONE]")
            return
        choice = choices[event.index]
        for chunk in reply.token_chunks(choice, choice.feed(event), include_usage):
            yield _data(chunk)
            timer.delivered(choice.index)  # the chunk's bytes were just handed to the connection
        if choice.finish_reason is not None:
            if choice.stopped_by_string:
                generation.finish(choice.index)
            yield _data(reply.closing_chunk(choice, include_usage))
    if generation.client_left:
        return
    if include_usage:
        yield _data(reply.usage_chunk(choices))
    yield _data("[DONE]")
    timer.finished()


async def _collect(reply: Reply, choices: list[ChoiceText], generation: Generation, request: Request,
                   timer: DeliveryTimer, echo: str | None) -> Response:  # fmt: skip
    texts: list[list] = [[] for _ in choices]
    async for event in generation.events(request):
        if event.error is not None:
            raise ApiError(event.error_status, event.error, kind="server_error")
        choice = choices[event.index]
        texts[event.index] += choice.feed(event)
        if choice.stopped_by_string:
            generation.finish(choice.index)
    if generation.client_left:  # nobody reads this
        return Response(status_code=499)
    return JSONResponse(reply.whole(choices, texts, echo), background=BackgroundTask(timer.whole_delivered))

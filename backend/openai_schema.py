"""The OpenAI API's request bodies (pydantic) and error shape, as this server accepts them.

A body is read by `parse_body`: UTF-8, then JSON, then the pydantic model, each failure a 400
naming the field and what is allowed. Strings holding lone UTF-16 surrogates (JSON "\\ud800",
not Unicode text) and non-finite numbers (Infinity, NaN, 1e999) are refused. Fields of the API
that do not change the output (user, metadata, ...) are ignored; options this server cannot
honour (tools, response_format, penalties, ...) are refused with a 400 naming the field rather
than silently ignored.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_STOP_SEQUENCES = 4  # OpenAI's limit
MAX_CHOICES = 128  # OpenAI's limit on n
MAX_TOP_LOGPROBS = 20  # chat's top_logprobs limit
MAX_COMPLETION_LOGPROBS = 5  # the completions endpoint's logprobs limit


# --- errors ----------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def validation_error(errors: list[dict]) -> ApiError:
    """The first of pydantic's (or FastAPI's) validation errors as a 400 naming the field."""
    err = errors[0]
    # pydantic names the member of a union (str, list[int], ...) it tried; the field is enough
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "path", "query")
           and not (isinstance(p, str) and (p in _TYPE_TAGS or "[" in p))]  # fmt: skip
    if not loc:
        return ApiError(400, "the request body must be a JSON object")
    param = loc[0]  # the top-level field; the message names the full path
    given = ""
    if "input" in err and err.get("type") != "missing":
        given = f" (got {json.dumps(err['input'], default=str)[:100]})"
    return ApiError(400, f"{'.'.join(loc)}: {err['msg']}{given}", param=param)


# --- reading a body --------------------------------------------------------------------------


def parse_body(raw: bytes, model: type[BaseModel]) -> BaseModel:
    """The request body as `model`, or an ApiError (400) saying what is wrong and where."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the request body is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                       f"{exc.start}); send JSON encoded as UTF-8") from None  # fmt: skip
    try:
        data = json.loads(text)
        _check_unicode(data, [])
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "the request body nests arrays or objects too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    _check_unsupported(data, model)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


def _check_unicode(value: Any, path: list) -> None:
    """Refuse strings with lone surrogates: JSON can spell them, but they are not text."""
    if isinstance(value, str):
        bad = next((c for c in value if "\ud800" <= c <= "\udfff"), None)
        if bad is not None:
            where = ".".join(map(str, path)) or "body"
            raise ApiError(400, f"{where}: contains a lone UTF-16 surrogate (\\u{ord(bad):04x}), which is not "
                           "valid Unicode; send well-formed text", str(path[0]) if path else None)  # fmt: skip
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_unicode(key, path)
            _check_unicode(item, [*path, key])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_unicode(item, [*path, i])


def _neutral(value: Any) -> bool:
    return value in (None, False, 0, "", [], {}, "none", "auto", {"type": "text"})


def _check_unsupported(data: dict, model: type[BaseModel]) -> None:
    for field, why in getattr(model, "unsupported", {}).items():
        if field in data and not _neutral(data[field]):
            raise ApiError(400, f"{field}: not supported by this server ({why}); remove it", field)


# --- request bodies --------------------------------------------------------------------------


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


_UNSUPPORTED = {
    "logit_bias": "sampling is plain temperature and top-p",
    "presence_penalty": "sampling is plain temperature and top-p",
    "frequency_penalty": "sampling is plain temperature and top-p",
    "response_format": "no structured output: text only",
    "tools": "no tool calling",
    "functions": "no function calling",
    "function_call": "no function calling",
    "suffix": "no insertion",
    "audio": "text only",
    "modalities": "text only",
    "prediction": "no predicted outputs",
}


class Common(BaseModel):
    # Fields that do not change the output (user, metadata, ...) are ignored.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    unsupported: ClassVar[dict[str, str]] = _UNSUPPORTED  # refused unless neutral (None, 0, [], ...)

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    ignore_eos: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    stop: str | list[str] | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, stop):
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(stops)}")
        if any(s == "" for s in stops):
            raise ValueError("a stop sequence must not be empty")
        return stop

    @property
    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def check(self) -> None:
        """Combinations of fields this server refuses (after each field was validated)."""


class CompletionRequest(Common):
    prompt: str | list[int] | list[str] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)
    best_of: int | None = Field(None, ge=1)

    def check(self) -> None:
        if self.best_of is not None and self.best_of != self.n:
            raise ApiError(400, f"best_of: got {self.best_of}; only best_of equal to n ({self.n}) is supported "
                           "(every candidate is returned)", "best_of")  # fmt: skip
        if self.echo and self.logprobs is not None:
            raise ApiError(400, "echo: with logprobs it needs the prompt's log-probabilities, which this server "
                           "does not compute; drop echo or logprobs", "echo")  # fmt: skip

    @property
    def logprob_count(self) -> int | None:
        """Alternatives to report per token besides the chosen one (None: no logprobs)."""
        return self.logprobs


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, content):
        for i, part in enumerate(content if isinstance(content, list) else []):
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"part {i} has type {part.get('type')!r}; only text parts "
                                 '({"type": "text", "text": "..."}) are supported')  # fmt: skip
        return content

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part["text"] for part in self.content)


class ChatRequest(Common):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    unsupported: ClassVar[dict[str, str]] = {**_UNSUPPORTED, "tool_choice": "no tool calling"}

    def check(self) -> None:
        if self.top_logprobs is not None and not self.logprobs:
            raise ApiError(400, "top_logprobs: needs logprobs set to true", "top_logprobs")

    @property
    def logprob_count(self) -> int | None:
        """Alternatives to report per token (None: no logprobs)."""
        return (self.top_logprobs or 0) if self.logprobs else None


"""The OpenAI API's request bodies (pydantic) and error shape, as this server accepts them.

Fields of the API this server does not use (user, logit_bias, ...) are ignored; options it
cannot honour (several choices, stop sequences, echo, logprobs) are refused with a 400 naming
the field, rather than silently ignored.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

# --- errors ----------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def validation_error(exc: RequestValidationError) -> ApiError:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    if err.get("type") == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON: {err.get('ctx', {}).get('error', err['msg'])}")
    if not loc:
        return ApiError(400, "the request body must be a JSON object, sent with Content-Type: application/json")
    param = loc[0]  # the top-level field; the message names the full path
    given = f" (got {json.dumps(err['input'])[:100]})" if "input" in err else ""
    return ApiError(400, f"{'.'.join(loc)}: {err['msg']}{given}", param=param)


# --- request bodies --------------------------------------------------------------------------


class StreamOptions(BaseModel):
    include_usage: bool = False


class Common(BaseModel):
    # Fields of the OpenAI API this server does not use (user, logit_bias, ...) are ignored.
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    ignore_eos: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    stop: str | list[str] | None = None

    def check_supported(self) -> None:
        if self.stop:
            raise ApiError(400, "stop: stop sequences are not supported; use max_tokens or EOS", "stop")


class CompletionRequest(Common):
    prompt: str | list[int] | list[str] | list[list[int]]
    echo: bool = False
    logprobs: int | None = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.echo or self.logprobs:
            param = "echo" if self.echo else "logprobs"
            raise ApiError(400, f"{param}: not supported by this server", param)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")


class ChatRequest(Common):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

"""OpenAI response objects of one request, completions or chat, streamed or whole.

`ChoiceText` turns one choice's token events into the text the client gets (decoded, cut at a
stop string, with log-probabilities); `Reply` builds the chunks of a stream or the whole
response from the choices. Streams carry one chunk per token (a token held back by a stop
string goes out with the token that releases it), a closing chunk per choice with its finish
reason, an optional usage chunk (`stream_options.include_usage`), then `data: [DONE]`. The
first chat chunk of each choice carries the role and the first token's content together: a
role-only chunk would look like a first token to clients that time them.
"""

from __future__ import annotations

import secrets
import time
from typing import Literal

from backend.engine_thread import TokenEvent
from backend.logprobs import TokenLogprob
from backend.stop_strings import Piece, StopMatcher

Kind = Literal["completion", "chat"]


class ChoiceText:
    """One choice's text as the client receives it."""

    def __init__(self, index: int, tokenizer, stops: list[str]):
        self.index = index
        self.tokenizer = tokenizer
        self.decoder = tokenizer.stream_decoder()
        self.matcher = StopMatcher(stops)
        self.num_tokens = 0  # generated tokens, counted in usage
        self.finish_reason: str | None = None
        self.offset = 0  # characters of text before the next piece (completions logprobs)
        self.chunks_sent = 0

    @property
    def stopped_by_string(self) -> bool:
        return self.matcher.stopped

    def feed(self, event: TokenEvent) -> list[Piece]:
        """The pieces of text this event releases; sets finish_reason when the choice ends."""
        if self.finish_reason is not None:
            return []
        pieces: list[Piece] = []
        count = len(event.token_ids)
        for i, token in enumerate(event.token_ids):
            self.num_tokens += 1
            last = event.finish_reason is not None and i == count - 1
            if last and event.finish_reason == "stop":  # the EOS that ended it: counted, never shown
                pieces += self.matcher.push(self.decoder.feed([], final=True))
                break
            logprob = event.logprobs[i] if event.logprobs else None
            pieces += self.matcher.push(self.decoder.feed([token], final=last), logprob)
            if self.matcher.stopped:
                self.finish_reason = "stop"
                return [p for p in pieces if p.text or p.payload is not None]
        if event.finish_reason is not None:
            pieces += self.matcher.flush()
            self.finish_reason = event.finish_reason
        return [p for p in pieces if p.text or p.payload is not None]


class Reply:
    """The response objects of one request."""

    def __init__(self, kind: Kind, model: str, tokenizer, prompt_tokens: int, top_logprobs: int | None):
        self.kind = kind
        self.model = model
        self.tokenizer = tokenizer
        self.prompt_tokens = prompt_tokens
        self.top_logprobs = top_logprobs
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())

    @property
    def object(self) -> str:
        return "chat.completion" if self.kind == "chat" else "text_completion"

    def usage(self, choices: list[ChoiceText]) -> dict:
        completion = sum(c.num_tokens for c in choices)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}  # fmt: skip

    # --- log-probabilities -------------------------------------------------------------------
    def _entry(self, token: int, logprob: float) -> dict:
        text = self.tokenizer.token_text(token)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    def logprobs(self, choice: ChoiceText, pieces: list[Piece]) -> dict | None:
        """The logprobs object of `pieces` (None when the request did not ask for them)."""
        if self.top_logprobs is None:
            return None
        entries = [(p, p.payload) for p in pieces if isinstance(p.payload, TokenLogprob)]
        if self.kind == "chat":
            content = [{**self._entry(lp.token, lp.logprob),
                        "top_logprobs": [self._entry(t, v) for t, v in lp.top]} for _, lp in entries]  # fmt: skip
            return {"content": content, "refusal": None}
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        offset = choice.offset
        for piece in pieces:
            lp = piece.payload
            if isinstance(lp, TokenLogprob):
                out["tokens"].append(self.tokenizer.token_text(lp.token))
                out["token_logprobs"].append(lp.logprob)
                top = {self.tokenizer.token_text(t): v for t, v in lp.top}
                top.setdefault(self.tokenizer.token_text(lp.token), lp.logprob)  # the chosen token always
                out["top_logprobs"].append(top)
                out["text_offset"].append(offset)
            offset += len(piece.text)
        return out

    # --- streams -----------------------------------------------------------------------------
    def chunk(self, choice: dict | None, include_usage: bool) -> dict:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        chunk = {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                 "choices": [] if choice is None else [choice]}  # fmt: skip
        if include_usage:
            chunk["usage"] = None
        return chunk

    def delta(self, choice: ChoiceText, text: str | None, reason: str | None, logprobs: dict | None) -> dict:
        """One choice of a stream chunk."""
        if self.kind == "chat":
            delta = {} if text is None else {"content": text}
            if choice.chunks_sent == 0 and text is not None:
                delta = {"role": "assistant", **delta}
            out = {"index": choice.index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
        else:
            out = {"index": choice.index, "text": text or "", "logprobs": logprobs, "finish_reason": reason}
        if text is not None:
            choice.chunks_sent += 1
            choice.offset += len(text)
        return out

    def token_chunks(self, choice: ChoiceText, pieces: list[Piece], include_usage: bool) -> list[dict]:
        """One chunk per released token."""
        chunks = []
        for piece in pieces:
            logprobs = self.logprobs(choice, [piece])
            chunks.append(self.chunk(self.delta(choice, piece.text, None, logprobs), include_usage))
        return chunks

    def closing_chunk(self, choice: ChoiceText, include_usage: bool) -> dict:
        return self.chunk(self.delta(choice, None, choice.finish_reason, None), include_usage)

    def usage_chunk(self, choices: list[ChoiceText]) -> dict:
        return {**self.chunk(None, False), "usage": self.usage(choices)}

    def echo_chunk(self, choice: ChoiceText, prompt_text: str, include_usage: bool) -> dict:
        """Completions with echo: the prompt's text opens each choice's stream."""
        out = {"index": choice.index, "text": prompt_text, "logprobs": None, "finish_reason": None}
        choice.offset += len(prompt_text)
        return self.chunk(out, include_usage)

    # --- whole responses ---------------------------------------------------------------------
    def whole(self, choices: list[ChoiceText], texts: list[list[Piece]], echo: str | None) -> dict:
        out = []
        for choice, pieces in zip(choices, texts):
            text = (echo or "") + "".join(p.text for p in pieces)
            choice.offset = len(echo or "")
            logprobs = self.logprobs(choice, pieces)
            if self.kind == "chat":
                out.append({"index": choice.index, "message": {"role": "assistant", "content": text},
                            "logprobs": logprobs, "finish_reason": choice.finish_reason})  # fmt: skip
            else:
                out.append({"index": choice.index, "text": text, "logprobs": logprobs,
                            "finish_reason": choice.finish_reason})  # fmt: skip
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "choices": out, "usage": self.usage(choices)}  # fmt: skip

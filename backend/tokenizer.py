"""A self-contained byte-level tokenizer, so the server can take and return text with any model.

Ids 0..2 are special (PAD, BOS, EOS); id 3 + b is the byte b of the UTF-8 text. Ids past the byte
range (most of a real vocabulary) are tokens this tokenizer cannot spell: each decodes to U+FFFD,
so every generated token shows in a text stream, one character per token. Special ids decode to
nothing.

Chat messages are rendered with this template (BOS first, then one block per message, then the
assistant's header, which the model continues):

    <|system|>\\n{content}\\n<|user|>\\n{content}\\n<|assistant|>\\n
"""

from __future__ import annotations

import codecs

from simulator.errors import ConfigError

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
BYTE_OFFSET = 3
REPLACEMENT = "\ufffd"


class ByteTokenizer:
    def __init__(self, vocab_size: int):
        if vocab_size < BYTE_OFFSET + 256:
            raise ConfigError(
                f"vocab_size: got {vocab_size}; the byte tokenizer needs at least {BYTE_OFFSET + 256} ids"
            )
        self.vocab_size = vocab_size
        self.bos_token_id = BOS_ID
        self.eos_token_id = EOS_ID

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = [b + BYTE_OFFSET for b in text.encode("utf-8")]
        return [BOS_ID, *ids] if add_bos else ids

    def decode(self, ids: list[int]) -> str:
        return self.stream_decoder().feed(ids, final=True)

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder()

    def render_chat(self, messages: list[tuple[str, str]]) -> str:
        """The template above, for (role, content) pairs."""
        return "".join(f"<|{role}|>\n{content}\n" for role, content in messages) + "<|assistant|>\n"

    def encode_chat(self, messages: list[tuple[str, str]]) -> list[int]:
        return self.encode(self.render_chat(messages))


class StreamDecoder:
    """Decodes a request's tokens as they arrive: a character split over several byte tokens
    appears with its last byte; bytes that can never form valid UTF-8 become U+FFFD."""

    def __init__(self):
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids: list[int], final: bool = False) -> str:
        parts = []
        for token in ids:
            if BYTE_OFFSET <= token < BYTE_OFFSET + 256:
                parts.append(self._utf8.decode(bytes([token - BYTE_OFFSET])))
            elif token >= BYTE_OFFSET + 256:
                parts.append(self._utf8.decode(b"", final=True) + REPLACEMENT)
        if final:
            parts.append(self._utf8.decode(b"", final=True))
        return "".join(parts)

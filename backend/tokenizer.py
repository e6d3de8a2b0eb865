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
from pathlib import Path

from simulator.common.errors import ConfigError

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

    def encode_chat(self, messages: list[tuple[str, str]]) -> list[int]:
        return self.encode(render_chat(messages))


def render_chat(messages: list[tuple[str, str]]) -> str:
    """The chat template above, for (role, content) pairs."""
    return "".join(f"<|{role}|>\n{content}\n" for role, content in messages) + "<|assistant|>\n"


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


class HFTokenizer:
    """A checkpoint's own tokenizer (Hugging Face `tokenizer.json`), with the interface above.

    Chat prompts use the tokenizer's chat template when it has one, the template above otherwise.
    """

    def __init__(self, tokenizer):
        self.hf = tokenizer
        self.vocab_size = len(tokenizer)
        self.bos_token_id = tokenizer.bos_token_id
        self.eos_token_id = tokenizer.eos_token_id

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        return self.hf.encode(text, add_special_tokens=add_bos)

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=True)

    def stream_decoder(self) -> HFStreamDecoder:
        return HFStreamDecoder(self.hf)

    def encode_chat(self, messages: list[tuple[str, str]]) -> list[int]:
        if getattr(self.hf, "chat_template", None):
            chat = [{"role": role, "content": content} for role, content in messages]
            ids = self.hf.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
            return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        return self.encode(render_chat(messages))


class HFStreamDecoder:
    """Incremental detokenisation: decode a short window of recent tokens and emit what it adds,
    holding text back while it ends in an incomplete character."""

    def __init__(self, tokenizer):
        self.hf = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # the window starts here
        self.read = 0  # tokens already turned into emitted text

    def feed(self, ids: list[int], final: bool = False) -> str:
        self.ids += ids
        before = self.hf.decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        after = self.hf.decode(self.ids[self.prefix :], skip_special_tokens=True)
        if len(after) <= len(before) or (after.endswith(REPLACEMENT) and not final):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before) :]


def load_tokenizer(checkpoint: str | None, vocab_size: int) -> ByteTokenizer | HFTokenizer:
    """The checkpoint's tokenizer when the folder has one (and transformers is installed), the
    byte-level tokenizer otherwise."""
    if checkpoint is not None and (Path(checkpoint) / "tokenizer.json").is_file():
        try:
            from transformers import AutoTokenizer
        except ImportError:
            import warnings

            warnings.warn("transformers is not installed: text uses the byte-level tokenizer", stacklevel=2)
        else:
            return HFTokenizer(AutoTokenizer.from_pretrained(checkpoint))
    return ByteTokenizer(vocab_size)

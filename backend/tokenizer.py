"""The server's tokenizers: the character tokenizer of catalog models, or a checkpoint's own.

Catalog models (random weights) use `backend.char_tokenizer`: every id is one character of text,
so whatever the model generates streams as one character per token and reads back as the same
tokens. Special ids emitted in the middle of an output show as their text (`<s>`, `</s>`,
`<unk>`), which reads back as the same id too.

Chat messages are rendered with this template (BOS first, then one block per message, then the
assistant's header, which the model continues); the exported tokenizer carries it as its Jinja
chat template:

    <|system|>\\n{content}\\n<|user|>\\n{content}\\n<|assistant|>\\n
"""

from __future__ import annotations

from pathlib import Path

from backend import char_tokenizer

REPLACEMENT = "\ufffd"


class CharTokenizer:
    """The character tokenizer of a model with `vocab_size` ids (a `tokenizers.Tokenizer`)."""

    def __init__(self, vocab_size: int):
        self.tok = char_tokenizer.build(vocab_size)
        self.vocab_size = vocab_size
        self.bos_token_id = char_tokenizer.BOS_ID
        self.eos_token_id = char_tokenizer.EOS_ID
        self._texts = char_tokenizer.vocabulary(vocab_size)

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        return self.tok.encode(text, add_special_tokens=add_bos).ids

    def decode(self, ids: list[int]) -> str:
        return "".join(self._texts[t] for t in ids)

    def token_text(self, token: int) -> str:
        return self._texts[token]

    def stream_decoder(self) -> CharStreamDecoder:
        return CharStreamDecoder(self._texts)

    def encode_chat(self, messages: list[tuple[str, str]]) -> list[int]:
        return self.encode(render_chat(messages))


def render_chat(messages: list[tuple[str, str]]) -> str:
    """The chat template above, for (role, content) pairs."""
    return "".join(f"<|{role}|>\n{content}\n" for role, content in messages) + "<|assistant|>\n"


class CharStreamDecoder:
    """Each token's text as it arrives: nothing is ever held back."""

    def __init__(self, texts: list[str]):
        self._texts = texts

    def feed(self, ids: list[int], final: bool = False) -> str:
        return "".join(self._texts[t] for t in ids)


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

    def token_text(self, token: int) -> str:
        return self.hf.decode([token])

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


def load_tokenizer(checkpoint: str | None, vocab_size: int) -> CharTokenizer | HFTokenizer:
    """The checkpoint's tokenizer when the folder has one (and transformers is installed), the
    character tokenizer otherwise."""
    if checkpoint is not None and (Path(checkpoint) / "tokenizer.json").is_file():
        try:
            from transformers import AutoTokenizer
        except ImportError:
            import warnings

            warnings.warn("transformers is not installed: text uses the character tokenizer", stacklevel=2)
        else:
            return HFTokenizer(AutoTokenizer.from_pretrained(checkpoint))
    return CharTokenizer(vocab_size)

"""A character-level Hugging Face tokenizer for models served with random weights.

Every id is exactly one token of text: ids 0..2 are the specials `<unk>`, `<s>`, `</s>` (Llama's
layout), id 3 + c is the ASCII character c, and the ids after those are single characters, first
the printable characters of Unicode 3.2 in code-point order (letters, digits, punctuation and
symbols of every script, no spaces, controls or combining marks; a fixed old table, so the same
vocabulary comes out of every Python version), then private-use characters. A BPE model without
merges maps each character to its id, so decoding any ids and encoding the text again gives the
same ids back, one per character: a load tool that counts tokens by re-tokenizing the text it
received counts what the model generated. Characters outside the vocabulary encode to `<unk>`.

The same `tokenizers.Tokenizer` is used by the server and written as a `tokenizer.json` +
`tokenizer_config.json` folder that load tools load by path, offline.
"""

from __future__ import annotations

import json
import unicodedata
from functools import lru_cache
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, processors

from simulator.common.errors import ConfigError
from simulator.common.files import write_text_atomic

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
SPECIALS = (UNK, BOS, EOS)
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
ASCII_OFFSET = len(SPECIALS)  # id of the character "\x00"; ASCII character c has id 3 + ord(c)
MIN_VOCAB = ASCII_OFFSET + 128
# Marks a folder this module wrote, so exporting again may replace it and nothing else.
MARKER_KEY = "llmsim_character_tokenizer"
MARKER_VERSION = 1

_PRINTABLE = {"Lu", "Ll", "Lt", "Lm", "Lo", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po",
              "Sm", "Sc", "Sk", "So"}  # fmt: skip
# Hangul conjoining jamo compose into syllables under NFC, so two of them could read back as one.
_JAMO = range(0x1100, 0x1200)
_PRIVATE_USE = (range(0xE000, 0xF900), range(0xF0000, 0xFFFFE), range(0x100000, 0x10FFFE))

CHAT_TEMPLATE = (  # the server's own chat format (backend.tokenizer.render_chat), in Jinja
    "{{ bos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


@lru_cache(maxsize=1)
def _unicode_characters() -> tuple[str, ...]:
    table = unicodedata.ucd_3_2_0
    chars = []
    for cp in range(0xA1, 0x110000):
        if 0xD800 <= cp < 0xE000 or cp in _JAMO:
            continue
        c = chr(cp)
        if table.category(c) in _PRINTABLE and table.normalize("NFC", c) == c:
            chars.append(c)
    return tuple(chars)


def vocabulary(vocab_size: int) -> list[str]:
    """The token text of each id, 0..vocab_size-1."""
    if vocab_size < MIN_VOCAB:
        raise ConfigError(f"vocab_size: got {vocab_size}; the character tokenizer needs at least {MIN_VOCAB} ids "
                          "(3 specials and the 128 ASCII characters)")  # fmt: skip
    tokens = [*SPECIALS, *map(chr, range(128))]
    need = vocab_size - len(tokens)
    tokens += _unicode_characters()[:need]
    for block in _PRIVATE_USE:
        if len(tokens) >= vocab_size:
            break
        tokens += map(chr, block[: vocab_size - len(tokens)])
    if len(tokens) < vocab_size:
        raise ConfigError(f"vocab_size: got {vocab_size}; the character tokenizer has at most {len(tokens)} ids")
    return tokens


@lru_cache(maxsize=8)
def build(vocab_size: int) -> Tokenizer:
    """The tokenizer of a model with `vocab_size` ids; encoding adds `<s>` first."""
    vocab = {token: i for i, token in enumerate(vocabulary(vocab_size))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tokenizer.decoder = decoders.Fuse()  # join token texts with nothing in between
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, BOS_ID)]
    )
    return tokenizer


def config(model_max_length: int) -> dict:
    """tokenizer_config.json: what transformers' AutoTokenizer needs besides tokenizer.json."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,  # decode must not edit the text (" ." to ".")
        "add_bos_token": True,
        "add_eos_token": False,
        "chat_template": CHAT_TEMPLATE,
        MARKER_KEY: MARKER_VERSION,
    }


def export(vocab_size: int, model_max_length: int, folder: str | Path) -> Path:
    """Write the tokenizer folder (tokenizer.json, tokenizer_config.json, special_tokens_map.json).

    Files already there with the same content are left as they are; a folder holding a tokenizer
    this module did not write is an error, never overwritten."""
    folder = Path(folder)
    files = {
        "tokenizer.json": build(vocab_size).to_str(),
        "tokenizer_config.json": json.dumps(config(model_max_length), indent=2, ensure_ascii=False) + "\n",
        "special_tokens_map.json": json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": UNK}, indent=2) + "\n",
    }
    _check_ours(folder, files)
    for name, text in files.items():
        path = folder / name
        if not (path.is_file() and path.read_text(encoding="utf-8") == text):
            write_text_atomic(path, text)
    return folder


def _check_ours(folder: Path, files: dict[str, str]) -> None:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"tokenizer folder: {folder} exists and is not a folder")
    existing = [name for name in files if (folder / name).exists()]
    if not existing:
        return
    try:
        ours = MARKER_KEY in json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise ConfigError(f"tokenizer folder: {folder} already holds {', '.join(existing)} that llmsim did not "
                          "write; choose another folder")  # fmt: skip


def run_cli(args) -> int:
    """`llmsim export-tokenizer MODEL DIR`."""
    from simulator.spec import get_model

    spec = get_model(args.model)
    folder = export(spec.vocab_size, spec.max_context, args.dir)
    print(f"tokenizer of {spec.name} ({spec.vocab_size:,} ids, one character each): {folder.resolve()}")
    return 0

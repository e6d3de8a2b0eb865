"""Tokenizers of the server: the byte-level one, and a checkpoint's own tokenizer."""

import pytest

from backend.tokenizer import BOS_ID, EOS_ID, ByteTokenizer, HFTokenizer, load_tokenizer
from simulator.common.errors import ConfigError


def test_bytes_round_trip_with_bos():
    tok = ByteTokenizer(300)
    ids = tok.encode("héllo €")
    assert ids[0] == BOS_ID and len(ids) == 1 + len("héllo €".encode())
    assert tok.decode(ids) == "héllo €"
    assert tok.encode("a", add_bos=False) == [ord("a") + 3]


def test_streaming_holds_back_split_characters():
    tok = ByteTokenizer(300)
    ids = tok.encode("a€b", add_bos=False)  # € is three bytes
    decoder = tok.stream_decoder()
    pieces = [decoder.feed([t]) for t in ids]
    assert pieces == ["a", "", "", "€", "b"]


def test_ids_past_the_bytes_show_as_replacement_and_specials_vanish():
    tok = ByteTokenizer(8192)
    assert tok.decode([5000, EOS_ID, ord("x") + 3, 7000]) == "\ufffdx\ufffd"
    decoder = tok.stream_decoder()
    # A dangling lead byte is flushed as a replacement when an unspellable token follows it.
    assert decoder.feed([0xE2 + 3]) == "" and decoder.feed([6000]) == "\ufffd\ufffd"
    with pytest.raises(ConfigError, match="vocab_size"):
        ByteTokenizer(100)


def test_chat_template():
    tok = ByteTokenizer(300)
    ids = tok.encode_chat([("system", "S"), ("user", "Hi")])
    assert tok.decode(ids) == "<|system|>\nS\n<|user|>\nHi\n<|assistant|>\n"


def test_a_checkpoint_tokenizer_is_used_when_the_folder_has_one(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = ["<s>", "</s>", "<unk>", "hello", "world", "again"]
    model = tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>")
    raw = tokenizers.Tokenizer(model)
    raw.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    raw.decoder = tokenizers.decoders.WordPiece()  # joins words with spaces
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(tmp_path)

    tok = load_tokenizer(str(tmp_path), vocab_size=1000)
    assert isinstance(tok, HFTokenizer) and tok.eos_token_id == 1
    ids = tok.encode("hello world again", add_bos=False)
    assert ids == [3, 4, 5]
    decoder = tok.stream_decoder()
    streamed = "".join(decoder.feed([t]) for t in ids) + decoder.feed([], final=True)
    assert streamed == tok.decode(ids) == "hello world again"
    assert isinstance(load_tokenizer(None, 300), ByteTokenizer)
    assert isinstance(load_tokenizer(str(tmp_path / "missing"), 300), ByteTokenizer)

"""Tokenizers of the server: the character tokenizer (and its exported folder), and a checkpoint's own."""

import json
import random

import pytest
from tokenizers import Tokenizer

from backend import char_tokenizer
from backend.tokenizer import CharTokenizer, HFTokenizer, load_tokenizer, render_chat
from simulator.cli import main
from simulator.common.errors import ConfigError


def test_every_id_reads_back_as_itself_in_any_order():
    tok = CharTokenizer(8192)
    ids = list(range(8192)) * 2
    random.Random(0).shuffle(ids)
    text = tok.decode(ids)
    assert tok.encode(text, add_bos=False) == ids  # re-tokenizing output counts what was generated
    assert all(len(tok.token_text(t)) == 1 for t in range(3, 8192))  # one character per token
    assert [tok.token_text(t) for t in range(3)] == ["<unk>", "<s>", "</s>"]


def test_the_vocabulary_is_fixed():
    vocab = char_tokenizer.vocabulary(8192)
    assert vocab[3 + ord("A")] == "A" and vocab[3 + ord("\n")] == "\n"
    assert vocab[131] == "\u00a1" and "é" in vocab and "€" in vocab
    assert vocab[8191] == "\u34d8"  # Unicode 3.2's table, whatever this Python's Unicode version
    assert not any(c.isspace() for c in vocab[131:]) and len(set(vocab)) == 8192
    big = char_tokenizer.vocabulary(152064)  # Qwen's vocabulary: private-use characters at the end
    assert big[-1] == chr(0xF0000 + 152064 - 131 - 93026 - 6400 - 1) and len(set(big)) == 152064
    with pytest.raises(ConfigError, match="at least 131"):
        char_tokenizer.vocabulary(100)
    with pytest.raises(ConfigError, match="at most"):
        char_tokenizer.vocabulary(300_000)


def test_text_encodes_one_token_per_character_after_bos():
    tok = CharTokenizer(8192)
    ids = tok.encode("héllo €")
    assert ids[0] == tok.bos_token_id and len(ids) == 1 + len("héllo €")
    assert tok.decode(ids[1:]) == "héllo €"
    assert tok.encode("a", add_bos=False) == [ord("a") + 3]
    assert tok.encode("中", add_bos=False) == [char_tokenizer.UNK_ID]  # not among 8192 characters
    decoder = tok.stream_decoder()
    assert [decoder.feed([t]) for t in ids[1:]] == list("héllo €")  # nothing held back


def test_chat_template():
    tok = CharTokenizer(300)
    ids = tok.encode_chat([("system", "S"), ("user", "Hi")])
    assert tok.decode(ids) == "<s><|system|>\nS\n<|user|>\nHi\n<|assistant|>\n"


def test_the_exported_folder_is_the_servers_tokenizer(tmp_path):
    folder = char_tokenizer.export(8192, 2048, tmp_path / "tok")
    assert sorted(p.name for p in folder.iterdir()) == ["special_tokens_map.json", "tokenizer.json",
                                                        "tokenizer_config.json"]  # fmt: skip
    loaded = Tokenizer.from_file(str(folder / "tokenizer.json"))
    served = CharTokenizer(8192)
    ids = random.Random(1).choices(range(8192), k=500)
    text = served.decode(ids)
    assert loaded.encode(text, add_special_tokens=False).ids == ids
    assert loaded.encode("Hello").ids == served.encode("Hello")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 2048 and config["eos_token"] == "</s>"

    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))  # what load tools do
    assert hf.encode(text, add_special_tokens=False) == ids and hf.decode(ids) == text
    assert hf.encode("Hello") == served.encode("Hello")
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]
    rendered = hf.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == "<s>" + render_chat([("system", "S"), ("user", "Hi")])


def test_export_rewrites_only_its_own_folder(tmp_path):
    folder = char_tokenizer.export(300, 128, tmp_path / "tok")
    char_tokenizer.export(400, 128, folder)  # ours: replaced
    assert len(Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab()) == 400
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "tokenizer.json").write_text("{}")
    with pytest.raises(ConfigError, match="did not write"):
        char_tokenizer.export(300, 128, foreign)
    assert (foreign / "tokenizer.json").read_text() == "{}"


def test_export_tokenizer_command(tmp_path, capsys):
    assert main(["export-tokenizer", "llama-20m", str(tmp_path / "t")]) == 0
    assert str(tmp_path / "t") in capsys.readouterr().out
    assert len(Tokenizer.from_file(str(tmp_path / "t" / "tokenizer.json")).get_vocab()) == 8192
    assert main(["export-tokenizer", "llama-nope", str(tmp_path / "u")]) == 2
    assert "llama-nope" in capsys.readouterr().err and not (tmp_path / "u").exists()


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
    assert isinstance(load_tokenizer(None, 300), CharTokenizer)
    assert isinstance(load_tokenizer(str(tmp_path / "missing"), 300), CharTokenizer)

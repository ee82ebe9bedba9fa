import json

import pytest

from odin.tokenizers import (
    CHAR_VOCAB_SIZE,
    BPETokenizer,
    CharTokenizer,
    TokenizerFileError,
    load_tokenizer,
)


def test_char_ids_are_stable_and_documented():
    tokenizer = CharTokenizer()
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.end_id) == (0, 1, 2)
    assert tokenizer.encode("0") == [3]
    assert tokenizer.encode("9") == [12]
    assert tokenizer.encode("a") == [13]
    assert tokenizer.encode("A") == [39]
    assert tokenizer.encode(" ") == [65]
    assert tokenizer.vocab_size == CHAR_VOCAB_SIZE == len(set(tokenizer.vocab))
    assert 90 <= tokenizer.vocab_size <= 110


def test_char_round_trip_covers_task_symbols():
    tokenizer = CharTokenizer()
    text = "def f(x):\n\treturn [x*2, x/3, x%4] # ok!  {a<b>c} 'q' \"r\" _^~|&`@$\\ 3×4÷2=6?;."
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text


def test_char_unknown_character_names_char_and_position():
    with pytest.raises(ValueError, match=r"'é'.*position 3"):
        CharTokenizer().encode("abcé")


def test_char_decode_skips_or_shows_special_tokens():
    tokenizer = CharTokenizer()
    ids = [tokenizer.bos_id, *tokenizer.encode("1+1="), tokenizer.end_id, tokenizer.pad_id]
    assert tokenizer.decode(ids) == "1+1="
    assert tokenizer.decode(ids, skip_special=False) == "<bos>1+1=<end><pad>"
    with pytest.raises(ValueError, match="out of range"):
        tokenizer.decode([tokenizer.vocab_size])


def test_char_save_load_and_kind_detection(tmp_path):
    tokenizer = CharTokenizer()
    tokenizer.save(tmp_path / "tokenizer.json")
    data = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    assert data["odin_kind"] == "char"
    loaded = load_tokenizer(tmp_path)  # a directory means its tokenizer.json
    assert isinstance(loaded, CharTokenizer)
    assert loaded.vocab == tokenizer.vocab
    assert CharTokenizer.load(tmp_path / "tokenizer.json").encode("42") == tokenizer.encode("42")


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    corpus = ["the quick brown fox jumps over the lazy dog"] * 50 + ["hello world, hello odin"] * 50
    return BPETokenizer.train(iter(corpus), vocab_size=300)


def test_bpe_special_ids_and_round_trip(bpe):
    assert (bpe.pad_id, bpe.bos_id, bpe.end_id) == (0, 1, 2)
    assert 259 <= bpe.vocab_size <= 300
    text = "hello brown fox — ünïcode ✓"
    ids = bpe.encode(text)
    assert all(0 <= token < bpe.vocab_size for token in ids)
    assert bpe.decode(ids) == text
    # merges were learned: a frequent word is shorter than its byte count
    assert len(bpe.encode("hello")) < len("hello")


def test_bpe_save_load(tmp_path, bpe):
    bpe.save(tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert isinstance(loaded, BPETokenizer)
    assert loaded.encode("lazy dog") == bpe.encode("lazy dog")
    assert loaded.vocab_size == bpe.vocab_size
    with pytest.raises(TokenizerFileError, match="BPE"):
        CharTokenizer.load(tmp_path / "tokenizer.json")


def test_bpe_vocab_too_small_rejected():
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 259"):
        BPETokenizer.train(["abc"], vocab_size=100)


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        load_tokenizer(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="invalid JSON"):
        load_tokenizer(bad)
    bad.write_text('{"something": 1}', encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="neither an 'odin_kind' nor a 'model'"):
        load_tokenizer(bad)
    bad.write_text('{"odin_kind": "char", "format_version": 1, "vocab": ["a", "b"]}', encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="must start with"):
        load_tokenizer(bad)
    bad.write_text('{"model": {"type": "BPE"}}', encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="not a valid HF tokenizer"):
        load_tokenizer(bad)

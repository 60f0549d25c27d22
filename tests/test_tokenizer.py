"""WordPiece tokenizer with ActBERT's [ACT] / [REGION] tokens."""

from __future__ import annotations

import pytest

from actbert.text.tokenizer import ACT_TOKEN, REGION_TOKEN, TokenizerError, default_tokenizer_path, load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


def test_special_tokens_are_appended_after_the_word_vocabulary(tokenizer):
    words = len((default_tokenizer_path() / "vocab.txt").read_text(encoding="utf-8").splitlines())
    assert tokenizer.vocab_size == words + 2
    assert (tokenizer.act_id, tokenizer.region_id) == (words, words + 1)
    assert tokenizer.convert_ids_to_tokens([tokenizer.act_id, tokenizer.region_id]) == [ACT_TOKEN, REGION_TOKEN]
    # standard BERT ids of the uncased vocabulary
    assert (tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (0, 101, 102, 103)
    assert len(tokenizer.special_ids) == 6


def test_encode_has_no_specials_and_round_trips(tokenizer):
    ids = tokenizer.encode("Cut the Onions, then add salt.")
    assert tokenizer.cls_id not in ids and tokenizer.sep_id not in ids
    assert tokenizer.convert_ids_to_tokens(ids)[:3] == ["cut", "the", "onions"]
    assert tokenizer.decode(ids) == "cut the onions, then add salt."
    # a rare word is split into word pieces, and still decodes back
    pieces = tokenizer.encode("unbelievably")
    assert len(pieces) > 1 and tokenizer.decode(pieces) == "unbelievably"


def test_special_tokens_are_never_split_or_lowercased(tokenizer):
    ids = tokenizer.encode(f"{ACT_TOKEN} stir {REGION_TOKEN}")
    assert ids[0] == tokenizer.act_id and ids[-1] == tokenizer.region_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "stir"


def test_encode_gives_the_hugging_face_tokenizers_ids(tokenizer):
    # encode calls a copy of the Rust backend directly; transformers' own encode is the reference.
    # The long text runs past the 128 word pieces that tokenizer.json truncates and pads to.
    assert tokenizer._words is not None  # the fast path is the one under test
    long = " ".join(["now we slowly stir the sauce until it thickens"] * 30)
    texts = ["", "   ", "Cut the Onions, then add salt.", "Crème brûlée, naïve café", "日本語のテキスト",
             "emoji 🙂 and tabs\tand\nnewlines", f"an {ACT_TOKEN} inside and {REGION_TOKEN}", "[MASK] [CLS] [sep]",
             "unbelievably-hyphenated words... (parenthesised)", long]
    for text in texts:
        want = tokenizer.hf.encode(text, add_special_tokens=False)
        assert tokenizer.encode(text) == want, text
    assert len(tokenizer.encode(long)) > 128


def test_bare_vocab_file_gives_the_same_ids(tokenizer, tmp_path):
    from_file = load_tokenizer(default_tokenizer_path() / "vocab.txt")
    text = "whisk the eggs unbelievably fast"
    assert from_file.encode(text) == tokenizer.encode(text)
    assert from_file.act_id == tokenizer.act_id
    # saved tokenizer (added tokens included) loads back with the same ids
    tokenizer.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert (again.vocab_size, again.act_id, again.region_id) == (tokenizer.vocab_size, tokenizer.act_id, tokenizer.region_id)
    assert again.encode(text) == tokenizer.encode(text)


def test_bad_paths_name_the_file(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(TokenizerError, match="neither vocab.txt nor tokenizer.json"):
        load_tokenizer(tmp_path)
    bad = tmp_path / "vocab.txt"
    bad.write_text("hello\nworld\n")
    with pytest.raises(TokenizerError, match="vocab.txt"):
        load_tokenizer(bad)

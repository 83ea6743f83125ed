"""Tokenizers are lossless, keep every code point as data, and name what they cannot encode."""

from __future__ import annotations

import pytest

from charrnn.data.tokenizer import UNK, Tokenizer, UnknownTokenError

CHAR_TEXTS = {
    "ascii": "Hello, World! 123\nThe quick brown fox; jumps (over) the lazy dog?\n",
    "japanese": "吾輩は猫である。名前はまだ無い。\nどこで生れたかとんと見当がつかぬ。",
    "cyrillic": "Мой дядя самых честных правил,\nКогда не в шутку занемог",
    "emoji": "I 🐍 love 🎉 snakes 🐍🐍 and 👩‍💻 code 🇯🇵",
    "crlf": "line one\r\nline two\r\n\r\nline four\r\n",
    "tabs": "col\tcol2\t\tcol4\n\tindented\n",
    "bom": "\ufeffStarts with a byte order mark\nand \ufeff one inside",
    "lone_cr_and_nul": "old mac\rline\x00nul\x0bvt\x0cff\u2028ls",
}


@pytest.mark.parametrize("name", CHAR_TEXTS)
def test_char_round_trip(name):
    text = CHAR_TEXTS[name]
    tok = Tokenizer.build(text, "char")
    ids = tok.encode(text)
    assert len(ids) == len(text)  # one token per code point
    assert tok.decode(ids) == text


def test_char_vocab_keeps_cr_tab_and_bom_as_tokens():
    text = CHAR_TEXTS["crlf"] + CHAR_TEXTS["tabs"] + CHAR_TEXTS["bom"]
    tok = Tokenizer.build(text, "char")
    for ch in ("\r", "\n", "\t", "\ufeff"):
        assert ch in tok.vocab
    assert tok.encode("\ufeff") == [tok.stoi["\ufeff"]]
    assert tok.decode(tok.encode("a\r\nb")) == "a\r\nb"  # CR is not swallowed


def test_char_vocab_is_the_sorted_set_of_characters():
    tok = Tokenizer.build("banana", "char")
    assert tok.vocab == ["a", "b", "n"]
    assert len(tok) == 3
    assert tok.encode("nab") == [2, 0, 1]


WORD_TEXT = (
    "Hello, world! This is a test.\n\n"
    "  Indented line, with   three spaces.\n"
    "Tabs\tare\there; and CRLF\r\nlines too... don't split me?\n"
    "Numbers 3.14 and snake_case and Ünïcödé wörds 日本語.\n"
)


def test_word_round_trip_keeps_whitespace_and_newlines():
    tok = Tokenizer.build(WORD_TEXT, "word")
    ids = tok.encode(WORD_TEXT)
    assert tok.decode(ids) == WORD_TEXT
    pieces = [tok.vocab[i] for i in ids]
    # Whitespace runs are tokens of their own, so decoding needs no spaces added around punctuation.
    assert "\n\n  " in pieces and "   " in pieces and "\t" in pieces and "\r\n" in pieces
    assert "Hello" in pieces and "," in pieces
    assert tok.decode([tok.stoi["Hello"], tok.stoi[","], tok.stoi[" "], tok.stoi["world"]]) == "Hello, world"


def test_word_tokens_partition_the_text():
    tok = Tokenizer.build(WORD_TEXT, "word")
    assert "".join(tok.split(WORD_TEXT)) == WORD_TEXT
    assert tok.vocab[0] == UNK


def test_word_max_vocab_maps_rare_words_to_unk():
    text = "a a a a b b b c c d . . . . .\n"
    tok = Tokenizer.build(text, "word", max_vocab=4)
    assert len(tok) == 4
    assert tok.vocab[0] == UNK
    # The three most frequent tokens: ' ', '.', 'a' (counts 13, 5, 4); b, c, d become <unk>.
    assert set(tok.vocab) == {UNK, " ", ".", "a"}
    ids = tok.encode("a b c", unknown="unk")
    assert tok.decode(ids) == f"a {UNK} {UNK}"


def test_word_min_count_maps_rare_words_to_unk():
    text = "cat cat dog cat bird dog\n"
    tok = Tokenizer.build(text, "word", min_count=2)
    assert "cat" in tok.stoi and "dog" in tok.stoi
    assert "bird" not in tok.stoi and "\n" not in tok.stoi  # each seen once
    assert tok.decode(tok.encode("cat bird dog", unknown="unk")) == f"cat {UNK} dog"


@pytest.mark.parametrize("level", ["char", "word"])
def test_to_dict_from_dict_round_trip(level):
    tok = Tokenizer.build(WORD_TEXT + CHAR_TEXTS["emoji"], level)
    d = tok.to_dict()
    assert d["level"] == level
    again = Tokenizer.from_dict(d)
    assert again.vocab == tok.vocab and again.level == tok.level
    assert again.encode(WORD_TEXT) == tok.encode(WORD_TEXT)
    assert again.unk_id == tok.unk_id


def test_unknown_characters_error_names_them():
    tok = Tokenizer.build("abc abc\n", "char")
    with pytest.raises(UnknownTokenError) as e:
        tok.encode("abz cé")
    msg = str(e.value)
    assert "'z'" in msg and "'é'" in msg
    assert "'a'" not in msg  # only the unseen ones are named
    assert "--unknown skip" in msg


def test_unknown_error_lists_many_characters_briefly():
    tok = Tokenizer.build("a", "char")
    with pytest.raises(UnknownTokenError, match="and 2 more"):
        tok.encode("bcdefghijk")  # 10 unseen: 8 shown


def test_unknown_skip_drops_unseen_characters():
    tok = Tokenizer.build("abc abc\n", "char")
    assert tok.decode(tok.encode("abz cé", unknown="skip")) == "ab c"


def test_word_unknown_error_and_skip():
    tok = Tokenizer.build("the cat sat\n", "word")
    with pytest.raises(UnknownTokenError, match="'dog'"):
        tok.encode("the dog sat")
    assert tok.decode(tok.encode("the dog sat", unknown="skip")) == "the  sat"


def test_char_level_has_no_unk_so_unk_mode_still_errors():
    tok = Tokenizer.build("abc", "char")
    with pytest.raises(UnknownTokenError, match="'x'"):
        tok.encode("ax", unknown="unk")


def test_empty_corpus_is_an_error():
    from charrnn.errors import CharrnnError

    with pytest.raises(CharrnnError, match="empty"):
        Tokenizer.build("", "char")

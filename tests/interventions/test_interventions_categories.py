"""Token category maps: coarse lexical classes, the shipped lexicon, user JSON files."""

from __future__ import annotations

import json

import pytest

from tti_ray.interventions.categories import (
    COARSE_CLASSES,
    SHIPPED_LEXICON,
    CategoryError,
    categorize,
    category_map,
    coarse_class,
    read_lexicon,
    tokenizer_for,
)


@pytest.mark.parametrize(
    "token, cls",
    [
        (",", "punctuation"),
        ("!\"", "punctuation"),
        (" ", "whitespace"),
        ("\n\n", "whitespace"),
        (" 42", "number"),
        ("3", "number"),
        (" Lily", "capitalized"),
        ("Tim", "capitalized"),
        (" the", "function"),
        ("The", "function"),
        ("'s", "function"),
        (" cat", "content"),
        ("ing", "content"),
        ("<unk>", "other"),
        ("<|endoftext|>", "other"),
        ("\ufffd", "other"),
    ],
)
def test_coarse_classes(token, cls):
    assert coarse_class(token) == cls


def test_shipped_lexicon_is_well_formed_and_large_enough():
    lex = read_lexicon(SHIPPED_LEXICON)  # validates: no word in two categories
    assert {"animals", "people", "family", "colors", "emotions", "actions", "places",
            "objects_toys", "food", "nature", "time", "body", "qualities"} <= set(lex)
    assert sum(len(v) for v in lex.values()) >= 300


def test_lexicon_matches_stripped_lowercase_words():
    words = [" dog", " Mom", "Red", " happy", " ran", " xyzzy", "<unk>", " park"]
    cm = categorize(words, "lexicon")
    assert cm.names[-1] == "other"
    got = [cm.names[i] for i in cm.ids.tolist()]
    assert got == ["animals", "family", "colors", "emotions", "actions", "other", "other", "places"]


def test_user_json_categories(tmp_path):
    path = tmp_path / "cats.json"
    path.write_text(json.dumps({"pets": ["dog", "Cat"], "greetings": ["hello"]}))
    cm = categorize([" cat", "Hello", " tree"], str(path))
    assert cm.names == ("pets", "greetings", "other")
    assert cm.ids.tolist() == [0, 1, 2]
    assert cm.counts() == {"pets": 1, "greetings": 1, "other": 1}


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "invalid JSON"),
        ("[]", "non-empty JSON object"),
        ('{"other": ["x"]}', "reserved"),
        ('{"a": ["x"], "b": ["X"]}', "in both"),
        ('{"a": "x"}', "list of non-empty strings"),
    ],
)
def test_bad_user_json_is_an_error_naming_the_file(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(CategoryError, match=match):
        read_lexicon(path)
    with pytest.raises(CategoryError, match="cannot read"):
        read_lexicon(tmp_path / "missing.json")


def test_category_map_over_the_model_vocabulary(fake_tokens, gpt2_tokenizer):
    # model ids: 0 " dog", 1 " the", 2 ",", 3 " Lily", 4 " 3", 5 "\n", ..., 63 UNK
    cm = category_map("coarse", fake_tokens, gpt2_tokenizer)
    assert cm.names == COARSE_CLASSES and cm.ids.shape == (64,)
    got = [cm.names[i] for i in cm.ids[:6].tolist()]
    assert got == ["content", "function", "punctuation", "capitalized", "number", "whitespace"]
    assert cm.names[cm.ids[63]] == "other"


def test_tokenizer_is_read_from_the_token_cache(fake_tokens):
    (fake_tokens.directory / "meta.json").write_text(
        json.dumps({"key": "v1|bundled:abc:None|gpt2|8192"})
    )
    assert tokenizer_for(fake_tokens).name == "gpt2"
    assert category_map("lexicon", fake_tokens).ids.shape == (64,)

"""The synthetic controlled-factor corpus (tense, sentiment, topic, number): deterministic,
balanced, realising its factors, and fully inside the tiny preset's vocabulary."""

from __future__ import annotations

import numpy as np

from tti_ray.data.factors import (
    FACTOR_VALUES,
    FACTORS,
    encode_corpus,
    factor_corpus,
    model_id_map,
    vocabulary,
)


def test_factor_corpus_is_deterministic_and_balanced():
    a, b = factor_corpus(8, seed=3), factor_corpus(8, seed=3)
    assert a.texts == b.texts and np.array_equal(a.labels, b.labels)
    assert factor_corpus(8, seed=4).texts != a.texts
    assert len(a) == 8 * 32 and a.labels.shape == (256, len(FACTORS))
    for k, name in enumerate(FACTORS):
        counts = np.bincount(a.labels[:, k], minlength=len(FACTOR_VALUES[name]))
        assert (counts == len(a) // len(FACTOR_VALUES[name])).all(), name
    cells = {tuple(r) for r in a.labels.tolist()}
    assert len(cells) == 32
    assert len(set(a.texts)) > 0.8 * len(a)  # nuisance words vary within a cell


def test_factor_corpus_sentences_realise_their_factors():
    c = factor_corpus(4, seed=0)
    for text, lab in zip(c.texts, c.labels, strict=True):
        words = text.rstrip(".").split()
        tense, number = FACTOR_VALUES["tense"][lab[0]], FACTOR_VALUES["number"][lab[3]]
        be = {"is", "are", "was", "were"} & set(words)
        if be:  # templates with a copula
            assert be == {{("present", "singular"): "is", ("present", "plural"): "are",
                           ("past", "singular"): "was", ("past", "plural"): "were"}[
                               (tense, number)]}, text
        assert words[0] == "The", text


def test_factor_corpus_has_no_unk_under_the_tiny_vocabulary():
    from tti_ray.config import load_config
    from tti_ray.data import TextTokenizer, load_tokens

    data = load_config(raw={"preset": "tiny"}).data
    tokens, tok = load_tokens(data), TextTokenizer(data)
    assert tokens.vocab_size == 8192
    enc = encode_corpus(factor_corpus(32), tokens, tok, max_len=128)
    assert enc.n_unk == 0 and enc.n_truncated == 0
    assert enc.ids.shape[0] == 1024 and (enc.ids[:, 0] == tokens.eot_id).all()
    assert (enc.mask.sum(1) >= 5).all() and not enc.mask[:, 0].any()
    # word by word too, so a template added later cannot hide an UNK behind an unused branch
    lut, unk = model_id_map(tokens.keep_ids, tok.size)
    pieces = tok.encode_batch([" " + w for w in vocabulary()] + ["The"])
    assert all(lut[i] != unk for ids in pieces for i in ids)


def test_encode_corpus_counts_unk_and_truncates(tmp_path):
    from tti_ray.data.tokens import TokenData
    from tti_ray.interventions.categories import tokenizer_for

    keep = np.asarray([*range(100), -1])  # tokenizer ids 0..99, then UNK
    z = np.zeros(4, np.uint16)
    tokens = TokenData(z, z, 101, 100, keep, tmp_path)
    enc = encode_corpus(factor_corpus(1), tokens, tokenizer_for(tokens), max_len=6)
    assert enc.n_unk > 0 and enc.n_truncated == 32 and enc.ids.shape == (32, 6)

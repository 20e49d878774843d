"""Token cache (tokenize once, memory-map), vocabulary remap, disjoint train/valid."""

from __future__ import annotations

import numpy as np
import pytest

import tti_ray.data.tokens as tokens_mod
from tti_ray.config import DataConfig
from tti_ray.data import TextTokenizer, load_tokens, stories


@pytest.fixture
def small_cfg(tmp_path) -> DataConfig:
    """GPT-2's BPE remapped to 64 ids, 200 training stories (full validation split), into a
    private cache dir."""
    return DataConfig(
        tokenizer="gpt2", max_train_stories=200, vocab_size=64, cache_dir=str(tmp_path / "cache")
    )


def test_second_load_is_memory_mapped_and_does_no_tokenization(small_cfg, monkeypatch):
    first = load_tokens(small_cfg)
    files = sorted(first.directory.iterdir())
    assert {f.name for f in files} == {"meta.json", "train.bin", "valid.bin"}
    mtimes = {f: f.stat().st_mtime_ns for f in files}

    def boom(*_a, **_k):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(tokens_mod, "_build_cache", boom)
    monkeypatch.setattr(tokens_mod, "TextTokenizer", boom)
    second = load_tokens(small_cfg)
    assert isinstance(second.train, np.memmap) and isinstance(second.valid, np.memmap)
    assert second.train.mode == "r" and second.valid.mode == "r"
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes
    assert np.array_equal(second.train, first.train) and np.array_equal(second.valid, first.valid)
    # the token files are exactly the streams (no header, no copy in RAM)
    assert str(second.train.filename) == str(first.directory / "train.bin")
    assert (first.directory / "train.bin").stat().st_size == second.train.nbytes


def test_cache_key_depends_on_source_and_vocab(small_cfg, monkeypatch):
    built = []

    class Stop(Exception):
        pass

    def record(_cfg, d, _key):
        built.append(d)
        raise Stop

    monkeypatch.setattr(tokens_mod, "_build_cache", record)
    variants = [
        small_cfg,
        small_cfg.model_copy(update={"vocab_size": 80}),
        small_cfg.model_copy(update={"max_train_stories": 100}),
        small_cfg.model_copy(update={"tokenizer": "hf:gpt2"}),
        small_cfg,
    ]
    for cfg in variants:
        with pytest.raises(Stop):
            load_tokens(cfg)
    assert len(set(built)) == 4 and built[0] == built[-1]
    assert {d.parent for d in built} == {tokens_mod.cache_root(small_cfg) / "tokens"}


def test_cache_dir_defaults_to_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TTI_RAY_CACHE", str(tmp_path / "env"))
    assert tokens_mod.cache_root(DataConfig()) == tmp_path / "env"
    monkeypatch.delenv("TTI_RAY_CACHE")
    assert str(tokens_mod.cache_root(DataConfig())).endswith(".cache/tti_ray")


def test_vocab_remap_size_unk_eot(small_cfg):
    td = load_tokens(small_cfg)
    v = small_cfg.vocab_size
    assert td.vocab_size == v and td.keep_ids.shape == (v,)
    assert td.eot_id == v - 1 and td.keep_ids[-1] == -1  # UNK slot doubles as end-of-text
    assert td.train.dtype == np.uint16
    for stream in (td.train, td.valid):
        assert int(stream.max()) < v

    # recompute from scratch: the kept ids are the v-1 most frequent training ids (ties by id),
    # EOT excluded, and every other id maps to UNK
    tok = TextTokenizer(small_cfg)
    docs = tok.encode_batch(stories(small_cfg, "train"))
    raw = np.asarray([i for d in docs for i in (*d, tok.eot_id)])
    counts = np.bincount(raw, minlength=tok.size)
    counts[tok.eot_id] = -1
    expect = sorted(range(tok.size), key=lambda i: (-counts[i], i))[: v - 1]
    assert td.keep_ids[:-1].tolist() == expect
    lut = np.full(tok.size, v - 1)
    lut[expect] = np.arange(v - 1)
    assert np.array_equal(np.asarray(td.train), lut[raw])
    # each story ends with EOT, and UNK also covers out-of-vocabulary ids
    assert int((np.asarray(td.train) == td.eot_id).sum()) > len(docs)

    # decoding goes back through the tokenizer; UNK shows as <unk>
    assert td.decode([0, v - 1], tok)[1] == "<unk>"
    assert td.decode([0], tok)[0] == tok.decode_ids([expect[0]])[0]


def test_full_vocabulary_is_identity(small_cfg):
    td = load_tokens(small_cfg.model_copy(update={"vocab_size": None, "max_train_stories": 20}))
    assert td.vocab_size == 50257 and td.eot_id == 50256
    assert np.array_equal(td.keep_ids, np.arange(50257))
    tok = TextTokenizer("gpt2")
    first = stories(DataConfig(), "train")[0]
    ids = tok.encode_batch([first])[0]
    assert np.asarray(td.train[: len(ids) + 1]).tolist() == [*ids, 50256]


def test_bundled_train_and_valid_stories_are_disjoint():
    cfg = DataConfig()
    train, valid = stories(cfg, "train"), stories(cfg, "valid")
    assert len(train) > 1000 and len(valid) > 100
    assert not set(train) & set(valid)
    assert stories(cfg.model_copy(update={"max_train_stories": 5}), "train") == train[:5]


def test_bundled_bpe_is_rebuilt_bit_for_bit_from_the_train_split():
    from tti_ray.data.text_tokenizer import BPE_FILE, train_tinystories_bpe

    assert train_tinystories_bpe() == BPE_FILE.read_text(encoding="utf-8")


def test_bundled_bpe_default_is_lossless_with_eot_last_and_no_remap(tmp_path):
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"))  # the tiny preset's tokenizer and size
    assert cfg.tokenizer == "tinystories-bpe" and cfg.vocab_size == 8192
    tok = TextTokenizer(cfg)
    assert tok.size == 8192 and tok.eot_id == 8191
    td = load_tokens(cfg)
    assert td.vocab_size == 8192 and td.eot_id == 8191
    assert np.array_equal(td.keep_ids, np.arange(8192))  # the model's ids are the tokenizer's
    valid = stories(cfg, "valid")
    enc = tok.encode_batch(valid)
    assert np.asarray(td.valid).tolist() == [i for ids in enc for i in (*ids, 8191)]
    # byte-level: every validation story decodes back exactly (no UNK, unlike the GPT-2 remap)
    decoded = ["".join(tok.decode_ids(ids)) for ids in enc[:50]]
    assert decoded == valid[:50]
    assert tok._tok.decode(enc[-1]) == valid[-1]
    assert 8191 not in {i for ids in enc for i in ids}

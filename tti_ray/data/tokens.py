"""Tokenize once, cache as memory-mapped token arrays.

* Text: the bundled TinyStories sample (``assets/tinystories``, offline default) or any HF dataset
  via ``datasets.load_dataset`` (``data.source: hf``).
* Tokenizer (:mod:`tti_ray.data.text_tokenizer`): the bundled TinyStories byte-level BPE
  (``tinystories-bpe``, 8,192 ids, the tiny preset's), OpenAI's GPT-2 BPE (``gpt2``, the seed
  experiments' and the paper preset's), both offline, or ``hf:<name>`` via
  ``transformers.AutoTokenizer``.
* Vocabulary remap (``data.vocab_size`` smaller than the tokenizer's): the tokenizer ids are
  mapped to the ``vocab_size - 1`` most frequent ids of the training split (ties broken by id)
  plus one UNK id (``vocab_size - 1``, also used as end-of-text). ``keep_ids[new_id]`` is the
  tokenizer id (``-1`` for UNK). A ``vocab_size`` at least the tokenizer's keeps its ids.

Stories are joined into one stream with an end-of-text token after each. The streams are written
once to ``<cache>/tokens/<key>/{train,valid}.bin`` (uint16/uint32) with ``meta.json`` and read back
with ``np.memmap``, so a second run does no tokenization and RAM does not grow with corpus size.
The cache key hashes the text source, tokenizer (and the bundled BPE's file) and vocab size.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tti_ray.config.schema import DataConfig
from tti_ray.data.text_tokenizer import (
    ASSETS,
    TINYSTORIES_BPE,
    DataError,
    TextTokenizer,
    bpe_file_hash,
    bundled_stories,
    cached_tokenizer,
    hf_tokenizer_files,
)
from tti_ray.io import atomic_write_text

CACHE_VERSION = 1


def cache_root(cfg: DataConfig) -> Path:
    root = cfg.cache_dir or os.environ.get("TTI_RAY_CACHE") or Path.home() / ".cache" / "tti_ray"
    return Path(root).expanduser()


# -- text -----------------------------------------------------------------------------------------
def _hf_dataset(cfg: DataConfig, split: str) -> Any:
    try:
        from datasets import load_dataset

        name = cfg.hf_train_split if split == "train" else cfg.hf_valid_split
        ds = load_dataset(cfg.hf_dataset, split=name)
    except Exception as e:  # noqa: BLE001 - hub/network errors come in many types
        raise DataError(
            f"data.hf_dataset: cannot load {cfg.hf_dataset!r} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}); offline, use data.source=bundled"
        ) from None
    if cfg.hf_text_field not in ds.column_names:
        raise DataError(f"data.hf_text_field: {cfg.hf_text_field!r} not in {ds.column_names}")
    return ds


def story_batches(cfg: DataConfig, split: str, batch: int = 2048) -> Iterator[list[str]]:
    """The split's stories in batches (an HF dataset is read batch by batch from its memory-
    mapped Arrow files, never as one list)."""
    limit = cfg.max_train_stories if split == "train" else None
    if cfg.source == "bundled":
        docs = bundled_stories(split)[:limit]
        for i in range(0, len(docs), batch):
            yield docs[i : i + batch]
        return
    ds = _hf_dataset(cfg, split)
    n = len(ds) if limit is None else min(limit, len(ds))
    for i in range(0, n, batch):
        texts = ds.select(range(i, min(i + batch, n)))[cfg.hf_text_field]
        yield [t for t in texts if t and t.strip()]


def stories(cfg: DataConfig, split: str) -> list[str]:
    """All stories of a split as a list (small corpora, tests, displays)."""
    return [t for b in story_batches(cfg, split) for t in b]


def _source_key(cfg: DataConfig) -> str:
    if cfg.source == "bundled":
        h = hashlib.sha256()
        for f in sorted((ASSETS / "tinystories").glob("*.gz")):
            h.update(f.read_bytes())
        return f"bundled:{h.hexdigest()[:16]}:{cfg.max_train_stories}"
    return (
        f"hf:{cfg.hf_dataset}:{cfg.hf_text_field}:{cfg.hf_train_split}:{cfg.hf_valid_split}:"
        f"{cfg.max_train_stories}"
    )


# -- token arrays ---------------------------------------------------------------------------------
@dataclass
class TokenData:
    """Memory-mapped token streams (model ids) and the id maps."""

    train: np.ndarray  # [L_train] model ids
    valid: np.ndarray  # [L_valid]
    vocab_size: int  # model vocabulary
    eot_id: int  # model id of end-of-text
    keep_ids: np.ndarray  # [vocab_size] tokenizer id of each model id (-1 = UNK)
    directory: Path

    @classmethod
    def synthetic(cls, vocab: int, n_train: int, n_valid: int, seed: int = 0) -> TokenData:
        """Uniform random token streams (no tokenizer, identity id map): for tests and
        benchmarks that need the shape of the data, not its content."""
        rng = np.random.default_rng(seed)
        dtype = np.uint16 if vocab <= 2**16 else np.uint32
        return cls(
            train=rng.integers(0, vocab, n_train).astype(dtype),
            valid=rng.integers(0, vocab, n_valid).astype(dtype),
            vocab_size=vocab,
            eot_id=vocab - 1,
            keep_ids=np.arange(vocab),
            directory=Path("."),
        )

    def decode(self, model_ids: list[int], tokenizer: TextTokenizer) -> list[str]:
        tok = [int(self.keep_ids[i]) for i in model_ids]
        texts = tokenizer.decode_ids([t if t >= 0 else tokenizer.eot_id for t in tok])
        return [t if k >= 0 else "<unk>" for t, k in zip(texts, tok, strict=True)]


TOKEN_MAP = "token_map.json"  # a checkpoint's model-id map (not HF's ``vocab.json``)


def save_tokenizer(
    directory: Path, cfg: DataConfig, tokens: TokenData, model_max_length: int | None = None
) -> str | None:
    """Write the run's tokenizer (``tokenizer.json`` + ``tokenizer_config.json``, HF's layout) and
    ``token_map.json`` (end-of-text id, ``keep_ids``) into ``directory``.

    The tokenizer is saved only where its ids are the model's ids (no remap); otherwise the reason
    is returned (and written to ``token_map.json``), and ``AutoTokenizer`` finds nothing."""
    keep = np.asarray(tokens.keep_ids)
    size = cached_tokenizer(cfg.tokenizer).size
    reason = None
    if size != tokens.vocab_size or not np.array_equal(keep, np.arange(size)):
        reason = (
            f"the model's {tokens.vocab_size} ids are a remap of {cfg.tokenizer!r}'s {size} "
            f"(data.vocab_size={cfg.vocab_size}: most frequent ids + UNK), which no HF tokenizer "
            "can express"
        )
    else:
        for name, data in hf_tokenizer_files(cfg.tokenizer, model_max_length).items():
            (Path(directory) / name).write_bytes(data)
    meta = {
        "tokenizer": cfg.tokenizer,
        "eot_id": tokens.eot_id,
        "keep_ids": keep.tolist(),
        "hf_tokenizer": reason is None,
        **({"no_hf_tokenizer_because": reason} if reason else {}),
    }
    (Path(directory) / TOKEN_MAP).write_text(json.dumps(meta))
    return reason


def _remap_from_counts(counts: np.ndarray, eot: int, size: int, vocab: int | None) -> np.ndarray:
    """keep_ids for the ``vocab - 1`` most frequent training ids (+ UNK), or identity."""
    if vocab is None or vocab >= size:
        return np.arange(size, dtype=np.int64)
    counts = counts.copy()
    counts[eot] = -1  # end-of-text maps to the UNK/EOT slot, not a regular slot
    order = np.lexsort((np.arange(size), -counts))  # by count desc, then id
    return np.concatenate([order[: vocab - 1], [-1]]).astype(np.int64)


def load_tokens(cfg: DataConfig) -> TokenData:
    """Tokenize (first time only) and memory-map the train/valid token streams."""
    key_src = f"v{CACHE_VERSION}|{_source_key(cfg)}|{cfg.tokenizer}|{cfg.vocab_size}"
    if cfg.tokenizer == TINYSTORIES_BPE:  # a rebuilt tokenizer file must not reuse old tokens
        key_src += f"|{bpe_file_hash()}"
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    d = cache_root(cfg) / "tokens" / key
    meta_path = d / "meta.json"
    if not meta_path.exists():
        _build_cache(cfg, d, key_src)
    meta = json.loads(meta_path.read_text())
    dtype = np.dtype(meta["dtype"])
    return TokenData(
        train=np.memmap(d / "train.bin", dtype=dtype, mode="r"),
        valid=np.memmap(d / "valid.bin", dtype=dtype, mode="r"),
        vocab_size=meta["vocab_size"],
        eot_id=meta["eot_id"],
        keep_ids=np.asarray(meta["keep_ids"], dtype=np.int64),
        directory=d,
    )


def _build_cache(cfg: DataConfig, d: Path, key_src: str) -> None:
    """Two streaming passes, so memory stays bounded by one batch of stories: (1) encode batch by
    batch to a raw uint32 file per split while counting training-id frequencies; (2) remap the
    raw ids chunk by chunk into the final file."""
    tok = TextTokenizer(cfg)
    d.mkdir(parents=True, exist_ok=True)
    counts = np.zeros(tok.size, dtype=np.int64)
    sizes = {}
    for split in ("train", "valid"):
        n = 0
        with tempfile.NamedTemporaryFile(dir=d, suffix=f".{split}.raw", delete=False) as f:
            for texts in story_batches(cfg, split):
                ids = [i for doc in tok.encode_batch(texts) for i in (*doc, tok.eot_id)]
                arr = np.asarray(ids, dtype=np.uint32)
                if split == "train":
                    counts += np.bincount(arr, minlength=tok.size)[: tok.size]
                arr.tofile(f)
                n += arr.size
        os.replace(f.name, d / f"{split}.raw")
        sizes[split] = n
    keep = _remap_from_counts(counts, tok.eot_id, tok.size, cfg.vocab_size)
    vocab = len(keep)
    if vocab == tok.size:
        lut, eot_new = np.arange(tok.size), tok.eot_id
    else:
        lut = np.full(tok.size, vocab - 1, dtype=np.int64)
        lut[keep[:-1]] = np.arange(vocab - 1)
        eot_new = vocab - 1
    dtype = np.uint16 if vocab <= 2**16 else np.uint32
    for split in ("train", "valid"):
        raw = np.memmap(d / f"{split}.raw", dtype=np.uint32, mode="r") if sizes[split] else \
            np.zeros(0, np.uint32)
        with tempfile.NamedTemporaryFile(dir=d, delete=False) as f:
            for i in range(0, len(raw), 1 << 22):
                lut[raw[i : i + (1 << 22)]].astype(dtype).tofile(f)
        os.replace(f.name, d / f"{split}.bin")
        del raw
        (d / f"{split}.raw").unlink()
    meta = {
        "key": key_src,
        "tokenizer": cfg.tokenizer,
        "dtype": np.dtype(dtype).name,
        "vocab_size": vocab,
        "eot_id": int(eot_new),
        "tokenizer_size": tok.size,
        "keep_ids": keep.tolist(),
        "n_train": sizes["train"],
        "n_valid": sizes["valid"],
    }
    atomic_write_text(d / "meta.json", json.dumps(meta))
